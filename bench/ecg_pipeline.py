"""ECG gateway benchmark: N simulated wearables -> ECG service -> subscriber, through real
sockets and processes on this machine. Prints JSON.

    python -m bench.ecg_pipeline --streams 200 --seconds 30
    python -m bench.ecg_pipeline --sweep 200,400,600,800,1000 --seconds 20 --json runs/ecg.json

- Users: the first ``--users`` cohort subjects are enrolled (20 beats of session 0, offline)
  into a fresh template store, so every beat is matched against real templates.
- A **source** process plays ``--streams`` wearables (wearable ``i`` is cohort subject
  ``i % users``, session 1, with that session's own noise) at ``--fs`` Hz in ``--chunk-ms``
  chunks on a fixed schedule, staggered across streams. A chunk is sent when its last sample is
  captured; its header ``t_ns`` is then the capture time of its first sample, so the chunk ends
  at the moment it is sent (a source starved of CPU is not billed to the service). Its PUSH
  socket queues without bound: a service that falls behind shows it as latency.
- The **subscriber** (this process) receives every result and error. Decision latency is
  measured from the capture time of the last sample of the chunk that completed the beat (the
  result header's ``t_ns``: the moment the service could first have the beat) to receipt;
  ``capture_latency_ms`` is measured from the capture of the last sample the beat needs
  (``end_t_ns``), which adds the wearable's own chunk buffering (0 .. chunk) on top.
- Loss: the service's accounting must explain every chunk (consumed into a stream's state, or
  answered with an error) and every beat it made (delivered, dropped with a reason, or an
  error): ``unexplained`` must be 0. Beats delivered (good or flagged by signal quality) are
  compared with the true R peaks the simulator placed in the signal sent.

``--sweep`` runs one service per N and reports the largest N whose p99 decision latency is
within ``--target-ms`` (100 ms) and the largest within 50 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench import harness
from engines.ecg.frontend import BEAT_POST_S, BEAT_PRE_S
from stream.results import ResultsClient


def _signals(streams: int, users: int, fs_hz: float, seconds: float, seed: int
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Session-1 signals (float32 mV) and true R indices of every wearable."""
    from devices import cohort_subject, simulate_record

    cache: dict[int, Any] = {}
    signals, peaks = [], []
    for i in range(streams):
        subject = i % users
        if subject not in cache:
            cache[subject] = simulate_record(cohort_subject(subject, seed=seed), 1,
                                             fs_hz=fs_hz, duration_s=seconds)
        record = cache[subject]
        signals.append(record.signal)
        peaks.append(record.r_peaks)
    return signals, peaks


def source_main(*, endpoint: str, signals: list[np.ndarray], fs_hz: float, chunk_ms: float,
                report: Any) -> None:
    """Send every signal in chunks on the schedule (starting 0.2 s after the process is ready),
    then report ``{"chunks", "chunk_samples", "max_lag_ms"}``."""
    from stream.wire import data_message, encode

    n = max(1, round(fs_hz * chunk_ms / 1e3))
    chunks = min(len(s) for s in signals) // n
    streams = len(signals)
    period_ns = n * 1e9 / fs_hz
    ctx = zmq.Context()
    push = harness.push_socket(ctx, endpoint)
    start_ns = time.time_ns() + 200_000_000
    span_ns = round((n - 1) * 1e9 / fs_hz)
    schedule = harness.Schedule(start_ns=start_ns, rounds=chunks, streams=streams,
                                period_ns=period_ns, offset=1)
    for k, i, now in schedule:
        chunk = signals[i][k * n:(k + 1) * n]
        push.send_multipart(encode(data_message(
            "ecg", f"w{i}", k, chunk, t_ns=now - span_ns, fs=fs_hz)))
    push.close()
    ctx.term()
    report.send({"chunks": chunks, "chunk_samples": n,
                 "max_lag_ms": schedule.max_lag_ns / 1e6})
    report.close()


