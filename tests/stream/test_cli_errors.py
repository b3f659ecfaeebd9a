"""The CLI's one error boundary: a project error or a missing file is one line on stderr and
exit status 2; ``-v`` adds the traceback. And its start: building the parser (``--help``)
loads none of the heavy libraries. Real ``sigstream`` processes, nothing mocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: What only a running command may load: ``sigstream --help`` must start in a blink.
HEAVY_MODULES = ("numpy", "zmq", "msgpack", "prometheus_client", "scipy", "torch")


def _sigstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True,
                          text=True, timeout=180)


def test_a_project_error_is_one_line_and_status_2(tmp_path: Path) -> None:
    # A missing key folder: a SecurityError, raised before any socket is made.
    run = _sigstream("run", "spectral", "--keys", str(tmp_path / "missing"))
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [f"sigstream: no key file {tmp_path / 'missing' / 'server.key_secret'}"]


def test_verbose_adds_the_traceback_before_the_line(tmp_path: Path) -> None:
    run = _sigstream("-v", "run", "spectral", "--keys", str(tmp_path / "missing"))
    assert run.returncode == 2, run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert "SecurityError: no key file" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("sigstream: no key file ")


def test_a_missing_input_file_is_one_line_and_status_2(tmp_path: Path) -> None:
    # The builtin FileNotFoundError (not a SigstreamError) takes the same road.
    missing = tmp_path / "nope.wav"
    run = _sigstream("run", "codec-tx", "--input", str(missing), "--connect",
                     "tcp://127.0.0.1:9", "--backend", "eager")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"sigstream: no audio file {missing}"


@pytest.mark.parametrize("argv", [["--help"], ["tap", "--help"]])
def test_help_loads_no_heavy_module(argv: list[str]) -> None:
    # A fresh interpreter: this one has long imported them all.
    code = (
        "import sys, stream.cli\n"
        "try:\n"
        "    stream.cli._parser().parse_args(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"loaded = [name for name in {HEAVY_MODULES!r} if name in sys.modules]\n"
        "assert not loaded, f'the parser loaded {loaded}'\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage: sigstream")


def test_the_cli_backends_are_the_engines() -> None:
    # Spelled out in stream.service_config so that the parser loads no numpy.
    from engines.engine import BACKENDS as ENGINE_BACKENDS
    from stream.service_config import BACKENDS

    assert BACKENDS == ("auto", *ENGINE_BACKENDS)
