"""A real sound device made of ALSA ``file`` PCMs, for the tests (fixture: ``sound_device``
in conftest.py).

The device (:class:`FileDevice`) is ALSA's ``file`` plugin over the ``null`` PCM, configured by
a file that ``ALSA_CONFIG_PATH`` points at; PortAudio lists it like a sound card. What the
plugin does, found by experiment (alsa-lib 1.2.8, PortAudio 19.6):

- ``format "raw"``: the files hold the stream's own samples, headerless and interleaved, in the
  format, rate and channel count the application opened (PortAudio opens the PCM without
  ``plug``): a 16 kHz mono int16 stream reads/writes little-endian int16, a float32 stream
  float32. Any rate and 1..128 channels are accepted, so nothing is ever resampled by ALSA.
- The ``null`` slave has no clock: the device runs as fast as its files let it. Capture reads
  the ``infile`` at full speed; once it is used up the plugin keeps returning its stale ring
  buffer (a loop of the last ``buffer_size`` frames) without any error. Playback writes the
  ``file`` at full speed, starting with one buffer of silence (PortAudio's priming).
- So the files here are FIFOs that this process holds open at both ends: capture reads exactly
  what :meth:`FileDevice.feed` wrote, then waits for more (a microphone in a silent room that
  delivers nothing); playback is paced by the thread that drains the output FIFO at
  ``pace_bytes_s``. A short read (data that ends mid-period) fills the rest of the period with
  stale samples, so feeds are whole blocks, written before the stream starts or at most 4 KiB
  (atomic pipe writes).
- The capture side also writes what it captures to its ``file``. Closing the reading end of a
  FIFO the plugin writes makes its next write fail (EPIPE): PortAudio's stream stops with an
  error, exactly as when a USB device is unplugged; :meth:`FileDevice.unplug` does that.
- A capture thread waiting on an empty infile cannot be stopped (PortAudio joins it), so
  every test ends its microphone with an unplug (:func:`recording`).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def portaudio_or_skip() -> Any:
    if sys.platform != "linux":
        pytest.skip("the test sound device is an ALSA file PCM (Linux only)")
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: no libportaudio2
        pytest.skip(f"PortAudio is not available (apt-get install libportaudio2): {exc}")
    return sounddevice


class FileDevice:
    """A sound card made of ALSA ``file`` PCMs and three FIFOs (see the module docstring).

    ``sigstream_fixture``: capture reads ``in.fifo`` (and copies to ``cap.fifo``), playback
    writes ``out.fifo``. ``sigstream_spare``: playback only, into /dev/null.
    """

    NAME = "sigstream_fixture"
    SPARE = "sigstream_spare"

    def __init__(self, root: Path, pace_bytes_s: float = 4 * 16_000 * 4) -> None:
        fifos = {name: root / f"{name}.fifo" for name in ("in", "cap", "out")}
        for path in fifos.values():
            os.mkfifo(path)
        # Holding both ends: the plugin's opens never block, and fed data waits in the pipe.
        self._in = os.open(fifos["in"], os.O_RDWR)
        self._cap = os.open(fifos["cap"], os.O_RDWR | os.O_NONBLOCK)
        self._out = os.open(fifos["out"], os.O_RDWR | os.O_NONBLOCK)
        fcntl.fcntl(self._in, fcntl.F_SETPIPE_SZ, 1 << 20)  # room for a whole test signal
        fcntl.fcntl(self._cap, fcntl.F_SETPIPE_SZ, 1 << 20)  # never read
        fcntl.fcntl(self._out, fcntl.F_SETPIPE_SZ, 4096)  # a short leash: the drain is the clock
        self.config = root / "asound.conf"
        self.config.write_text(
            "</usr/share/alsa/alsa.conf>\n"
            f"pcm.{self.NAME} {{\n"
            "    type asym\n"
            f'    capture.pcm {{ type file  slave.pcm "null"  infile "{fifos["in"]}"'
            f'  file "{fifos["cap"]}"  format "raw" }}\n'
            f'    playback.pcm {{ type file  slave.pcm "null"  file "{fifos["out"]}"'
            '  format "raw" }\n'
            '    hint { show on  description "file-backed test device" }\n'
            "}\n"
            f"pcm.{self.SPARE} {{\n"
            "    type asym\n"
            '    playback.pcm { type file  slave.pcm "null"  file "/dev/null"  format "raw" }\n'
            "}\n"
        )
        self.pace_bytes_s = pace_bytes_s
        self.paused = False
        self._played = bytearray()
        self._stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="file-device-drain",
                                         daemon=True)
        self._drainer.start()

    def feed(self, samples: np.ndarray) -> None:
        """Queue samples (in the capture stream's dtype) for the device to capture."""
        data = samples.tobytes()
        assert os.write(self._in, data) == len(data)

    def played(self) -> np.ndarray:
        """Everything played so far, as float32 (stops the drain)."""
        self._stop.set()
        self._drainer.join()
        while True:
            try:
                chunk = os.read(self._out, 65536)
            except BlockingIOError:
                break
            self._played.extend(chunk)
        return np.frombuffer(bytes(self._played), dtype="<f4")

    def unplug(self) -> None:
        """Close our ends: capture gets EOF then EPIPE, playback EPIPE. Safe twice."""
        self._stop.set()
        self._drainer.join()
        for name in ("_cap", "_in", "_out"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def _drain(self) -> None:
        budget, last = 0.0, time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if not self.paused:  # up to 20 ms of catching up, so a stall does not bank time
                budget = min(budget + (now - last) * self.pace_bytes_s, 0.02 * self.pace_bytes_s)
            last = now
            if budget >= 4:
                try:
                    chunk = os.read(self._out, int(budget))
                except BlockingIOError:
                    chunk = b""
                budget -= len(chunk)
                self._played.extend(chunk)
            time.sleep(0.002)
