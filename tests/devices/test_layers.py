"""The devices layer stays light: importing its modules loads neither torch nor the layers
above it (``engines``, ``stream``) nor ZeroMQ. Each case runs in a fresh interpreter, since
this one has long imported torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("engines", "stream", "torch", "zmq")


@pytest.mark.parametrize(
    "modules",
    [
        "devices.errors",  # the root of every project error: imported by all layers
        "devices.volumes",
        "devices.frames, devices.spectrometer",
    ],
)
def test_importing_loads_nothing_heavy(modules: str) -> None:
    code = (f"import sys, {modules}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, cwd=Path(__file__).resolve().parents[2])
    assert run.stdout.strip() == "[]", f"importing {modules} loaded {run.stdout.strip()}"
