"""Issue 10's table of attacks and faults, re-run against the current code: one figure per row
that a reader can set beside the table's "what happened" column. Prints JSON.

    python bench/faults.py                       # every row (about 10 minutes on 2 cores)
    python bench/faults.py --rows 1,3,kill9      # a subset, by number or name
    python bench/faults.py --json /tmp/faults.json --ecg-streams 20000

Every row is self-contained and bounded in time: it starts its own service (a
:class:`~stream.service.Service` in this process, its stages real processes, or ``sigstream``
itself as a subprocess where the row is about the command) on random ports of 127.0.0.1,
injects its fault, accounts for every message, and stops what it started. A row that fails or
times out reports ``error`` and the next row runs.

======  ================  ==========================================================================
row     name              what it does, and the figure
======  ================  ==========================================================================
1       killer_shape      ``shape: [0, 2**63]`` with an empty payload to the spectral and ECG
                          services and to ``sigstream run codec-rx``: answered, counted, alive
2       seq_wrap          four valid spectra, seq 0, 2**64-1, 0, 2**64-1: answers, service alive,
                          stats still packed and reported
3       kill9_worker      ``kill -9`` of a worker at 200 msg/s: restart time, ``worker_lost``
                          answers, what was sent meanwhile and never answered, unexplained
4       sigstop_worker    ``SIGSTOP`` of a worker for 5 s (default watchdog): noticed after, latency
                          of the results of what was sent after the stop, ``worker_lost`` answers
5       group_sigterm     SIGTERM to the process group of ``sigstream run spectral`` under load:
                          exit status, ERROR lines, accepted but unanswered, summary unexplained
6       early_senders     ``sigstream source ecg-sim`` started before ``sigstream run ecg`` binds:
                          heartbeats delivered vs dropped, chunks dropped
7       overload          ``bench/overload.py`` (5x for 20 s) run as is; its JSON embedded
8       slow_subscriber   a subscriber that never reads + 20,000 errors echoing an 8,000-character
                          dtype: publisher RSS before, peak, after, after 5 s idle
9       ecg_streams       ``--ecg-streams`` distinct ECG stream ids, one chunk each: ingest RSS
                          before/after, ingest CPU ms per new stream
10      enroll_file       ``sigstream ecg enroll --file`` on a 1 GiB sparse file and on digits then
                          1 GiB of NUL (default cap, and the cap raised to 2 GiB): peak RSS, wall
                          time, exit code, error line length
11      codec_decode      ``sigstream codec decode`` of a 200 KB .sgc of empty frames, a directory,
                          a missing output folder: exit code, output size, peak RSS
12      restart_source    ``sigstream source spectral-sim`` while the service is away ~20 s:
                          sent, answered, dropped, unanswered, each incarnation's account
13-16   security          ``pytest tests/stream/test_security.py`` (pass/fail per test), a
                          non-loopback bind without keys refused, ``--metrics-port`` on loopback
======  ================  ==========================================================================

Peak RSS of a command is ``/usr/bin/time -v``'s "Maximum resident set size" (else
``getrusage(RUSAGE_CHILDREN)`` of a wrapper process). Process RSS is ``VmRSS`` and its peak
``VmHWM`` (``/proc/<pid>/status``), CPU time ``utime + stime`` (``/proc/<pid>/stat``).
"""


from __future__ import annotations

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.faults_files import row_codec_decode, row_enroll_file
from bench.faults_load import row_ecg_streams, row_overload, row_slow_subscriber
from bench.faults_messages import row_killer_shape, row_seq_wrap
from bench.faults_processes import (
    row_early_senders,
    row_group_sigterm,
    row_kill9_worker,
    row_restart_source,
    row_sigstop_worker,
)
from bench.faults_rig import Setup
from bench.faults_security import row_security
from bench.harness import REPO, emit
from bench.pipeline import _weights


@dataclass(frozen=True)
class Row:
    number: str
    name: str
    old: str
    run: Callable[[Setup], dict[str, Any]]


