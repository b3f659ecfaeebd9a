"""Sound devices: the microphone and speaker ends of a real-time audio link, through PortAudio.

    list_devices / format_devices    what PortAudio sees, as a table a user picks from
    find_device                      a device index from an index or (part of) a name
    FrameSource                      (devices.frames: open / read / close lifecycle)
    └── Microphone                   mono capture, Frames of exactly ``block`` samples at ``fs``
    Speaker                          mono playback of float32 blocks of any size
    StreamResampler                  block-by-block polyphase resampling with carried state

The audio (PortAudio) thread never waits on the link: its callback only copies a block into
a bounded buffer, and a full or empty buffer is a counted event, not an exception and never a
stall. The :class:`Microphone` queue drops the *incoming* block when full (``overruns``); the
:class:`Speaker` plays silence when its buffer runs dry (``underruns``) and, when a write finds
the buffer full, waits at most ``write_timeout_s`` and then drops the *oldest* samples
(``overruns``), so a receiver never blocks longer than that and playout stays current.

A device that cannot run at the link's rate runs at its default rate (or ``device_fs``) and the
audio is converted by :class:`StreamResampler`, whose output block by block is the output of
``scipy.signal.resample_poly`` on the whole signal: no clicks at block edges, no drift.

Times: a microphone frame's ``t_ns`` is the wall-clock capture time of its first sample. The
first callback's ``inputBufferAdcTime`` (PortAudio's stream clock) is mapped once to
``time.time_ns()``; from there the sample count is the clock, so frames are exactly
``block / fs`` apart, blocks dropped on overrun leave a gap of their exact length, and the
device clock's drift against the system clock (typically below 0.01 %) is not corrected.

PortAudio reads the host's audio configuration (for ALSA, ``ALSA_CONFIG_PATH``) when it
initialises, once per process, on the first use of this module. It is imported lazily, so this
module imports without ``libportaudio2``; using a device without it raises
:class:`~devices.frames.DeviceError` saying what to install.

Numpy, scipy and sounddevice; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np

from devices.audio import CODEC_FS
from devices.frames import DeviceError, Frame, FrameSource

__all__ = [
    "Microphone",
    "SoundDevice",
    "Speaker",
    "StreamResampler",
    "find_device",
    "format_devices",
    "list_devices",
]

log = logging.getLogger(__name__)

DeviceKind = Literal["input", "output"]
Latency = float | Literal["low", "high"]

_POLL_S = 0.1  # how often a waiting reader checks that the stream is still alive


def _portaudio() -> Any:
    """The ``sounddevice`` module, or :class:`DeviceError` saying what is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the package is there, libportaudio is not
        raise DeviceError(
            f"PortAudio is not available ({exc}); install the PortAudio library "
            "(Debian/Ubuntu: apt-get install libportaudio2) and the sounddevice package"
        ) from exc
    return sounddevice


# ---------------------------------------------------------------------------------------------
# Listing and picking devices


