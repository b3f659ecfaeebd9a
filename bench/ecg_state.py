"""Per-stream state of the ECG path: bytes per stream, cost of a new stream, RSS for N
streams. Pure CPU, no sockets; prints JSON (under a minute with the defaults).

    python -m bench.ecg_state
    python -m bench.ecg_state --streams 4096 --seconds 13 --json runs/ecg_state.json

- ``new_stream_us``: ``EcgPath.stream_stage(id)`` plus its first ``process`` call (one chunk),
  mean over ``--new`` fresh stream ids (the front end's filters are designed once per rate,
  before the timing starts, as in a running service).
- ``state_bytes_per_stream``: numpy buffers a stream owns after ``--seconds`` of ECG
  (``BeatFrontend.state_bytes``); ``traced_bytes_per_stream``: everything tracemalloc sees
  allocated and kept per stream (Python objects included), over ``--traced`` streams.
- ``rss_mb``: resident memory before and after ``--streams`` streams each fed ``--seconds``
  of ECG, and the growth per stream.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import emit
from devices import cohort_subject, simulate_record
from stream.paths.ecg.stages import EcgPath, EcgStreamStage
from stream.wire import Message, data_message


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _chunks(fs_hz: float, chunk_ms: float, seconds: float) -> list[Message]:
    """One wearable's messages (shared by every stream: a stage never looks at the id)."""
    signal = simulate_record(cohort_subject(0), 1, fs_hz=fs_hz, duration_s=seconds).signal
    n = max(1, round(chunk_ms * fs_hz / 1000))
    t0 = time.time_ns()
    return [
        data_message("ecg", "w", k, signal[i : i + n], t_ns=t0 + round(i * 1e9 / fs_hz),
                     fs=fs_hz)
        for k, i in enumerate(range(0, signal.size, n))
    ]


def _feed(stage: EcgStreamStage, msgs: list[Message]) -> None:
    for msg in msgs:
        stage.process(msg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = EcgPath(templates=Path(tmp) / "users.sqlite")
    msgs = _chunks(args.fs, args.chunk_ms, args.seconds)
    path.stream_stage("warm").process(msgs[0])  # designs the rate's filters once

    t = time.perf_counter()
    for i in range(args.new):
        path.stream_stage(f"new-{i}").process(msgs[0])
    new_us = (time.perf_counter() - t) / args.new * 1e6

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    traced = [path.stream_stage(f"t-{i}") for i in range(args.traced)]
    for stage in traced:
        _feed(stage, msgs)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced_bytes = sum(d.size_diff for d in after.compare_to(before, "filename"))
    frontend = traced[0].frontend
    assert frontend is not None
    state_bytes = frontend.state_bytes
    del traced, before, after
    gc.collect()

    rss0 = _rss_bytes()
    t = time.perf_counter()
    stages = [path.stream_stage(f"s-{i}") for i in range(args.streams)]
    for stage in stages:
        _feed(stage, msgs)
    feed_s = time.perf_counter() - t
    gc.collect()
    rss1 = _rss_bytes()
    return {
        "fs_hz": args.fs,
        "chunk_ms": args.chunk_ms,
        "seconds_per_stream": args.seconds,
        "new_stream_us": round(new_us, 1),
        "state_bytes_per_stream": state_bytes,
        "traced_bytes_per_stream": round(traced_bytes / args.traced),
        "streams": args.streams,
        "rss_mb": {"before": round(rss0 / 2**20, 1), "after": round(rss1 / 2**20, 1)},
        "rss_bytes_per_stream": round((rss1 - rss0) / args.streams),
        "ingest_us_per_chunk": round(feed_s / (args.streams * len(msgs)) * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000, help="streams held for the RSS")
    parser.add_argument("--seconds", type=float, default=13.0,
                        help="ECG per stream, s (>= the front end's 12 s history fills it)")
    parser.add_argument("--fs", type=float, default=250.0)
    parser.add_argument("--chunk-ms", type=float, default=250.0)
    parser.add_argument("--new", type=int, default=500, help="new streams timed")
    parser.add_argument("--traced", type=int, default=100, help="streams traced for bytes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