ROWS: tuple[Row, ...] = (
    Row("1", "killer_shape", "ValueError in decode; the whole service exits (spectral, ECG); "
        "not answered nor counted; codec-rx exits", row_killer_shape),
    Row("2", "seq_wrap", "all answered, then OverflowError packing the stats; ingest dies, "
        "the service exits", row_seq_wrap),
    Row("3", "kill9_worker", "no restart: the service stops 3.6 s later; 621 of 721 sent "
        "meanwhile never answered; unexplained -154", row_kill9_worker),
    Row("4", "sigstop_worker", "not noticed; its messages answered up to 5 s late",
        row_sigstop_worker),
    Row("5", "group_sigterm", "the publisher dies by the signal; 'stage publisher died ... "
        "stopping the service' logged as an error", row_group_sigterm),
    Row("6", "early_senders", "171 of 364 heartbeats dropped (each answered dropped)",
        row_early_senders),
    Row("7", "overload", "delivered results 6 s (p50) to 14 s late; recovery 14-21 s",
        row_overload),
    Row("8", "slow_subscriber", "publisher RSS 123 -> 495 MB, not freed", row_slow_subscriber),
    Row("9", "ecg_streams", "ingest RSS 123 MB -> 1.5 GB (100,000 streams); 6.8 ms ingest CPU "
        "per new stream", row_ecg_streams),
    Row("10", "enroll_file", "1 GiB sparse: 9.7 GB RSS, 51 s; digits then 1 GiB NUL: 18 GB "
        "RSS, the error repeats the whole line", row_enroll_file),
    Row("11", "codec_decode", "200 KB of empty frames: a 179 MB WAV, 1.18 GB RSS; directory "
        "input or missing output folder: tracebacks", row_codec_decode),
    Row("12", "restart_source", "the source gives up after 5 s (restart ~23 s)",
        row_restart_source),
    Row("13-16", "security", "enrolment hijacked; claims enumerable; codec link taken over; "
        "/metrics and codec-rx on 0.0.0.0, no keys anywhere", row_security),
)


def _select(spec: str | None) -> list[Row]:
    if not spec:
        return list(ROWS)
    chosen: list[Row] = []
    for key in (k.strip() for k in spec.split(",") if k.strip()):
        match = [r for r in ROWS if key in (r.number, r.name) or (
            key.isdigit() and "-" in r.number
            and int(r.number.split("-")[0]) <= int(key) <= int(r.number.split("-")[1]))]
        if not match:
            raise SystemExit(f"unknown row {key!r}; choose from "
                             + ", ".join(f"{r.number} ({r.name})" for r in ROWS))
        chosen += [r for r in match if r not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=None,
                        help="comma-separated row numbers or names (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--model", default="resnet_unet")
    parser.add_argument("--weights", default=None, help="spectral weights (default: shipped)")
    parser.add_argument("--ecg-streams", type=int, default=100_000,
                        help="row 9: distinct ECG stream ids")
    parser.add_argument("--restart-s", type=float, default=20.0,
                        help="row 12: how long the service is away")
    args = parser.parse_args(argv)
    rows = _select(args.rows)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: "
                        "%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        weights, weights_note = _weights(args, Path(tmp))
        setup = Setup(backend=args.backend, weights=weights, tmp=Path(tmp),
                      ecg_streams=args.ecg_streams, restart_s=args.restart_s)
        result: dict[str, Any] = {"config": {
            "backend": args.backend, "spectral_weights": weights_note,
            "ecg_streams": args.ecg_streams, "restart_s": args.restart_s,
            "cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
            "commit": _commit()}, "rows": {}}
        for row in rows:
            t0 = time.monotonic()
            print(f"row {row.number} {row.name} ...", file=sys.stderr, flush=True)
            try:
                new = row.run(setup)
            except Exception as exc:  # one broken row must not hide the others
                new = {"error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()[-2000:], "ok": False}
            result["rows"][row.number] = {"name": row.name, "old": row.old,
                                          "seconds": round(time.monotonic() - t0, 1), "new": new}
            print(f"row {row.number} {row.name}: ok={new.get('ok')} "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        result["config"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)
    return 0 if all(r["new"].get("ok") for r in result["rows"].values()) else 1


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    return None


if __name__ == "__main__":
    sys.exit(main())
