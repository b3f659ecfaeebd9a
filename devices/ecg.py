"""ECG sources: a base for wearable drivers, the cohort simulator and file replay.

    FrameSource                      (devices.frames: open / read / close lifecycle)
    └── EcgAdapter                   base a real wearable driver subclasses
        ├── EcgSimulatorSource       one simulated wearable (devices.ecg_sim), paced chunks
        └── EcgReplay                an ECG file (WFDB / CSV / NPY / OpenSignals) at its rate

Every frame is one chunk of one lead: ``Frame.data`` is float32 ``(n,)`` in mV, ``Frame.fs``
the sample rate (Hz) and ``Frame.t_ns`` the capture time of the chunk's first sample (Unix
epoch ns). Simulated and replayed sources run on an exact sample clock: chunk ``k`` starts at
sample ``k * chunk_samples`` and its ``t_ns`` is ``t0 + round(k * chunk_samples * 1e9 / fs)``;
they pace themselves by absolute deadlines (:class:`~devices.frames.Pacer`), so ``k`` chunks
take ``k * chunk_samples / fs`` seconds however long each takes to make.

A driver for a real wearable subclasses :class:`EcgAdapter`, sets :attr:`EcgAdapter.fs_hz`
by ``open()`` and implements ``_open()``, ``_read(timeout_s)`` (at most ``timeout_s`` s of
waiting; ``None`` on timeout; :class:`~devices.frames.EndOfStream` when the device is gone for
good) and ``_close()``; the base checks that every frame is a 1-D chunk with ``fs`` set.

Files are read by :mod:`devices.ecg_files`; the real recordings that ship inside PyPI packages
are listed in :mod:`devices.ecg_recordings`.

Pure numpy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.ecg_cohort import cohort_subject
from devices.ecg_files import EcgFormat, load_ecg
from devices.ecg_sim import EcgSimulator
from devices.files import MAX_FILE_BYTES
from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, Pacer

__all__ = [
    "EcgAdapter",
    "EcgReplay",
    "EcgReplayConfig",
    "EcgSimulatorConfig",
    "EcgSimulatorSource",
]


class EcgAdapter(FrameSource):
    """Base of every ECG source; see the module docstring for what to implement.

    :attr:`fs_hz` is the sample rate (Hz) once known (after ``open()`` for file sources).
    """

    fs_hz: float | None = None

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next chunk (``Frame.data`` float32 (n,) mV, ``Frame.fs`` Hz), ``None`` after
        ``timeout_s`` s without one. Raises :class:`~devices.frames.EndOfStream` at the end."""
        frame = super().read(timeout_s)
        if frame is not None and (np.ndim(frame.data) != 1 or frame.fs is None):
            raise DeviceError(
                f"{type(self).__name__} produced a frame of shape {np.shape(frame.data)} with "
                f"fs={frame.fs}; an ECG chunk is 1-D (samples,) with fs set"
            )
        return frame


def _chunk_samples(chunk_ms: float, fs_hz: float) -> int:
    if not (chunk_ms > 0 and math.isfinite(chunk_ms)):
        raise ValueError(f"chunk_ms must be a positive finite number, got {chunk_ms!r}")
    return max(1, round(chunk_ms * fs_hz / 1000.0))


