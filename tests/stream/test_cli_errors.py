"""The CLI's one error boundary: a project error or a missing file is one line on stderr and
exit status 2; ``-v`` adds the traceback. Real ``sigstream`` processes, nothing mocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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
