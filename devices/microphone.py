"""The microphone end of a real-time audio link: mono capture from a sound device (PortAudio).

    FrameSource                      (devices.frames: open / read / close lifecycle)
    └── Microphone                   mono capture, Frames of exactly ``block`` samples at ``fs``

The audio (PortAudio) thread never waits on the link: its callback only copies a block into a
bounded queue, and a full queue drops the *incoming* block, counted (``overruns``), never an
exception and never a stall. A device that cannot run at ``fs`` is resampled
(:class:`~devices.sound.StreamResampler`).

Times: a frame's ``t_ns`` is the wall-clock capture time of its first sample. The first
callback's ``inputBufferAdcTime`` (PortAudio's stream clock) is mapped once to
``time.time_ns()``; from there the sample count is the clock, so frames are exactly
``block / fs`` apart, blocks dropped on overrun leave a gap of their exact length, and the
device clock's drift against the system clock (typically below 0.01 %) is not corrected.

Numpy, scipy and sounddevice (imported lazily, :mod:`devices.sound`); no torch, no :mod:`stream`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Literal

import numpy as np

from devices.audio import CODEC_FS
from devices.frames import DeviceError, Frame, FrameSource
from devices.sound import (
    POLL_S,
    Latency,
    StreamResampler,
    check_stream_args,
    portaudio,
    settle_device,
)

__all__ = ["Microphone"]


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
        check_stream_args(fs, block, queue_blocks, device_fs)
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
        sd = portaudio()
        setup = settle_device(self.device, "input", fs=self.fs, block=self.block,
                              device_fs=self.device_fs, dtype=self.dtype)
        self.device_name, self.device_fs = setup.name, setup.rate_hz
        self._resampler = setup.resampler
        try:
            self._stream = sd.InputStream(
                device=setup.index, channels=1, samplerate=setup.rate_hz, dtype=self.dtype,
                blocksize=setup.blocksize, latency=self.latency,
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
            wait_s = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
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
