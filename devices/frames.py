"""Frames, and the small lifecycle every frame source shares.

:class:`EndOfStream` says a finite source has delivered its last frame: a clean signal, not
an error. :class:`DeviceError` and :class:`SourceFileError` live in :mod:`devices.errors`
(where the project's whole error tree is drawn) and are re-exported here.

A source is opened, read and closed from one thread (the one that owns it); nothing here is
thread-safe, on purpose. Sources that produce frames on a clock (simulators, file replays) pace
themselves with :class:`Pacer`, which schedules by absolute deadlines so that the rate never
drifts, however long each frame takes to make.

Pure numpy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Self

import numpy as np

from devices.errors import DeviceError, SourceFileError
from devices.lifecycle import OpenCloseState

__all__ = ["DeviceError", "EndOfStream", "Frame", "FrameSource", "Pacer", "SourceFileError"]


class EndOfStream(Exception):  # noqa: N818 - a signal, like trio.EndOfChannel, not an error
    """A finite source has no more frames. Raised by :meth:`FrameSource.read`."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One block of samples from a source.

    ``t_ns``: capture time of the first sample, Unix epoch nanoseconds (``time.time_ns`` clock).
    ``data``: the samples; a spectrum is 1-D ``(L,)``, a time series block ``(n,)`` or
    ``(n, channels)``. ``fs``: samples per second for time series, ``None`` for spectra.
    """

    t_ns: int
    data: np.ndarray
    fs: float | None = None


class Pacer:
    """Absolute-deadline clock for a source that emits ``rate_hz`` frames per second.

    Frame ``k`` is due at ``start + k / rate_hz`` on the monotonic clock, whatever happened to
    frames ``0..k-1``: a slow frame makes the next one late but never shifts the schedule, so
    ``k`` frames always take ``k / rate_hz`` seconds on average. A reader that falls behind
    catches up by getting the overdue frames at once (as from a real instrument's buffer).
    Capture times (:meth:`capture_ns`) are the deadlines mapped to the wall clock, so they are
    exactly ``1 / rate_hz`` apart.
    """

    def __init__(self, rate_hz: float) -> None:
        if not (rate_hz > 0 and np.isfinite(rate_hz)):
            raise ValueError(f"rate_hz must be a positive finite number, got {rate_hz!r}")
        self.rate_hz = float(rate_hz)
        self._mono0_ns: int | None = None
        self._wall0_ns = 0

    def start(self) -> None:
        """Frame 0 is due now."""
        self._mono0_ns = time.monotonic_ns()
        self._wall0_ns = time.time_ns()

    @property
    def started(self) -> bool:
        return self._mono0_ns is not None

    def deadline_ns(self, k: int) -> int:
        """Monotonic-clock time (ns) at which frame ``k`` is due."""
        if self._mono0_ns is None:
            raise RuntimeError("Pacer.start() was not called")
        return self._mono0_ns + round(k * 1e9 / self.rate_hz)

    def capture_ns(self, k: int) -> int:
        """Wall-clock capture time (Unix epoch ns) of frame ``k``."""
        return self._wall0_ns + (self.deadline_ns(k) - self._mono0_ns)  # type: ignore[operator]

    def wait(self, k: int, timeout_s: float | None) -> bool:
        """Sleep until frame ``k`` is due; ``False`` if ``timeout_s`` (seconds) ran out first."""
        remaining_s = (self.deadline_ns(k) - time.monotonic_ns()) / 1e9
        if remaining_s <= 0:
            return True
        if timeout_s is not None and timeout_s < remaining_s:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return False
        time.sleep(remaining_s)
        return True


class FrameSource(OpenCloseState):
    """Lifecycle shared by every source: ``open()`` acquires, ``read()`` delivers, ``close()``
    releases. A subclass implements ``_open``, ``_read`` and ``_close``.

    - The constructor validates its arguments and does no I/O.
    - ``open()`` on an open source does nothing; after ``close()`` it raises.
    - ``read(timeout_s)`` returns the next :class:`Frame`, ``None`` if none came within
      ``timeout_s`` seconds (``None``: wait as long as it takes), and raises
      :class:`EndOfStream` once a finite source is exhausted.
    - ``close()`` is safe to call twice, and from ``__exit__``.

    :attr:`frames_read` counts frames delivered. :attr:`next_due_ns` is the monotonic time the
    next frame is due for sources on a clock (so one thread can serve several sources, earliest
    first), ``None`` for sources that wait on hardware.
    """

    def __init__(self) -> None:
        self._state = "new"
        self.frames_read = 0

    # -- to implement --------------------------------------------------------------------------
    def _open(self) -> None:
        """Acquire the device or file. Raise :class:`DeviceError` (or ``OSError``) on failure."""

    def _read(self, timeout_s: float | None) -> Frame | None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what ``_open`` acquired. Called at most once, only after ``_open``."""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def next_due_ns(self) -> int | None:
        return None

    def open(self) -> None:
        if self._state == "open":
            return
        if self._state == "closed":
            raise DeviceError(f"{type(self).__name__} is closed; make a new one")
        self._open()
        self._state = "open"

    def read(self, timeout_s: float | None = None) -> Frame | None:
        if self._state != "open":
            raise DeviceError(f"{type(self).__name__} is not open (state: {self._state})")
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0 or None, got {timeout_s}")
        frame = self._read(timeout_s)
        if frame is not None:
            self.frames_read += 1
        return frame

    def close(self) -> None:
        if self._state == "closed":
            return
        was_open, self._state = self._state == "open", "closed"
        if was_open:
            self._close()

    def __enter__(self) -> Self:
        self.open()
        return self
