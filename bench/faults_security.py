"""Rows 13-16 of :mod:`bench.faults`, security: the security tests (hijack, claims, codec link
takeover, binds), non-loopback binds without keys, and where ``/metrics`` listens.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from typing import Any

from bench.faults_rig import (
    CliService,
    Setup,
)
from bench.harness import REPO, cli, free_port, measured


def _listening(port: int) -> list[str]:
    """Addresses listening on TCP ``port`` (``/proc/net/tcp`` and ``tcp6``)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for row in f.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    raw = bytes.fromhex(addr)
                    if len(raw) == 4:
                        out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        out.append(socket.inet_ntop(socket.AF_INET6, words))
    return out


def row_security(setup: Setup) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "tests/stream/test_security.py"], cwd=REPO, capture_output=True, text=True,
        timeout=600, errors="replace")
    tests = {m.group(2): m.group(1) for m in re.finditer(
        r"^(PASSED|FAILED|ERROR|SKIPPED)\S* tests/stream/test_security\.py::(\S+)",
        proc.stdout, re.M)}
    rows = {"13_enrolment_hijack": "hijack", "14_claim_enumeration": "claim",
            "15_codec_link_takeover": "codec_link", "16_binds": "bind"}
    out: dict[str, Any] = {
        "pytest_exit_code": proc.returncode, "tests": tests,
        "rows": {row: {t: r for t, r in tests.items() if key in t} for row, key in rows.items()},
        "pytest_tail": proc.stdout.strip().splitlines()[-1:] if proc.stdout else None,
    }
    refusals = {}
    for name, argv in {
        "run spectral --ingest tcp://0.0.0.0:0": ["run", "spectral", "--ingest",
                                                   "tcp://0.0.0.0:0"],
        "run codec-rx --bind tcp://0.0.0.0:0": ["run", "codec-rx", "--bind", "tcp://0.0.0.0:0",
                                                "--output", str(setup.tmp / "never.wav"),
                                                "--stream", "mic"],
    }.items():
        refusals[name] = measured(cli(*argv), timeout_s=120)
    out["non_loopback_without_keys"] = refusals
    port = free_port()
    args = ["spectral", "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
            "--backend", setup.backend, "--metrics-port", str(port)]
    if setup.weights is not None:
        args += ["--weights", str(setup.weights)]
    svc = CliService(*args).start()
    try:
        ready = svc.wait_ready()
        out["metrics_port"] = {"ready": ready, "listening_on": _listening(port) if ready else None}
        svc.stop()
    finally:
        svc.kill()
    out["ok"] = (proc.returncode == 0 and all(
        r["exit_code"] == 2 and r["stderr_lines"] == 1 for r in refusals.values())
        and out["metrics_port"]["listening_on"] == ["127.0.0.1"])
    return out