def _collect(results: ResultsClient, source: Any, report: Any, quiet_s: float
             ) -> dict[str, Any]:
    from stream.wire import ERROR_KIND

    latencies: list[float] = []
    capture: list[float] = []
    beats: dict[str, int] = {}
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    src: dict[str, Any] | None = None
    last_rx = time.monotonic()
    while True:
        if src is None and report.poll():
            src = report.recv()
        if src is not None and time.monotonic() - last_rx > quiet_s:
            break
        if src is None and not source.is_alive() and not report.poll():
            raise RuntimeError(f"the source process died (exit code {source.exitcode})")
        for msg, now in results.receive(0.1):
            last_rx = time.monotonic()
            body = msg.payload
            if msg.kind == ERROR_KIND:
                code = str(body.get("code"))
                errors[code] = errors.get(code, 0) + 1
            elif body.get("type") == "status":
                statuses[str(body.get("status"))] = statuses.get(str(body.get("status")), 0) + 1
            else:
                beats[msg.stream] = beats.get(msg.stream, 0) + 1
                latencies.append((now - int(msg.header["t_ns"])) / 1e6)
                capture.append((now - int(body["end_t_ns"])) / 1e6)
    assert src is not None
    return {"beats": beats, "statuses": statuses, "errors": errors, "latency": latencies,
            "capture": capture, "source": src}


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) if values else np.zeros(1)
    return {"p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)}


def run_once(args: argparse.Namespace, streams: int, db: Path, mp: Any) -> dict[str, Any]:
    from stream.paths.ecg import EcgSettings
    from stream.service import Service, ServiceConfig

    signals, peaks = _signals(streams, args.users, args.fs, args.seconds, args.seed)
    config = ServiceConfig(
        path="ecg", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=args.backend, settings=EcgSettings(templates=db), shards=args.shards,
        workers=args.workers,
        max_batch=args.max_batch, max_wait_us=args.max_wait_us, queue_depth=args.queue_depth,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    with Service(config) as service:
        pids = service.pids
        cpu0 = {name: harness.cpu_seconds(pid) for name, pid in pids.items()}
        with ResultsClient(service.bound_publish, lossless=True, settle_s=0.5) as results, \
                harness.load_process(mp, source_main, name="bench-ecg-source",
                             endpoint=service.bound_ingest, signals=signals, fs_hz=args.fs,
                             chunk_ms=args.chunk_ms) as (source, report):
            got = _collect(results, source, report, quiet_s=args.drain)
        cpu = {name: harness.cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        service.stop()
        summary = service.summary()
    sent_samples = got["source"]["chunks"] * got["source"]["chunk_samples"]
    # A beat needs BEAT_PRE_S before and BEAT_POST_S after its R peak.
    pre, post = BEAT_PRE_S * args.fs, BEAT_POST_S * args.fs
    expected = sum(int(np.sum((p >= pre) & (p < sent_samples - post))) for p in peaks)
    delivered_beats = sum(got["beats"].values())
    chunks_sent = got["source"]["chunks"] * streams
    duration_s = got["source"]["chunks"] * got["source"]["chunk_samples"] / args.fs
    return {
        "streams": streams,
        "chunks_sent": chunks_sent,
        "chunks_per_s": round(chunks_sent / duration_s, 1),
        "beats_delivered": delivered_beats,
        "beats_in_signal": expected,
        "beats_per_s": round(delivered_beats / duration_s, 1),
        "status_results": got["statuses"],
        "errors_seen": got["errors"],
        "decision_latency_ms": _pct(got["latency"]),
        "capture_latency_ms": _pct(got["capture"]),
        "source_max_lag_ms": round(got["source"]["max_lag_ms"], 2),
        "service_accounting": harness.service_accounting(summary, per_input=False),
        "cpu_s_per_s": {name: round(c / duration_s, 3) for name, c in cpu.items()},
    }



def enrol_users(db: Path, users: int, seed: int) -> float:
    """Enrol cohort subjects ``0..users-1`` from 20 beats of session 0; returns seconds."""
    from devices import cohort_subject, simulate_record
    from engines.ecg.enrolment import embed_beats, enrolment_beats
    from engines.ecg.specs import ECG_SPECS
    from engines.ecg.templates import TemplateStore

    t0 = time.perf_counter()
    spec = ECG_SPECS["embedding"]
    model = spec.load()
    with TemplateStore(db) as store:
        for subject in range(users):
            record = simulate_record(cohort_subject(subject, seed=seed), 0, fs_hz=250.0,
                                     duration_s=40.0)
            beats = enrolment_beats(record.signal, record.fs_hz, max_beats=20).samples()
            store.enroll(f"subject-{subject}", embed_beats(spec, beats, model=model),
                         model_id=spec.weights_sha256())
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--sweep", default=None, help="comma-separated stream counts")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fs", type=float, default=250.0)
    parser.add_argument("--chunk-ms", type=float, default=250.0)
    parser.add_argument("--users", type=int, default=18)
    parser.add_argument("--seed", type=int, default=0)
    harness.add_service_options(parser, workers=1)
    parser.add_argument("--drain", type=float, default=3.0,
                        help="stop listening this long after the last result")
    parser.add_argument("--target-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.streams]
    mp = multiprocessing.get_context("spawn")
    runs = []
    with tempfile.TemporaryDirectory(prefix="sigstream-ecg-bench-") as tmp:
        db = Path(tmp) / "users.sqlite"
        enrol_s = enrol_users(db, args.users, args.seed)
        for n in counts:
            runs.append(run_once(args, n, db, mp))
            print(json.dumps({"streams": n, "p99_ms": runs[-1]["decision_latency_ms"]["p99"]}),
                  file=sys.stderr, flush=True)

    def largest(limit_ms: float) -> int | None:
        ok = [r["streams"] for r in runs if r["decision_latency_ms"]["p99"] <= limit_ms
              and r["service_accounting"]["unexplained"] == 0]
        return max(ok) if ok else None

    result = {
        "bench": "ecg_pipeline",
        "machine": {"cpus": os.cpu_count()},
        "config": {k: v for k, v in vars(args).items() if k not in {"json"}} | {
            "json": None if args.json is None else str(args.json)},
        "enrolment_s": round(enrol_s, 2),
        "runs": runs,
        "largest_streams_p99_within_target": largest(args.target_ms),
        "largest_streams_p99_within_50ms": largest(50.0),
    }
    harness.emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