class _ClockedEcgSource(EcgAdapter):
    """Chunks of ``chunk_samples`` on an exact sample clock, paced by a :class:`Pacer`.

    Like a real wearable, a chunk is handed out once its last sample has been captured: chunk
    ``k`` (first sample captured at ``t0 + k * chunk / fs``) is due one chunk later."""

    def __init__(self) -> None:
        super().__init__()
        self.chunk_samples = 0
        self._pacer: Pacer | None = None
        self._t0_ns = 0
        self._total: int | None = None  # samples the source delivers in all; None: endless

    def _start_clock(self, fs_hz: float, chunk_samples: int, total: int | None) -> None:
        self.fs_hz, self.chunk_samples, self._total = fs_hz, chunk_samples, total
        self._pacer = Pacer(fs_hz / chunk_samples)
        self._pacer.start()
        self._t0_ns = self._pacer.capture_ns(0)

    def _exhausted(self) -> bool:
        return self._total is not None and self.frames_read * self.chunk_samples >= self._total

    @property
    def next_due_ns(self) -> int | None:
        if not self.is_open or self._exhausted() or self._pacer is None:
            return None
        return self._pacer.deadline_ns(self.frames_read + 1)

    def _samples(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self._exhausted():
            raise EndOfStream
        assert self._pacer is not None and self.fs_hz is not None
        k = self.frames_read
        if not self._pacer.wait(k + 1, timeout_s):
            return None
        start = k * self.chunk_samples
        stop = start + self.chunk_samples
        if self._total is not None:
            stop = min(stop, self._total)
        t_ns = self._t0_ns + round(start * 1e9 / self.fs_hz)
        return Frame(t_ns=t_ns, data=self._samples(start, stop), fs=self.fs_hz)


@dataclass(frozen=True, kw_only=True)
class EcgSimulatorConfig:
    """One simulated wearable: person ``subject`` of cohort ``seed``, in ``session``.

    ``fs_hz``: sample rate (Hz). ``chunk_ms``: milliseconds per frame (rounded to whole
    samples, at least one). ``snr_db``: rescale the noise mix to this SNR (``None``: the
    session's own noise). ``duration_s``: stop after this many seconds (``None``: never).
    """

    subject: int = 0
    session: int = 0
    fs_hz: float = 250.0
    chunk_ms: float = 250.0
    seed: int = 0
    snr_db: float | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.subject < 0 or self.session < 0 or self.seed < 0:
            raise ValueError("subject, session and seed must be >= 0")
        if not (math.isfinite(self.fs_hz) and 50.0 <= self.fs_hz <= 10_000.0):
            raise ValueError(f"fs_hz must be in 50..10000, got {self.fs_hz!r}")
        _chunk_samples(self.chunk_ms, self.fs_hz)
        if self.duration_s is not None and not (
            self.duration_s >= 0 and math.isfinite(self.duration_s)
        ):
            raise ValueError(f"duration_s must be >= 0 or None, got {self.duration_s!r}")
        if self.snr_db is not None and (math.isnan(self.snr_db) or self.snr_db == -math.inf):
            raise ValueError(f"snr_db must be a number or +inf, got {self.snr_db}")

    @property
    def chunk_samples(self) -> int:
        return _chunk_samples(self.chunk_ms, self.fs_hz)


class EcgSimulatorSource(_ClockedEcgSource):
    """A simulated wearable (devices.ecg_sim), paced at ``fs_hz / chunk_samples`` frames/s.

    Deterministic: the samples equal ``simulate_record`` of the same subject, session and
    rate. ``Frame.data``: float32 (chunk_samples,) mV (the last chunk shorter when
    ``duration_s`` does not fill it). :meth:`r_peaks` gives the true R peaks.
    """

    def __init__(self, config: EcgSimulatorConfig) -> None:
        super().__init__()
        self.config = config
        self.fs_hz = float(config.fs_hz)
        self.chunk_samples = config.chunk_samples
        self._sim: EcgSimulator | None = None

    def _open(self) -> None:
        cfg = self.config
        self._sim = EcgSimulator(
            cohort_subject(cfg.subject, seed=cfg.seed),
            cfg.session,
            fs_hz=cfg.fs_hz,
            snr_db=cfg.snr_db,
        )
        total = None if cfg.duration_s is None else round(cfg.duration_s * cfg.fs_hz)
        self._start_clock(float(cfg.fs_hz), cfg.chunk_samples, total)

    def _close(self) -> None:
        self._sim = None

    def _samples(self, start: int, stop: int) -> np.ndarray:
        assert self._sim is not None and self._sim.position == start
        return self._sim.read(stop - start)

    def r_peaks(self, start: int, stop: int) -> np.ndarray:
        """True R-peak sample indices (since the first sample) in ``[start, stop)``, int64."""
        if self._sim is None:
            raise DeviceError("EcgSimulatorSource is not open")
        return self._sim.r_peaks(start, stop)


@dataclass(frozen=True, kw_only=True)
class EcgReplayConfig:
    """Replay of an ECG file (see :func:`load_ecg` for formats and the loading arguments).

    ``chunk_ms``: milliseconds per frame. ``loop``: start again at the first sample after the
    last (the sample clock runs on). ``fs_hz``: needed for CSV/NPY/NPZ files; the replay runs at
    the file's rate. ``max_bytes``: the cap on the file's size (see :func:`load_ecg`).
    """

    path: Path
    fs_hz: float | None = None
    column: int | str | None = None
    fmt: EcgFormat | None = None
    offset: float = 0.0
    scale: float = 1.0
    chunk_ms: float = 250.0
    loop: bool = False
    max_bytes: int = MAX_FILE_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if self.fs_hz is not None and not (self.fs_hz > 0 and math.isfinite(self.fs_hz)):
            raise ValueError(f"fs_hz must be a positive finite number, got {self.fs_hz!r}")
        if not (self.chunk_ms > 0 and math.isfinite(self.chunk_ms)):
            raise ValueError(f"chunk_ms must be a positive finite number, got {self.chunk_ms!r}")


class EcgReplay(_ClockedEcgSource):
    """Replays an ECG file at its recorded rate, ``chunk_ms`` per frame.

    The file is read by ``open()`` (``FileNotFoundError`` / :class:`SourceFileError` there).
    Capture times are replay times: a file carries no wall clock. ``Frame.data``: float32
    (chunk_samples,) mV, the last chunk shorter unless ``loop``. :attr:`samples` is the number
    of samples in the file once open.
    """

    def __init__(self, config: EcgReplayConfig) -> None:
        super().__init__()
        self.config = config
        self._signal: np.ndarray | None = None
        self.samples: int | None = None

    def _open(self) -> None:
        cfg = self.config
        record = load_ecg(
            cfg.path,
            fs_hz=cfg.fs_hz,
            column=cfg.column,
            fmt=cfg.fmt,
            offset=cfg.offset,
            scale=cfg.scale,
            max_bytes=cfg.max_bytes,
        )
        self._signal = record.signal
        self.samples = len(record.signal)
        chunk = _chunk_samples(cfg.chunk_ms, record.fs_hz)
        self._start_clock(record.fs_hz, chunk, None if cfg.loop else self.samples)

    def _close(self) -> None:
        self._signal = None

    def _samples(self, start: int, stop: int) -> np.ndarray:
        assert self._signal is not None and self.samples is not None
        idx = np.arange(start, stop) % self.samples
        return self._signal[idx]
