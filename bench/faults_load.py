"""Rows 7-9 of :mod:`bench.faults`, load and memory: ``bench/overload.py`` as is, a subscriber
that never reads under a flood of long error echoes, and many distinct ECG stream ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import msgpack
import numpy as np
import zmq

from bench.faults_rig import (
    Answers,
    Setup,
    accounting,
    open_push,
    serves_new_stream,
    service,
    slow_subscriber_and_flood,
)
from bench.harness import REPO, cpu_seconds, peak_mb, poll_until
from bench.soak import rss_mb


def _mb(pid: int) -> float | None:
    value = rss_mb(pid)
    return None if value is None else round(value, 1)



def row_overload(setup: Setup) -> dict[str, Any]:
    path = setup.tmp / "overload.json"
    cmd = [sys.executable, str(REPO / "bench" / "overload.py"), "--backend", setup.backend,
           "--json", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          errors="replace")
    if not path.exists():
        return {"error": f"bench/overload.py exit {proc.returncode}", "stderr": proc.stderr[-800:]}
    result = json.loads(path.read_text())
    over = result["phases"]["overload"]
    return {"command": "python bench/overload.py --backend " + setup.backend,
            "exit_code": proc.returncode,
            "overload_p50_ms": over["p50_ms"], "overload_p99_ms": over["p99_ms"],
            "recovery_s": result["recovery_s"], "unexplained": result["unexplained"],
            "targets": result["targets"], "ok": all(result["targets"].values()),
            "result": result}


def row_slow_subscriber(setup: Setup) -> dict[str, Any]:
    n_bad = 20_000
    with service(setup) as svc:
        answers = Answers(svc.bound_publish)
        answers.wait_live(svc.bound_ingest)
        ctx: zmq.Context[Any] = zmq.Context()
        slow, flood = slow_subscriber_and_flood(ctx, svc.bound_publish, svc.bound_ingest)
        publisher = svc.pids["publisher"]
        time.sleep(0.5)
        before = _mb(publisher)
        payload = bytes(2048)
        try:
            for seq in range(n_bad):
                flood.send_multipart([msgpack.packb(
                    {"v": 1, "kind": "spectrum", "stream": "bad", "seq": seq,
                     "t_ns": time.time_ns(), "dtype": "x" * 8000, "shape": [512]}), payload])
                if seq % 100 == 99:
                    time.sleep(0.05)  # the good subscriber, a thread here, keeps up
            answered = answers.settle(["bad"], {"bad": n_bad}, timeout_s=120.0)
            after = _mb(publisher)
            time.sleep(5.0)
            idle = _mb(publisher)
            peak = peak_mb(publisher)
            serves = serves_new_stream(svc, answers, "after")
            codes = answers.codes(["bad"])
            lens = _echo_len(svc, answers)
            restarted = {k: v for k, v in svc.restarts.items() if v}
        finally:
            slow.close(0)
            flood.close(0)
            ctx.term()
            answers.close()
    out = {"bad_messages": n_bad, "answered_to_good_subscriber": sum(codes.values()),
           "all_answered": answered, "answers": codes,
           "publisher_rss_mb": {"before": before, "after": after, "after_5s_idle": idle,
                                "peak": peak},
           "echoed_reason_chars": lens, "stages_restarted": restarted, "serves_after": serves}
    growth = (after or 0) - (before or 0)
    out["ok"] = bool(answered and serves and growth < 100 and not restarted)
    return out


def _echo_len(svc: Any, answers: Answers) -> int | None:
    """Characters of the reason in the answer to one more 8,000-character dtype."""
    from stream.wire import decode

    ctx: zmq.Context[Any] = zmq.Context()
    sub, push = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH)
    for sock in (sub, push):
        sock.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"error/echo")
    sub.connect(svc.bound_publish)
    push.connect(svc.bound_ingest)
    try:
        header = {"v": 1, "kind": "spectrum", "stream": "echo", "seq": 0, "t_ns": time.time_ns(),
                  "dtype": "x" * 8000, "shape": [512]}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            push.send_multipart([msgpack.packb(header), bytes(2048)])
            if sub.poll(500):
                msg = decode(sub.recv_multipart(), topic=True)
                return len(str(msg.payload.get("reason", "")))
        return None
    finally:
        sub.close()
        push.close()
        ctx.term()


def row_ecg_streams(setup: Setup) -> dict[str, Any]:
    from stream.wire import data_message, encode

    n = setup.ecg_streams
    # Every chunk must reach its stage to measure a new stream's cost: the door blocks the
    # sender instead of shedding, with no deadline.
    with service(setup, "ecg", queue_policy="block", deadline_ms=3_600_000) as svc:
        ingest = svc.pids["ingest"]
        time.sleep(1.0)
        before, cpu0 = _mb(ingest), cpu_seconds(ingest)
        chunk = (np.sin(np.arange(62) / 5.0) * 0.5).astype(np.float32)
        ctx, push = open_push(svc.bound_ingest)
        t0 = time.monotonic()
        try:
            for i in range(n):
                push.send_multipart(encode(data_message("ecg", f"s{i}", 0, chunk, fs=250.0)))

            def done() -> bool:
                acc = accounting(svc.summary())
                explained = acc["received"] - acc["unexplained"]
                return acc["received"] >= n and explained >= n

            finished = poll_until(done, 900.0, poll_s=0.5)
            elapsed = time.monotonic() - t0
            time.sleep(2 * svc.config.stats_interval_s)
            after, cpu1, peak = _mb(ingest), cpu_seconds(ingest), peak_mb(ingest)
            acc = accounting(svc.summary())
            restarted = {k: v for k, v in svc.restarts.items() if v}
        finally:
            push.close(0)
            ctx.term()
    out = {"streams": n, "all_consumed": finished, "seconds": round(elapsed, 1),
           "ingest_rss_mb": {"before": before, "after": after, "peak": peak},
           "ingest_rss_kb_per_stream_kept": None if before is None or after is None
           else round((after - before) * 1024 / min(n, svc.config.max_streams), 1),
           "ingest_cpu_ms_per_new_stream": round(1e3 * (cpu1 - cpu0) / n, 3),
           "max_streams_kept": svc.config.max_streams, "service_accounting": acc,
           "stages_restarted": restarted,
           "door": "queue_policy block, deadline 1 h (every chunk processed)"}
    out["ok"] = bool(finished and not restarted and acc["unexplained"] == 0
                     and (after or 0) - (before or 0) < 400)
    return out
