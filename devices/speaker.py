"""The speaker end of a real-time audio link: mono playback to a sound device (PortAudio).

The audio (PortAudio) thread never waits on the link: its callback only copies samples out of a
bounded buffer. A full or empty buffer is a counted event, not an exception and never a stall:
the :class:`Speaker` plays silence when its buffer runs dry (``underruns``) and, when a write
finds the buffer full, waits at most ``write_timeout_s`` and then drops the *oldest* samples
(``overruns``), so a receiver never blocks longer than that and playout stays current. Written
audio a device cannot play at ``fs`` is resampled (:class:`~devices.sound.StreamResampler`).

Numpy, scipy and sounddevice (imported lazily, :mod:`devices.sound`); no torch, no :mod:`stream`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Self

import numpy as np

from devices.audio import CODEC_FS
from devices.frames import DeviceError
from devices.lifecycle import OpenCloseState
from devices.sound import (
    POLL_S,
    Latency,
    StreamResampler,
    check_stream_args,
    portaudio,
    settle_device,
)

__all__ = ["Speaker"]

log = logging.getLogger(__name__)


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


class Speaker(OpenCloseState):
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
        check_stream_args(fs, block, queue_blocks, device_fs)
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
    def open(self) -> None:
        """Acquire the device; playout starts with the first ``prefill_blocks`` written."""
        if self._state == "open":
            return
        if self._state == "closed":
            raise DeviceError("Speaker is closed; make a new one")
        sd = portaudio()
        setup = settle_device(self.device, "output", fs=self.fs, block=self.block,
                              device_fs=self.device_fs, dtype="float32")
        self.device_name, self.device_fs = setup.name, setup.rate_hz
        self._resampler = setup.resampler
        self._ring = _SampleRing(self.queue_blocks * setup.blocksize)
        self._prefill = self.prefill_blocks * setup.blocksize
        try:
            self._stream = sd.OutputStream(
                device=setup.index, channels=1, samplerate=setup.rate_hz, dtype="float32",
                blocksize=setup.blocksize, latency=self.latency,
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
        sd = portaudio()
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
        except portaudio().PortAudioError as exc:
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
                self._cond.wait(min(left, POLL_S))

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
