"""Rows 1-2 of :mod:`bench.faults`, hostile messages: a killer ``shape`` to every service and to
``codec-rx``, and ``seq`` at the edges of its range.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from bench.faults_rig import (
    PROBE,
    Answers,
    CliService,
    Setup,
    open_push,
    serves_new_stream,
    service,
    spectra,
)
from bench.fuzz import killers
from bench.harness import free_port, poll_until


def row_killer_shape(setup: Setup) -> dict[str, Any]:
    out: dict[str, Any] = {path: _killer_service(setup, path) for path in ("spectral", "ecg")}
    out["codec-rx"] = _killer_codec_rx(setup)
    out["ok"] = all(out[p]["service_running"] and out[p]["answered"] and out[p]["serves_after"]
                    and not out[p]["stages_restarted"] for p in ("spectral", "ecg")) and bool(
        out["codec-rx"].get("running_after"))
    return out


def _killer_service(setup: Setup, path: str) -> dict[str, Any]:
    kind, payload, fs = (("spectrum", np.zeros(512, np.float32), None) if path == "spectral"
                         else ("ecg", np.zeros(62, np.float32), 250.0))
    with service(setup, path) as svc:
        answers = Answers(svc.bound_publish)
        ctx, push = open_push(svc.bound_ingest)
        try:
            live = answers.wait_live(svc.bound_ingest)
            pids = dict(svc.pids)
            push.send_multipart(killers(kind, "killer", payload, fs=fs)["shape"][0])
            answered = poll_until(lambda: answers.count("killer") >= 1, 30.0)
            counted = poll_until(lambda: "killer" in svc.summary()
                                 and svc.summary()["killer"].errors_total >= 1, 10.0)
            time.sleep(1.0)
            before = answers.count(PROBE)
            if path == "spectral":
                serves = serves_new_stream(svc, answers, "after")
            else:  # one chunk makes no beat: a probe's error answer shows ingest reads on
                push.send_multipart([msgpack.packb({"v": 1, "stream": PROBE, "seq": 1}), b""])
                serves = poll_until(lambda: answers.count(PROBE) > before, 30.0)
            s = svc.summary().get("killer")
            return {
                "subscription_live": live,
                "answered": answers.codes(["killer"]) if answered else None,
                "counted_errors": None if s is None or not counted else dict(s.errors),
                "service_running": svc.running and svc.failure is None,
                "stages_restarted": {k: v for k, v in svc.restarts.items() if v},
                "stage_pids_unchanged": dict(svc.pids) == pids,
                "serves_after": serves,
            }
        finally:
            push.close(0)
            ctx.term()
            answers.close()


def _killer_codec_rx(setup: Setup) -> dict[str, Any]:
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="codec-rx-", dir=setup.tmp))
    rx = CliService("codec-rx", "--bind", f"tcp://127.0.0.1:{port}", "--output",
                    str(work / "x.wav"), "--stream", "mic", "--backend", setup.backend,
                    "--report", str(work / "rx.json")).start()
    try:
        if not rx.wait_ready(300):
            return {"error": "codec-rx never listened", "log": rx.lines[-5:]}
        ctx, push = open_push(f"tcp://127.0.0.1:{port}")
        try:
            push.send_multipart(killers("codec", "mic", np.zeros(4, np.uint8), fs=16000.0)
                                ["shape"][0])
            time.sleep(2.0)
            assert rx.proc is not None
            running = rx.proc.poll() is None
        finally:
            push.close(0)
            ctx.term()
        rc = rx.stop()
        report = json.loads((work / "rx.json").read_text()) if (work / "rx.json").exists() else {}
        return {"running_after": running, "exit_code_on_sigterm": rc,
                "counted_errors": report.get("errors"), "error_lines": rx.errors()}
    finally:
        rx.kill()


def row_seq_wrap(setup: Setup) -> dict[str, Any]:
    pool = spectra()
    with service(setup) as svc:
        answers = Answers(svc.bound_publish)
        ctx, push = open_push(svc.bound_ingest)
        try:
            answers.wait_live(svc.bound_ingest)
            pids = dict(svc.pids)
            for frames in killers("spectrum", "wrap", pool[0], fs=None)["seq"]:
                push.send_multipart(frames)
            answers.settle(["wrap"], {"wrap": 1}, timeout_s=30.0)
            time.sleep(0.5)
            got = answers.answered("wrap")
            stats_before = svc.stats().get("ingest", {}).get("ledger", {}).get("wrap")
            time.sleep(3 * svc.config.stats_interval_s + 0.5)  # reports keep coming, packed
            s = svc.summary().get("wrap")
            serves = serves_new_stream(svc, answers, "after")
            out = {
                "answers": {str(seq): v for seq, v in sorted(got.items())},
                "answered_messages": sum(len(v) for v in got.values()),
                "service_running": svc.running and svc.failure is None,
                "stages_restarted": {k: v for k, v in svc.restarts.items() if v},
                "stage_pids_unchanged": dict(svc.pids) == pids,
                "stats_reported": stats_before is not None,
                "summary": None if s is None else {
                    "received": s.received, "delivered": s.delivered, "gaps": s.gaps,
                    "resets": s.resets, "unexplained": s.unexplained},
                "serves_after": serves,
            }
        finally:
            push.close(0)
            ctx.term()
            answers.close()
    out["ok"] = (out["answered_messages"] == 4 and out["service_running"] and out["serves_after"]
                 and not out["stages_restarted"])
    return out
