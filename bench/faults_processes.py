"""Rows 3-6 and 12 of :mod:`bench.faults`, processes that die, stop or come and go: ``kill -9``
and ``SIGSTOP`` of a worker, SIGTERM to the whole process group, senders that start before the
service, and a service away for ``--restart-s`` under a running source.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.faults_rig import (
    DROP_CODES,
    Answers,
    CliService,
    Setup,
    accounting,
    flowing_load,
    service,
)
from bench.harness import REPO, LogTap, cli, free_port, poll_until


def _restarted(svc: Any, stage: str, old_pid: int) -> Callable[[], bool]:
    def done() -> bool:
        pid = svc.pids.get(stage)
        return (pid is not None and pid != old_pid
                and svc.stages.get(stage, {}).get("pid") == pid)
    return done


def _signal_stage(svc: Any, stage: str, signum: int) -> tuple[int, float]:
    """Send ``signum`` to ``stage``'s process: its pid, and the monotonic time it was sent."""
    pid = svc.pids[stage]
    at = time.monotonic()
    os.kill(pid, signum)
    return pid, at


def row_kill9_worker(setup: Setup) -> dict[str, Any]:
    streams = ("k9-a", "k9-b", "k9-c", "k9-d")
    with service(setup) as svc:
        with flowing_load(svc.bound_publish, svc.bound_ingest, streams,
                          rate_hz=200.0) as (answers, load):
            old, killed_at = _signal_stage(svc, "worker-0", signal.SIGKILL)
            back = poll_until(_restarted(svc, "worker-0", old), 120.0)
            back_at = time.monotonic()
            time.sleep(3.0)
            sent = load.stop()
            stopped_at = time.monotonic()
            answers.settle(list(streams), sent, timeout_s=60.0)
            meanwhile = load.sent_between(killed_at, stopped_at)
            never = sum(1 for s, seqs in meanwhile.items() for q in seqs
                        if q not in answers.answered(s))
            tally = answers.tally(sent)
            running = svc.running and svc.failure is None
            restarts = dict(svc.restarts)
        svc.stop(timeout_s=30)
        acc = accounting(svc.summary(), list(streams))
    out = {"rate_per_s": 200, "restarted": back,
           "restart_s": round(back_at - killed_at, 2) if back else None,
           "restarts": restarts, "service_running_after": running,
           "sent_from_kill_to_end": sum(len(v) for v in meanwhile.values()),
           "sent_meanwhile_never_answered": never,
           "worker_lost_answers": tally["answers"].get("worker_lost", 0),
           **tally, "service_accounting": acc}
    out["ok"] = bool(back and running and never == 0 and tally["unanswered"] == 0
                     and acc["unexplained"] == 0 and tally["duplicates"] == 0)
    return out


def row_sigstop_worker(setup: Setup) -> dict[str, Any]:
    streams = ("stop-a", "stop-b")
    tap = LogTap()
    with tap.attached(), service(setup) as svc:
        with flowing_load(svc.bound_publish, svc.bound_ingest, streams,
                          rate_hz=100.0) as (answers, load):
            old, stopped_at = _signal_stage(svc, "worker-1", signal.SIGSTOP)
            restarted = poll_until(_restarted(svc, "worker-1", old), 5.0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)  # if the watchdog has not killed it by now
            if not restarted:  # killed by now, or left running: a restart takes seconds
                restarted = poll_until(_restarted(svc, "worker-1", old), 120.0)
            back_at = time.monotonic()
            time.sleep(2.0)
            sent = load.stop()
            answers.settle(list(streams), sent, timeout_s=60.0)
            tally = answers.tally(sent)
            after = load.sent_between(stopped_at, back_at + 2.0)
            lat = [answers.latency_ms[s][q] for s, seqs in after.items() for q in seqs
                   if q in answers.latency_ms[s]]
            running = svc.running and svc.failure is None
        svc.stop(timeout_s=30)
        acc = accounting(svc.summary(), list(streams))
    watchdog = [(t, m) for t, _, m in tap.records if "sent nothing for" in m]
    said = re.search(r"sent nothing for ([\d.]+) s", watchdog[0][1]) if watchdog else None
    out = {
        "stopped_s": 5.0, "watchdog_s": 5.0, "rate_per_s": 100,
        "noticed": bool(watchdog),
        "noticed_after_s": round(watchdog[0][0] - stopped_at, 2) if watchdog else None,
        "silent_for_s_per_log": float(said.group(1)) if said else None,
        "restarted": restarted,
        "back_after_s": round(back_at - stopped_at, 2) if restarted else None,
        "results_after_stop": len(lat),
        "latency_after_stop_ms": None if not lat else {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1), "max": round(max(lat), 1)},
        "worker_lost_answers": tally["answers"].get("worker_lost", 0),
        "service_running_after": running, **tally, "service_accounting": acc,
    }
    out["ok"] = bool(restarted and running and tally["unanswered"] == 0
                     and acc["unexplained"] == 0)
    return out


