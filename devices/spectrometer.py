"""Spectrometer sources: a base for hardware drivers, the paper's simulator, and file replay.

    FrameSource                      (devices.frames: open / read / close lifecycle)
    └── SpectrometerAdapter          base a real instrument driver subclasses
        ├── SpectrometerSimulator    simulated spectra (devices.spectra_sim), paced at rate_hz
        └── SpectrumReplay           a CSV / NPY file, one spectrum per row, paced at rate_hz

Every frame is one spectrum: ``Frame.data`` is 1-D ``(L,)`` (float32 unless configured
otherwise), ``Frame.t_ns`` its capture time (Unix epoch ns), ``Frame.fs`` is ``None``.

A driver for a real instrument subclasses :class:`SpectrometerAdapter` and implements
``_open()`` (connect, configure integration time...), ``_read(timeout_s)`` (wait at most
``timeout_s`` seconds for the next spectrum; return ``None`` on timeout, raise
:class:`~devices.frames.EndOfStream` when the instrument is gone for good) and ``_close()``;
the base does the lifecycle (``open`` once, ``close`` safe twice, context manager) and checks
that every frame is a 1-D spectrum. Simulated and replayed sources pace themselves by
absolute deadlines (:class:`~devices.frames.Pacer`), so ``k`` spectra take ``k / rate_hz``
seconds however long each takes to make, and their capture times are exactly
``1 / rate_hz`` apart.

Pure numpy (and scipy through the simulator); no torch, no :mod:`stream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.files import MAX_FILE_BYTES, check_file, load_npy, open_table
from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, Pacer, SourceFileError
from devices.spectra_sim import SpectrumSimConfig, simulate

__all__ = [
    "SpectrometerAdapter",
    "SpectrometerSimConfig",
    "SpectrometerSimulator",
    "SpectrumReplay",
    "SpectrumReplayConfig",
    "load_spectra",
]

_NUMERIC_KINDS = "iuf"
_CHECK_ROWS = 4096  # spectra of a memory-mapped file checked for NaN/inf at a time


class SpectrometerAdapter(FrameSource):
    """Base of every spectrometer source; see the module docstring for what to implement.

    :attr:`length` is the number of samples per spectrum once known (after ``open()`` for
    most sources), else ``None``.
    """

    length: int | None = None

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next spectrum (``Frame.data`` 1-D), ``None`` after ``timeout_s`` s without one.

        Raises :class:`~devices.frames.EndOfStream` when the source is exhausted.
        """
        frame = super().read(timeout_s)
        if frame is not None and np.ndim(frame.data) != 1:
            raise DeviceError(
                f"{type(self).__name__} produced a frame of shape {np.shape(frame.data)}; "
                "a spectrum is 1-D (samples,)"
            )
        return frame


# ---------------------------------------------------------------------------------------------
# Simulator


@dataclass(frozen=True, kw_only=True)
class SpectrometerSimConfig:
    """A simulated instrument.

    ``rate_hz``: spectra per second. ``length``: samples per spectrum. ``seed`` and
    ``instrument``: the random stream is ``default_rng([seed, instrument])``, so instruments of
    one seed differ and each is reproducible. ``batch``: spectra simulated per call (speed; the
    sequence depends on it). ``count``: stop after this many spectra (``None``: never).
    ``spectra``: simulator settings (``None``: the paper's defaults at ``length``); its
    ``length`` must equal ``length``.
    """

    rate_hz: float = 10.0
    length: int = 512
    seed: int = 0
    instrument: int = 0
    batch: int = 16
    count: int | None = None
    spectra: SpectrumSimConfig | None = None

    def __post_init__(self) -> None:
        if not (self.rate_hz > 0 and np.isfinite(self.rate_hz)):
            raise ValueError(f"rate_hz must be a positive finite number, got {self.rate_hz!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0 or None, got {self.count}")
        if self.seed < 0 or self.instrument < 0:
            raise ValueError("seed and instrument must be >= 0")
        if self.spectra is not None and self.spectra.length != self.length:
            raise ValueError(
                f"spectra.length ({self.spectra.length}) differs from length ({self.length})"
            )
        if self.spectra is None:
            SpectrumSimConfig(length=self.length)  # validates length early, no I/O


class SpectrometerSimulator(SpectrometerAdapter):
    """Simulated spectrometer (PAPERS.md §1 generator), paced at ``config.rate_hz``.

    Deterministic: the same config gives the same spectra. Spectra are simulated
    ``config.batch`` at a time, before the deadline of the first one, so making them does not
    delay delivery. ``Frame.data``: (length,) float32 in [0, 1].
    """

    def __init__(self, config: SpectrometerSimConfig) -> None:
        super().__init__()
        self.config = config
        self.length = config.length
        self._sim = config.spectra or SpectrumSimConfig(length=config.length)
        self._pacer = Pacer(config.rate_hz)
        self._rng: np.random.Generator | None = None
        self._buffer = np.empty((0, config.length), np.float32)
        self._next = 0

    def _open(self) -> None:
        self._rng = np.random.default_rng([self.config.seed, self.config.instrument])
        self._pacer.start()

    @property
    def next_due_ns(self) -> int | None:
        if not self.is_open or self._exhausted():
            return None
        return self._pacer.deadline_ns(self.frames_read)

    def _exhausted(self) -> bool:
        return self.config.count is not None and self.frames_read >= self.config.count

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self._exhausted():
            raise EndOfStream
        if self._next >= len(self._buffer):
            assert self._rng is not None
            self._buffer = simulate(self.config.batch, config=self._sim, rng=self._rng).spectra
            self._next = 0
        k = self.frames_read
        if not self._pacer.wait(k, timeout_s):
            return None
        spectrum = self._buffer[self._next]
        self._next += 1
        return Frame(t_ns=self._pacer.capture_ns(k), data=spectrum)


