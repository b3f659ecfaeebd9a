"""Fixtures shared by the test packages: a real sound device made of ALSA ``file`` PCMs
(:class:`sound_device.FileDevice`; how it works is in that module's docstring).

Every test runs with one BLAS/OpenMP thread and one torch thread (set here, before numpy or
torch is imported; processes the tests start inherit the environment), so the suite behaves the
same on a loaded 2-core machine as on an idle one.

PortAudio reads the ALSA configuration when it initialises; the fixture re-initialises it
after setting ``ALSA_CONFIG_PATH``, and again after restoring it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from sound_device import FileDevice, portaudio_or_skip  # noqa: E402  (imports numpy)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


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