def row_group_sigterm(setup: Setup) -> dict[str, Any]:
    args = ["spectral", "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
            "--backend", setup.backend]
    if setup.weights is not None:
        args += ["--weights", str(setup.weights)]
    svc = CliService(*args).start()
    try:
        if not svc.wait_ready():
            return {"error": "the service never became ready", "log": svc.lines[-10:]}
        ingest, publish = svc.endpoints()
        streams = ("term-a", "term-b")
        with flowing_load(publish, ingest, streams, rate_hz=150.0) as (answers, load):
            assert svc.proc is not None
            pgid = svc.proc.pid
            t0 = time.monotonic()
            os.killpg(pgid, signal.SIGTERM)  # what `systemctl stop` does, the load still running
            time.sleep(0.5)
            sent = load.stop()
            try:
                rc: int | None = svc.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                rc = None
            exit_s = time.monotonic() - t0
            answers.settle(list(streams), sent, timeout_s=10.0)
            time.sleep(1.0)
            left = [pid for pid in _group(pgid)]
            tally = answers.tally(sent)
            summary = svc.summary(list(streams))
            received = summary.get("received") if summary else None
            out = {"exit_code": rc, "exit_after_s": round(exit_s, 2),
                   "error_lines": svc.errors(), "group_processes_left": left,
                   "summary_total": summary, **tally,
                   "accepted_but_unanswered": None if received is None
                   else received - (tally["answered"]),
                   "not_accepted_after_sigterm": None if received is None
                   else tally["sent"] - received}
            out["ok"] = bool(rc == 0 and not out["error_lines"] and summary
                             and summary.get("unexplained") == 0
                             and out["accepted_but_unanswered"] == 0 and not left)
            return out
    finally:
        svc.kill()