@dataclass(frozen=True, slots=True)
class SoundDevice:
    """One PortAudio device. ``hostapi`` is the host API's name (``"ALSA"``, ``"JACK"``...)."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels


def _default_index(sd: Any, kind: DeviceKind) -> int | None:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except sd.PortAudioError:  # no default device of that kind
        return None


def list_devices() -> list[SoundDevice]:
    """Every device PortAudio sees, in index order. :class:`DeviceError` without PortAudio."""
    sd = _portaudio()
    try:
        infos = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list sound devices: {exc}") from exc
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    return [
        SoundDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            hostapi=str(hostapis[info["hostapi"]]["name"]),
            max_input_channels=int(info["max_input_channels"]),
            max_output_channels=int(info["max_output_channels"]),
            default_samplerate=float(info["default_samplerate"]),
            is_default_input=info["index"] == default_in,
            is_default_output=info["index"] == default_out,
        )
        for info in infos
    ]


def format_devices(devices: list[SoundDevice]) -> str:
    """A table to pick a device from: index, channels in/out (``*``: default), default rate."""
    if not devices:
        return (
            "no sound devices found (PortAudio sees none; is libportaudio2 installed, and is "
            "the sound system (ALSA, PulseAudio, PipeWire) configured with a card or a "
            "virtual device?)"
        )
    api_w = max(len("host API"), *(len(d.hostapi) for d in devices))
    lines = [f"{'index':>5}  {'in':>5}  {'out':>5}  {'rate Hz':>8}  {'host API':<{api_w}}  name"]
    for d in devices:
        ins = f"{d.max_input_channels}{'*' if d.is_default_input else ' '}"
        outs = f"{d.max_output_channels}{'*' if d.is_default_output else ' '}"
        lines.append(
            f"{d.index:>5}  {ins:>5}  {outs:>5}  {d.default_samplerate:>8.0f}  "
            f"{d.hostapi:<{api_w}}  {d.name}"
        )
    lines.append("* default input / output device")
    lines.append(
        "Pick a device by its index (e.g. 0) or by a case-insensitive part of its name "
        f"(e.g. {(devices[0].name.split() or ['name'])[0].lower()!r})."
    )
    return "\n".join(lines)


def _candidates(devices: list[SoundDevice], kind: DeviceKind) -> str:
    lines = [
        f"  {d.index}: {d.name} ({d.channels(kind)} {kind} channels)"
        for d in devices if d.channels(kind) > 0
    ]
    return "\n".join(lines) if lines else f"  (no {kind} devices)"


def find_device(spec: str | int | None, kind: DeviceKind) -> int | None:
    """The index of the ``kind`` device that ``spec`` names; ``None`` for the system default.

    ``spec``: an index (``3`` or ``"3"``) or a case-insensitive part of a device name; a name
    that several devices contain picks the one with exactly that name, or the only one of them
    with ``kind`` channels. Raises :class:`DeviceError`, listing the candidates, when nothing or
    several devices match, or when the device has no ``kind`` channels.
    """
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', got {kind!r}")
    if spec is None:
        return None
    devices = list_devices()
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        index = int(text)
        chosen = [d for d in devices if d.index == index]
        if not chosen:
            raise DeviceError(f"no sound device {index}; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
    else:
        if not text:
            raise DeviceError(f"empty sound device name; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
        named = [d for d in devices if text.lower() in d.name.lower()]
        chosen = [d for d in named if d.channels(kind) > 0]
        exact = [d for d in chosen if d.name.lower() == text.lower()]
        chosen = exact or chosen
        if len(chosen) > 1:
            raise DeviceError(
                f"{text!r} matches {len(chosen)} {kind} devices; use more of the name or the "
                f"index:\n{_candidates(chosen, kind)}"
            )
        if not named:
            raise DeviceError(f"no sound device matches {text!r}; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
        chosen = chosen or named
    device = chosen[0]
    if device.channels(kind) < 1:
        raise DeviceError(f"sound device {device.index} ({device.name}) has no {kind} channels; "
                          f"{kind} devices:\n{_candidates(devices, kind)}")
    return device.index


def _device_rate(sd: Any, device: int | None, kind: DeviceKind, fs: int,
                 device_fs: int | None, dtype: str) -> tuple[int, str]:
    """The rate to open ``device`` at (``device_fs``, else ``fs`` if it can, else its default),
    and the device's name."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        info = sd.query_devices(device, kind=kind)
        name, default_fs = str(info["name"]), round(float(info["default_samplerate"]))
    except sd.PortAudioError as exc:
        raise DeviceError(f"no {kind} sound device ({exc})") from exc
    tried = [device_fs] if device_fs is not None else [fs, default_fs]
    errors = []
    for rate in dict.fromkeys(tried):  # fs == default_fs: try once
        try:
            check(device=device, channels=1, dtype=dtype, samplerate=rate)
        except sd.PortAudioError as exc:
            errors.append(f"{rate} Hz: {exc}")
            continue
        if rate != fs:
            log.info("sound device %r: %s at %d Hz, resampled to/from %d Hz", name, kind, rate, fs)
        return rate, name
    raise DeviceError(f"sound device {name!r} cannot do mono {dtype} {kind} at "
                      f"{' or '.join(errors)}")


# ---------------------------------------------------------------------------------------------
# Resampling