# ---------------------------------------------------------------------------------------------
# File replay


def load_spectra(
    path: str | Path,
    *,
    skip_rows: int = 0,
    delimiter: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> np.ndarray:
    """Read a file of spectra, one per row: ``.npy`` (2-D numeric array, never pickled) or
    text (``.csv``, ``.tsv``, ``.txt``).

    Text: values separated by ``delimiter`` (default: ``,`` if the first row has one, else
    whitespace); blank lines and lines starting with ``#`` are ignored; the first
    ``skip_rows`` rows are skipped, and so is a first row that is not all numbers (a header).
    Returns a float64 (text) or the file's numeric dtype (NPY, memory-mapped read-only: rows
    are read from the file as they are used) array of shape (spectra, samples).

    Bounds (:mod:`devices.files`): the file may hold at most ``max_bytes`` (default
    :data:`~devices.files.MAX_FILE_BYTES`) and a text line 64 Ki characters; text is parsed a
    batch of lines at a time.

    Raises ``FileNotFoundError`` for a missing file and :class:`SourceFileError` for a
    directory or a file that is over the cap, corrupt, ragged, empty, not 2-D, not numeric or
    holds NaN/inf.
    """
    path = Path(path)
    check_file(path, max_bytes=max_bytes, what="a spectrum file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        spectra = load_npy(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        spectra = open_table(path, max_bytes=max_bytes, skip_rows=skip_rows,
                             delimiter=delimiter, what="spectra").read()
    else:
        raise SourceFileError(f"{path}: unsupported file type {suffix!r} (use .npy or .csv)")
    if spectra.ndim != 2:
        raise SourceFileError(
            f"{path}: expected a 2-D array (spectra, samples), got shape {spectra.shape}"
        )
    if spectra.shape[0] == 0 or spectra.shape[1] == 0:
        raise SourceFileError(f"{path}: no spectra (shape {spectra.shape})")
    if spectra.dtype.kind == "f":
        for start in range(0, spectra.shape[0], _CHECK_ROWS):
            finite = np.isfinite(spectra[start : start + _CHECK_ROWS]).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise SourceFileError(f"{path}: spectrum {row} holds NaN or inf values")
    return spectra


@dataclass(frozen=True, kw_only=True)
class SpectrumReplayConfig:
    """Replay of a file of spectra (see :func:`load_spectra` for formats).

    ``rate_hz``: spectra per second. ``count``: stop after this many (``None``: at the end of
    the file, or never with ``loop``). ``loop``: start again at the first row after the last.
    ``skip_rows``/``delimiter``: text files only. ``dtype``: numpy dtype of ``Frame.data``.
    ``max_bytes``: the cap on the file's size (see :func:`load_spectra`).
    """

    path: Path
    rate_hz: float = 10.0
    count: int | None = None
    loop: bool = False
    skip_rows: int = 0
    delimiter: str | None = None
    dtype: str = "float32"
    max_bytes: int = MAX_FILE_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if not (self.rate_hz > 0 and np.isfinite(self.rate_hz)):
            raise ValueError(f"rate_hz must be a positive finite number, got {self.rate_hz!r}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0 or None, got {self.count}")
        if self.skip_rows < 0:
            raise ValueError(f"skip_rows must be >= 0, got {self.skip_rows}")
        if np.dtype(self.dtype).kind not in _NUMERIC_KINDS:
            raise ValueError(f"dtype must be a real number type, got {self.dtype!r}")


class SpectrumReplay(SpectrometerAdapter):
    """Replays a recorded run, one spectrum per row, paced at ``config.rate_hz``.

    The file is checked by ``open()`` (``FileNotFoundError`` / :class:`SourceFileError`
    there); a text file is parsed there, a ``.npy`` file stays memory-mapped and each row is
    read when it is sent. Capture times are replay times: a file carries no clock.
    ``Frame.data``: (samples,) of ``config.dtype``. :attr:`rows` is the number of spectra in
    the file once open.
    """

    def __init__(self, config: SpectrumReplayConfig) -> None:
        super().__init__()
        self.config = config
        self._pacer = Pacer(config.rate_hz)
        self._spectra: np.ndarray | None = None
        self.rows: int | None = None

    def _open(self) -> None:
        spectra = load_spectra(
            self.config.path, skip_rows=self.config.skip_rows, delimiter=self.config.delimiter,
            max_bytes=self.config.max_bytes,
        )
        if not isinstance(spectra, np.memmap):  # parsed text: hold it in the frames' dtype
            spectra = np.ascontiguousarray(spectra, dtype=self.config.dtype)
        self._spectra = spectra
        self.rows, self.length = self._spectra.shape
        self._pacer.start()

    def _close(self) -> None:
        self._spectra = None

    def _exhausted(self) -> bool:
        k, cfg = self.frames_read, self.config
        return (cfg.count is not None and k >= cfg.count) or (
            not cfg.loop and self.rows is not None and k >= self.rows
        )

    @property
    def next_due_ns(self) -> int | None:
        if not self.is_open or self._exhausted():
            return None
        return self._pacer.deadline_ns(self.frames_read)

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self._exhausted():
            raise EndOfStream
        assert self._spectra is not None and self.rows is not None
        k = self.frames_read
        if not self._pacer.wait(k, timeout_s):
            return None
        row = np.ascontiguousarray(self._spectra[k % self.rows], dtype=self.config.dtype)
        return Frame(t_ns=self._pacer.capture_ns(k), data=row)
