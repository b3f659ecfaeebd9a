"""Audio files and sample-rate conversion: WAV (any format libsndfile reads) in and out.

The codec works on mono float32 in [-1, 1] at :data:`CODEC_FS` = 16 kHz. :func:`read_audio`
gives exactly that from a file at any rate (resampled with a polyphase FIR), and refuses
what it cannot turn into mono speech without guessing: a multi-channel file needs ``channel``.
:class:`WavSource` and :class:`WavSink` are the file ends of a link (the sound-device ends are
in :mod:`devices.sound`).

Pure numpy/scipy/soundfile; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from devices.files import MAX_FILE_BYTES, check_file
from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, Pacer, SourceFileError

__all__ = [
    "CODEC_FS",
    "WavSink",
    "WavSource",
    "read_audio",
    "resample",
    "write_audio",
]

log = logging.getLogger(__name__)

CODEC_FS = 16_000


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """``x`` (samples on axis 0) from ``fs_in`` to ``fs_out`` Hz, polyphase FIR (Kaiser)."""
    from scipy.signal import resample_poly

    if fs_in == fs_out:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    y = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=0)
    return y.astype(np.float32)


def read_audio(path: str | Path, *, fs: int = CODEC_FS, channel: int | None = None,
               max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Mono float32 samples of an audio file at ``fs`` Hz.

    A file at another rate is resampled (and logged); a file with several channels raises
    :class:`~devices.frames.SourceFileError` unless ``channel`` picks one. A missing file
    raises ``FileNotFoundError``; a directory, an unreadable file (corrupt, not audio), an
    empty one, or one with NaN/Inf raise :class:`~devices.frames.SourceFileError` naming the
    file. Bounds: the file may hold at most ``max_bytes`` (default
    :data:`~devices.files.MAX_FILE_BYTES`) and declare at most ``max_bytes / 2`` samples (all
    channels; as many as 16-bit PCM of that size holds), checked before it is decoded.
    """
    import soundfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no audio file {path}")
    check_file(path, max_bytes=max_bytes, what="an audio file")
    try:
        info = soundfile.info(str(path))
        if info.frames * info.channels > max_bytes // 2:
            raise SourceFileError(
                f"{path}: declares {info.frames} frames of {info.channels} channel(s), over "
                f"the {max_bytes // 2} samples a {max_bytes}-byte cap allows "
                "(raise it with max_bytes=)"
            )
        data, file_fs = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        if isinstance(exc, SourceFileError):
            raise
        raise SourceFileError(f"{path}: not a readable audio file ({exc})") from exc
    if data.shape[0] == 0:
        raise SourceFileError(f"{path}: no samples")
    if data.shape[1] > 1:
        if channel is None:
            raise SourceFileError(
                f"{path}: {data.shape[1]} channels; the codec is mono: pick one with a channel "
                "number (--channel N) or mix the file down first"
            )
        if not 0 <= channel < data.shape[1]:
            raise SourceFileError(f"{path}: no channel {channel} (it has {data.shape[1]})")
    samples = data[:, channel or 0]
    if not np.isfinite(samples).all():
        raise SourceFileError(f"{path}: NaN or Inf samples")
    if file_fs != fs:
        log.info("%s: resampling %d Hz -> %d Hz", path, file_fs, fs)
        samples = resample(samples, file_fs, fs)
    return np.ascontiguousarray(samples, dtype=np.float32)


def write_audio(path: str | Path, samples: np.ndarray, fs: int = CODEC_FS) -> None:
    """Write mono float samples as 16-bit PCM WAV (clipped to [-1, 1]), atomically: to a
    temporary name beside ``path``, renamed once complete. Raises
    :class:`~devices.frames.DeviceError` when the folder is missing or not writable."""
    with WavSink(path, fs) as sink:
        sink.write(samples)


class WavSource(FrameSource):
    """An audio file delivered in blocks of ``block`` samples, like a microphone.

    ``realtime=True`` paces blocks at the file's duration (a block is handed out once its
    last sample would have been captured); ``False`` delivers as fast as read. ``t_ns`` of a
    block is the capture time of its first sample.
    """

    def __init__(self, path: str | Path, *, block: int, fs: int = CODEC_FS,
                 realtime: bool = True, channel: int | None = None) -> None:
        super().__init__()
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.path = Path(path)
        self.block = int(block)
        self.fs = int(fs)
        self.realtime = realtime
        self.channel = channel
        self._samples = np.zeros(0, np.float32)
        self._pacer = Pacer(self.fs / self.block)
        self._k = 0
        self._wall0_ns = 0

    def _open(self) -> None:
        self._samples = read_audio(self.path, fs=self.fs, channel=self.channel)
        self._pacer.start()
        self._wall0_ns = time.time_ns()

    @property
    def next_due_ns(self) -> int | None:
        return self._pacer.deadline_ns(self._k + 1) if self.realtime else None

    def _read(self, timeout_s: float | None) -> Frame | None:
        start = self._k * self.block
        if start >= self._samples.size:
            raise EndOfStream
        # Block k is complete once its last sample is captured: at the start of block k + 1.
        if self.realtime and not self._pacer.wait(self._k + 1, timeout_s):
            return None
        data = self._samples[start:start + self.block]
        t_ns = self._wall0_ns + round(start * 1e9 / self.fs)
        self._k += 1
        return Frame(t_ns=t_ns, data=data, fs=float(self.fs))


class WavSink:
    """Writes played blocks to a 16-bit WAV as they come (memory stays one block), atomically:
    to ``path`` + ``.part``, renamed to ``path`` by :meth:`close` (also on ``with`` exit),
    removed instead when the ``with`` body raised. Samples are clipped to [-1, 1].

    The file is created by the first :meth:`write` (or by ``close`` for an empty WAV); a
    missing or unwritable folder raises :class:`~devices.frames.DeviceError` there.
    """

    def __init__(self, path: str | Path, fs: int = CODEC_FS) -> None:
        self.path = Path(path)
        self.fs = int(fs)
        self.samples_written = 0
        self._tmp = self.path.with_name(self.path.name + ".part")
        self._file: object | None = None
        self._closed = False

    def open(self) -> None:
        """Create the file now (else the first :meth:`write` does): errors come early."""
        self._open()

    def _open(self) -> object:
        import soundfile

        if self._file is None:
            if not self.path.parent.is_dir():
                raise DeviceError(f"{self.path}: the folder {self.path.parent} does not exist")
            if self.path.is_dir():
                raise DeviceError(f"{self.path}: is a directory, not a file to write")
            try:
                self._file = soundfile.SoundFile(str(self._tmp), "w", samplerate=self.fs,
                                                 channels=1, subtype="PCM_16", format="WAV")
            except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
                raise DeviceError(f"{self.path}: cannot write: {exc}") from exc
        return self._file

    def write(self, block: np.ndarray) -> None:
        if self._closed:
            raise DeviceError(f"{self.path}: the WAV sink is closed")
        samples = np.clip(np.asarray(block, dtype=np.float32).ravel(), -1.0, 1.0)
        self._open().write(samples)  # type: ignore[attr-defined]
        self.samples_written += int(samples.size)

    def close(self) -> None:
        """Finish the file and rename it into place; safe twice."""
        if self._closed:
            return
        f = self._open()
        self._closed = True
        f.close()  # type: ignore[attr-defined]
        self._tmp.replace(self.path)

    def abort(self) -> None:
        """Drop what was written (the ``.part`` file); ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()  # type: ignore[attr-defined]
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> WavSink:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