class StreamResampler:
    """``fs_in`` to ``fs_out`` Hz, one block at a time, carrying the filter state across blocks.

    The filter and the alignment are ``scipy.signal.resample_poly``'s (Kaiser-windowed FIR,
    ``beta`` 5, ``10 * max(up, down)`` taps each side), so ``process`` over consecutive blocks
    followed by ``flush`` returns exactly ``resample_poly`` of the whole signal (float32; the
    arithmetic is float64). Output sample ``k`` is the signal at input time ``k / fs_out``.

    An output sample needs input up to the filter's half length ahead, so ``process`` returns
    what is complete: it runs :attr:`delay_samples` (about ``10 / min(fs_in, fs_out)`` s)
    behind the input. :meth:`flush` ends the signal (zero padding, like ``resample_poly``) and
    resets; :meth:`reset` discards the state, for a signal that restarts after a gap. One
    thread at a time.
    """

    def __init__(self, fs_in: int, fs_out: int) -> None:
        if fs_in <= 0 or fs_out <= 0 or int(fs_in) != fs_in or int(fs_out) != fs_out:
            raise ValueError(f"rates must be positive integers (Hz), got {fs_in} -> {fs_out}")
        self.fs_in, self.fs_out = int(fs_in), int(fs_out)
        g = math.gcd(self.fs_in, self.fs_out)
        self.up, self.down = self.fs_out // g, self.fs_in // g
        self._h = np.zeros(1)
        self._skip = 0
        if (self.up, self.down) != (1, 1):
            from scipy.signal import firwin

            max_rate = max(self.up, self.down)
            half_len = 10 * max_rate
            h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
            pre_pad = self.down - half_len % self.down  # puts output samples on filter centres
            self._h = np.concatenate([np.zeros(pre_pad), h])
            self._skip = (half_len + pre_pad) // self.down  # outputs before input sample 0
        self.reset()

    @property
    def delay_samples(self) -> int:
        """How many output samples ``process`` holds back until more input arrives."""
        return self._skip

    def reset(self) -> None:
        self._x = np.zeros(0)  # input history, first sample is input number self._j0
        self._j0 = 0
        self._n_in = 0
        self._m_next = 0  # next filter-bank output to emit (output k is bank output k + skip)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resampled float32 samples of the next block ``x`` (1-D, any length)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D block, got shape {x.shape}")
        self._n_in += x.size
        if self.up == self.down:
            return x.astype(np.float32)
        self._x = np.concatenate([self._x, x])
        return self._emit(-(-self._n_in * self.up // self.down))

    def flush(self) -> np.ndarray:
        """The rest of the signal, as if it ended here; then :meth:`reset`."""
        if self.up == self.down:
            self.reset()
            return np.zeros(0, np.float32)
        m_stop = -(-self._n_in * self.up // self.down) + self._skip
        pad = max(0, -(-m_stop * self.down // self.up) - self._n_in)
        self._x = np.concatenate([self._x, np.zeros(pad)])
        out = self._emit(m_stop)
        self.reset()
        return out

    def _emit(self, m_end: int) -> np.ndarray:
        """Filter-bank outputs ``m_next .. m_end - 1`` (all complete), less the leading skip."""
        from scipy.signal import upfirdn

        first = max(self._m_next, self._skip)
        if m_end <= first:
            self._m_next = max(self._m_next, m_end)
            return np.zeros(0, np.float32)
        # The history starts at a multiple of `down`, so bank output m is local output m - q0.
        q0 = self._j0 * self.up // self.down
        out = upfirdn(self._h, self._x, self.up, self.down)[first - q0:m_end - q0]
        self._m_next = m_end
        # Keep the inputs the next output reaches back to, from a multiple of `down`.
        need = max(0, -(-(m_end * self.down - self._h.size + 1) // self.up))
        keep = need // self.down * self.down
        if keep > self._j0:
            self._x = self._x[keep - self._j0:]
            self._j0 = keep
        return out.astype(np.float32)


def _validate(fs: int, block: int, queue_blocks: int, device_fs: int | None) -> None:
    if fs <= 0 or int(fs) != fs:
        raise ValueError(f"fs must be a positive integer (Hz), got {fs}")
    if block < 1:
        raise ValueError(f"block must be >= 1 sample, got {block}")
    if queue_blocks < 1:
        raise ValueError(f"queue_blocks must be >= 1, got {queue_blocks}")
    if device_fs is not None and (device_fs <= 0 or int(device_fs) != device_fs):
        raise ValueError(f"device_fs must be a positive integer (Hz) or None, got {device_fs}")


# ---------------------------------------------------------------------------------------------
# Microphone


class Microphone(FrameSource):
    """Mono capture from a sound device, as Frames of exactly ``block`` float32 samples at ``fs``.

    ``device``: an index, (part of) a name (:func:`find_device`) or ``None`` for the default.
    ``block``: samples per frame at ``fs`` (320 = 20 ms at 16 kHz, one Opus frame); the device
    delivers blocks of the same duration. ``queue_blocks``: how many device blocks wait for the
    reader before new ones are dropped. ``dtype``: the device's sample format (``"int16"`` is
    scaled by 1/32768); frames are float32 in [-1, 1] either way. ``device_fs``: run the device
    at this rate and resample; ``None`` uses ``fs`` when the device can, else its default rate
    (after ``open()``, :attr:`device_fs` is the rate in use). ``latency``: PortAudio's.

    ``open()`` starts capturing; from then on blocks are queued whether or not anyone reads.
    ``read(timeout_s)`` returns the next frame, ``None`` after ``timeout_s`` s without one, and
    raises :class:`DeviceError` once the stream has stopped under us (device unplugged or
    failed) and the queued blocks are read; with ``timeout_s=None`` it waits, checking the
    stream every 0.1 s, so it never waits for a dead device. A live device has no end: there is
    no :class:`~devices.frames.EndOfStream`. Nor does ALSA's ``file`` PCM report the end of its
    input file: it goes on returning its stale ring buffer (or, reading a FIFO, waits for more),
    so whoever feeds it must read only as many samples as it fed. Open, read and close from one
    thread; PortAudio's thread only queues.

    Counters: :attr:`overruns` = :attr:`dropped_blocks` (the queue was full) +
    :attr:`device_overflows` (PortAudio's ``input_overflow``: samples lost before the callback;
    the sample clock cannot see those). After dropped blocks the next frame starts at the next
    received block, with a ``t_ns`` that shows the gap (a partial frame before it is dropped).
    """

    def __init__(self, device: str | int | None = None, *, fs: int = CODEC_FS, block: int = 320,
                 queue_blocks: int = 50, dtype: Literal["float32", "int16"] = "float32",
                 device_fs: int | None = None, latency: Latency = "high") -> None:
        super().__init__()
        _validate(fs, block, queue_blocks, device_fs)
        if dtype not in ("float32", "int16"):
            raise ValueError(f"dtype must be 'float32' or 'int16', got {dtype!r}")
        self.device = device
        self.fs = int(fs)
        self.block = int(block)
        self.queue_blocks = int(queue_blocks)
        self.dtype = dtype
        self.device_fs = device_fs
        self.latency = latency
        self.device_name = ""
        self.dropped_blocks = 0
        self.device_overflows = 0
        self.samples_read = 0
        self._queue: queue.Queue[tuple[int, np.ndarray]] = queue.Queue(maxsize=self.queue_blocks)
        self._stream: Any = None
        self._finished = threading.Event()
        self._resampler: StreamResampler | None = None
        self._captured = 0  # device samples seen by the callback, dropped ones included
        self._anchor_ns: int | None = None  # wall-clock time of device sample 0
        self._expected = 0  # device sample number of the next block, if none was dropped
        self._pending = np.zeros(0, np.float32)  # output samples not yet in a frame
        self._pending_at = 0  # output sample number (at fs) of self._pending[0]

    @property
    def overruns(self) -> int:
        return self.dropped_blocks + self.device_overflows

    def stats(self) -> dict[str, int]:
        """Counters for a link's report (``blocks``/``samples``: frames and samples read)."""
        return {
            "blocks": self.frames_read,
            "samples": self.samples_read,
            "overruns": self.overruns,
            "dropped_blocks": self.dropped_blocks,
            "device_overflows": self.device_overflows,
            "queued_blocks": self._queue.qsize(),
        }

    def _open(self) -> None:
        sd = _portaudio()
        index = find_device(self.device, "input")
        rate, self.device_name = _device_rate(sd, index, "input", self.fs, self.device_fs,
                                              self.dtype)
        self.device_fs = rate
        if rate != self.fs:
            self._resampler = StreamResampler(rate, self.fs)
        try:
            self._stream = sd.InputStream(
                device=index, channels=1, samplerate=rate, dtype=self.dtype,
                blocksize=max(1, round(self.block * rate / self.fs)), latency=self.latency,
                callback=self._callback, finished_callback=self._finished.set,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            if self._stream is not None:
                self._stream.close(ignore_errors=True)
            raise DeviceError(f"cannot capture from sound device {self.device_name!r}: {exc}"
                              ) from exc

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: stamp, copy, queue; never wait."""
        if status.input_overflow:
            self.device_overflows += 1
        if self._anchor_ns is None:
            self._anchor_ns = _adc_wall_ns(time_info, frames, self.device_fs or self.fs)
        start, self._captured = self._captured, self._captured + frames
        try:
            self._queue.put_nowait((start, indata[:, 0].copy()))
        except queue.Full:
            self.dropped_blocks += 1

    def _read(self, timeout_s: float | None) -> Frame | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._pending.size < self.block:
            item = self._next_block(deadline)
            if item is None:
                return None
            self._take(*item)
        data, self._pending = self._pending[:self.block], self._pending[self.block:]
        assert self._anchor_ns is not None  # set by the callback before it queued anything
        t_ns = self._anchor_ns + round(self._pending_at * 1e9 / self.fs)
        self._pending_at += self.block
        self.samples_read += self.block
        return Frame(t_ns=t_ns, data=data, fs=float(self.fs))

    def _next_block(self, deadline: float | None) -> tuple[int, np.ndarray] | None:
        while True:
            wait_s = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            try:
                return self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
            except queue.Empty:
                pass
            if self._finished.is_set() or not self._stream.active:
                raise DeviceError(
                    f"sound device {self.device_name!r} stopped capturing (unplugged or failed) "
                    f"after {self._captured} samples"
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _take(self, start: int, raw: np.ndarray) -> None:
        """Convert, resample and append one device block to the pending output."""
        x = raw.astype(np.float32) / 32768.0 if raw.dtype == np.int16 else raw
        if start != self._expected:  # blocks were dropped: restart the sample clock after the gap
            self._pending = np.zeros(0, np.float32)
            self._pending_at = round(start * self.fs / (self.device_fs or self.fs))
            if self._resampler is not None:
                self._resampler.reset()
        self._expected = start + raw.size
        y = self._resampler.process(x) if self._resampler is not None else x
        self._pending = np.concatenate([self._pending, y]) if self._pending.size else y

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close(ignore_errors=True)


def _adc_wall_ns(time_info: Any, frames: int, fs: int) -> int:
    """Wall-clock time (Unix ns) of the first sample of the block now in the callback."""
    now_ns = time.time_ns()
    adc_s, current_s = time_info.inputBufferAdcTime, time_info.currentTime
    lag_s = current_s - adc_s
    if adc_s <= 0 or not 0.0 <= lag_s < 1.0:  # the host API gave no usable ADC time
        lag_s = frames / fs  # the block's last sample was captured just now
    return now_ns - round(lag_s * 1e9)


# ---------------------------------------------------------------------------------------------
# Speaker


class _SampleRing:
    """Fixed-capacity FIFO of float32 samples; the caller holds the lock."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, np.float32)
        self._start = 0
        self.count = 0

    @property
    def capacity(self) -> int:
        return self._buf.size

    @property
    def free(self) -> int:
        return self._buf.size - self.count

    def push(self, x: np.ndarray) -> None:
        """Append ``x`` (``x.size <= free``)."""
        end = (self._start + self.count) % self._buf.size
        first = min(x.size, self._buf.size - end)
        self._buf[end:end + first] = x[:first]
        self._buf[:x.size - first] = x[first:]
        self.count += x.size

    def drop(self, n: int) -> None:
        """Discard the ``n`` oldest samples."""
        n = min(n, self.count)
        self._start = (self._start + n) % self._buf.size
        self.count -= n

    def pop_into(self, out: np.ndarray) -> int:
        """Move up to ``out.size`` oldest samples into ``out[:n]``; returns ``n``."""
        n = min(out.size, self.count)
        first = min(n, self._buf.size - self._start)
        out[:first] = self._buf[self._start:self._start + first]
        out[first:n] = self._buf[:n - first]
        self.drop(n)
        return n


class Speaker:
    """Mono playback to a sound device of float32 blocks of any size at ``fs``.

    ``device``: as for :class:`Microphone`. ``block``: samples per device callback at ``fs``
    (320 = 20 ms). ``queue_blocks``: the playout buffer, in blocks; it is the most latency a
    writer faster than real time can add. ``prefill_blocks``: playout starts once this many
    blocks are buffered (a cushion against the writer's jitter), or at ``close``.
    ``write_timeout_s``: how long a write waits for room in a full buffer before it drops the
    oldest samples. ``device_fs``: as for :class:`Microphone`; written audio is resampled.
    ``latency``: PortAudio's (:attr:`latency_s` is what it granted).

    ``open()`` acquires the device (also ``with``); ``write`` queues; ``close()`` plays what is
    queued (the resampler's tail included), waits for it, and releases — safe twice. A stream
    that stopped under us (device unplugged or failed) makes ``write`` raise
    :class:`DeviceError`; ``close`` then just releases. Write and close from one thread;
    PortAudio's thread only copies out of the buffer.

    Counters: :attr:`underruns`: callbacks that found fewer samples than the device needed and
    played silence for the rest (not counted before playout starts nor while closing);
    :attr:`overruns`: writes that dropped samples (:attr:`dropped_samples`) to make room;
    :attr:`device_underflows`: PortAudio's ``output_underflow`` flag; :attr:`samples_played`.
    """

    def __init__(self, device: str | int | None = None, *, fs: int = CODEC_FS, block: int = 320,
                 queue_blocks: int = 25, prefill_blocks: int = 2, device_fs: int | None = None,
                 write_timeout_s: float = 0.05, latency: Latency = "high") -> None:
        _validate(fs, block, queue_blocks, device_fs)
        if not 1 <= prefill_blocks <= queue_blocks:
            raise ValueError(f"prefill_blocks must be in 1..queue_blocks ({queue_blocks}), "
                             f"got {prefill_blocks}")
        if not write_timeout_s >= 0:
            raise ValueError(f"write_timeout_s must be >= 0, got {write_timeout_s}")
        self.device = device
        self.fs = int(fs)
        self.block = int(block)
        self.queue_blocks = int(queue_blocks)
        self.prefill_blocks = int(prefill_blocks)
        self.device_fs = device_fs
        self.write_timeout_s = float(write_timeout_s)
        self.latency = latency
        self.device_name = ""
        self.blocks_written = 0
        self.samples_written = 0
        self.underruns = 0
        self.overruns = 0
        self.dropped_samples = 0
        self.device_underflows = 0
        self._device_played = 0
        self._state = "new"
        self._stream: Any = None
        self._prefill = 0  # device samples buffered before playout starts
        self._started = False
        self._closing = False
        self._finished = threading.Event()
        self._cond = threading.Condition()
        self._ring = _SampleRing(1)
        self._resampler: StreamResampler | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    def open(self) -> None:
        """Acquire the device; playout starts with the first ``prefill_blocks`` written."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise DeviceError("Speaker is closed; make a new one")
        sd = _portaudio()
        index = find_device(self.device, "output")
        rate, self.device_name = _device_rate(sd, index, "output", self.fs, self.device_fs,
                                              "float32")
        self.device_fs = rate
        if rate != self.fs:
            self._resampler = StreamResampler(self.fs, rate)
        device_block = max(1, round(self.block * rate / self.fs))
        self._ring = _SampleRing(self.queue_blocks * device_block)
        self._prefill = self.prefill_blocks * device_block
        try:
            self._stream = sd.OutputStream(
                device=index, channels=1, samplerate=rate, dtype="float32",
                blocksize=device_block, latency=self.latency,
                callback=self._callback, finished_callback=self._finished.set,
            )
        except sd.PortAudioError as exc:
            raise DeviceError(f"cannot play to sound device {self.device_name!r}: {exc}") from exc
        self._state = "open"

    def close(self) -> None:
        """Play what is queued, then release the device. Never raises for a failed device."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state, self._closing = "closed", True
        sd = _portaudio()
        try:
            if self._resampler is not None:
                self._enqueue(self._resampler.flush())
            if not self._started and self._ring.count:
                self._start()
            if self._started:
                self._wait_played()
                self._stream.stop()  # returns once PortAudio's own buffer has played
        except (DeviceError, sd.PortAudioError) as exc:
            log.warning("sound device %r: %s; releasing it", self.device_name, exc)
        finally:
            self._stream.close(ignore_errors=True)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------
    def write(self, block: np.ndarray) -> None:
        """Queue float32 mono samples (1-D, any length) at ``fs``; waits at most
        ``write_timeout_s`` for room, then drops the oldest queued samples."""
        if self._state != "open":
            raise DeviceError(f"Speaker is not open (state: {self._state})")
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D block of samples, got shape {x.shape}")
        if self._started and (self._finished.is_set() or not self._stream.active):
            raise DeviceError(f"sound device {self.device_name!r} stopped playing "
                              "(unplugged or failed)")
        self.blocks_written += 1
        self.samples_written += x.size
        self._enqueue(self._resampler.process(x) if self._resampler is not None else x)
        if not self._started and self._ring.count >= self._prefill:
            self._start()

    def _enqueue(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        dropped = max(0, x.size - self._ring.capacity)
        x = x[dropped:]  # a write longer than the whole buffer keeps its newest samples
        with self._cond:
            if self._ring.free < x.size and self._started:
                self._cond.wait_for(lambda: self._ring.free >= x.size, self.write_timeout_s)
            short = x.size - self._ring.free
            if short > 0:
                self._ring.drop(short)
                dropped += short
            self._ring.push(x)
        if dropped:
            self.overruns += 1
            self.dropped_samples += dropped

    def _start(self) -> None:
        try:
            self._stream.start()
        except _portaudio().PortAudioError as exc:
            raise DeviceError(f"cannot start sound device {self.device_name!r}: {exc}") from exc
        self._started = True

    def _wait_played(self) -> None:
        """Wait until the buffer is empty (bounded by its length plus a second)."""
        assert self.device_fs is not None
        deadline = time.monotonic() + self._ring.count / self.device_fs + 1.0
        with self._cond:
            while self._ring.count and not self._finished.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("sound device %r: %d samples not played", self.device_name,
                                self._ring.count)
                    return
                self._cond.wait(min(left, _POLL_S))

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy out of the buffer, silence for what is missing."""
        if status.output_underflow:
            self.device_underflows += 1
        out = outdata[:, 0]
        with self._cond:
            n = self._ring.pop_into(out)
            self._cond.notify()
        if n < frames:
            out[n:] = 0.0
            if not self._closing:
                self.underruns += 1
        self._device_played += n

    # -- numbers -----------------------------------------------------------------------------
    @property
    def latency_s(self) -> float:
        """PortAudio's output latency (s): from a sample leaving the buffer to the DAC."""
        if self._stream is None:
            raise DeviceError("Speaker is not open")
        return float(self._stream.latency)

    @property
    def samples_played(self) -> int:
        """Written samples (at ``fs``) handed to the device so far, silence excluded."""
        return round(self._device_played * self.fs / (self.device_fs or self.fs))

    @property
    def buffered_s(self) -> float:
        """Seconds of audio waiting in the playout buffer."""
        return self._ring.count / (self.device_fs or self.fs)

    def stats(self) -> dict[str, int | float]:
        """Counters for a link's report (``blocks``/``samples``: writes and samples written)."""
        return {
            "blocks": self.blocks_written,
            "samples": self.samples_written,
            "samples_played": self.samples_played,
            "underruns": self.underruns,
            "overruns": self.overruns,
            "dropped_samples": self.dropped_samples,
            "device_underflows": self.device_underflows,
            "buffered_s": self.buffered_s,
        }
