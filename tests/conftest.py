"""Fixtures shared by the test packages: a real sound device made of ALSA ``file`` PCMs
(:class:`sound_device.FileDevice`; how it works is in that module's docstring).

PortAudio reads the ALSA configuration when it initialises; the fixture re-initialises it
after setting ``ALSA_CONFIG_PATH``, and again after restoring it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sound_device import FileDevice, portaudio_or_skip


def _reinitialise(sd: Any) -> None:
    sd._terminate()  # PortAudio reads the ALSA configuration only when it initialises
    sd._initialize()


@pytest.fixture
def sound_device(tmp_path: Path) -> Iterator[FileDevice]:
    sd = portaudio_or_skip()
    device = FileDevice(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALSA_CONFIG_PATH", str(device.config))
        _reinitialise(sd)
        try:
            yield device
        finally:
            device.unplug()
    _reinitialise(sd)  # back to this machine's own configuration