def _group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def row_early_senders(setup: Setup) -> dict[str, Any]:
    pin, ppub = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="early-", dir=setup.tmp))
    streams, seconds = 4, 30.0
    answers = Answers(f"tcp://127.0.0.1:{ppub}", reconnect_ms=50)  # before anyone binds
    source = subprocess.Popen(
        cli("source", "ecg-sim", "--connect", f"tcp://127.0.0.1:{pin}", "--stream", "early",
            "--streams", str(streams), "--seconds", str(seconds)),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    source_at = time.monotonic()
    svc = CliService("ecg", "--ingest", f"tcp://127.0.0.1:{pin}", "--publish",
                     f"tcp://127.0.0.1:{ppub}", "--backend", setup.backend, "--templates",
                     str(work / "users.sqlite")).start()
    try:
        ready = svc.wait_ready()
        try:
            src_out, src_err = source.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            source.kill()
            src_out, src_err = source.communicate()
        names = re.findall(r"(early-\d+)=\d+", src_out)
        # Every chunk is consumed or answered; beats keep coming for a moment after the last.
        last = -1
        while True:
            time.sleep(2.0)
            now = sum(sum(answers.types[n].values()) for n in names) + sum(
                sum(len(v) for v in answers.answered(n).values()) for n in names)
            if now == last:
                break
            last = now
        rc = svc.stop()
        summary = svc.summary(names)
        sent = re.search(r"sent (\d+) messages.*dropped (\d+), unsent (\d+)", src_out)
        beats = sum(answers.types[n].get("beat", 0) for n in names)
        errors: Counter[str] = Counter()
        for n in names:
            for outs in answers.answered(n).values():
                errors.update(o for o in outs if o != "result")
        out = {
            "streams": streams, "source_seconds": seconds,
            "service_ready_after_source_started_s":
                round((svc.ready_at or time.monotonic()) - source_at, 2) if ready else None,
            "source_exit_code": source.returncode, "source_summary": src_out.strip()[-400:],
            "source_errors": src_err.strip()[-300:] or None,
            "chunks_sent": int(sent.group(1)) if sent else None,
            "chunks_dropped_by_source": int(sent.group(2)) if sent else None,
            "beats_delivered": beats,
            "status_results": sum(answers.types[n].get("status", 0) for n in names),
            "error_answers": dict(errors),
            "beats_dropped": sum(errors[c] for c in DROP_CODES),
            "service_exit_code": rc, "service_summary": summary,
            "service_error_lines": svc.errors(),
        }
        out["ok"] = bool(ready and sent and beats > 0 and not errors and summary
                         and summary.get("received") == out["chunks_sent"]
                         and summary.get("unexplained") == 0)
        return out
    finally:
        if source.poll() is None:
            source.kill()
            source.wait()
        svc.kill()
        answers.close()


def row_restart_source(setup: Setup) -> dict[str, Any]:
    pin, ppub = free_port(), free_port()
    args = ["spectral", "--ingest", f"tcp://127.0.0.1:{pin}", "--publish",
            f"tcp://127.0.0.1:{ppub}", "--backend", setup.backend]
    if setup.weights is not None:
        args += ["--weights", str(setup.weights)]
    first = CliService(*args).start()
    second = CliService(*args)
    answers = Answers(f"tcp://127.0.0.1:{ppub}", reconnect_ms=100)
    source: subprocess.Popen[str] | None = None
    streams, rate, seconds = 2, 20.0, 40.0 + setup.restart_s
    try:
        if not first.wait_ready():
            return {"error": "the service never became ready", "log": first.lines[-10:]}
        startup_s = (first.ready_at or 0) - first.started_at
        answers.wait_live(f"tcp://127.0.0.1:{pin}")
        source = subprocess.Popen(
            cli("source", "spectral-sim", "--connect", f"tcp://127.0.0.1:{pin}", "--stream",
                "rs", "--streams", str(streams), "--rate", str(rate), "--seconds",
                str(seconds)),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            errors="replace")
        time.sleep(8.0)
        down_at = time.monotonic()
        rc_first = first.stop()
        # The second incarnation is ready about `restart_s` after the first was told to stop.
        time.sleep(max(0.0, setup.restart_s - (time.monotonic() - down_at) - startup_s))
        second.start()
        ready = second.wait_ready()
        away_s = (second.ready_at or time.monotonic()) - down_at
        try:
            src_out, src_err = source.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            source.kill()
            src_out, src_err = source.communicate()
        line = re.search(r"per stream: (.*?); buffered (\d+), dropped (\d+), unsent (\d+), "
                         r"reconnects (\d+)", src_out)
        sent = {k: int(v) for k, v in re.findall(r"(rs-\d+)=(\d+)", line.group(1))} if line \
            else {}
        names = list(sent)
        answers.settle(names, sent, timeout_s=60.0)
        rc_second = second.stop()
        tally = answers.tally(sent)
        one, two = first.summary(names) or {}, second.summary(names) or {}
        received = one.get("received", 0) + two.get("received", 0)
        out = {
            "service_away_s": round(away_s, 1), "source_seconds": seconds,
            "source_exit_code": source.returncode, "source_summary": src_out.strip()[-400:],
            "source_errors": src_err.strip()[-300:] or None,
            "source_buffered": int(line.group(2)) if line else None,
            "source_dropped": int(line.group(3)) if line else None,
            "source_unsent": int(line.group(4)) if line else None,
            "source_reconnects": int(line.group(5)) if line else None,
            **tally,
            "received_by_services": received,
            "lost_on_the_wire": tally["sent"] - received,
            "first_service": {"exit_code": rc_first, "summary_total": one,
                              "error_lines": first.errors()},
            "second_service": {"exit_code": rc_second, "ready": ready, "summary_total": two,
                               "error_lines": second.errors()},
        }
        out["ok"] = bool(source.returncode == 0 and tally["unanswered"] == 0
                         and one.get("unexplained") == 0 and two.get("unexplained") == 0)
        return out
    finally:
        if source is not None and source.poll() is None:
            source.kill()
            source.wait()
        first.kill()
        second.kill()
        answers.close()
