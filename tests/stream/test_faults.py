"""Faults under load, with real processes: every ``seq`` accounted for, and the service still
serving afterwards (or cleanly stopped where that is the contract).

Each test pushes 512-sample spectra (:func:`devices.spectra_sim.simulate`) at a moderate rate
on its own stream ids, subscribes to everything, injects one fault (``kill -9`` of a stage,
``SIGSTOP`` of a worker, a group-wide SIGTERM, a subscriber that stops reading, an overload),
keeps pushing, stops, and checks per stream that every seq got exactly one answer (a result or
an error) — except where the supervision contract allows a loss, which must then be confined
to the fault's window and counted by the service:

- a worker (or shard) that dies: what it held is answered ``worker_lost`` (a shard's holdings
  may instead be counted ``lost_in_restart``); the stage is restarted;
- ingest: restarted on the same endpoint; what it held, and what was on the wire, may be
  missing (the sender sees the gap); everything sent once it is back is answered;
- publisher: restarted; subscribers reconnect by themselves; results in flight may be lost;
- a worker stopped (SIGSTOP) past ``watchdog_s`` is killed and restarted like a dead one;
- ``restart_budget`` restarts within ``restart_window_s`` is all: one more stops the service
  with :attr:`~stream.service.Service.failure` set.

Timeouts are generous (a loaded 2-core machine) and no latency is asserted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from service_client import (
    TIMEOUT_S,
    Client,
    CliService,
    alive,
    children,
    free_port,
    ingest_took,
    live_answers,
    local_service_config,
    term_context,
    wait_until,
)
from tiny_path import SAMPLES, STALL

from bench.faults_rig import Answers, Load, slow_subscriber_and_flood
from stream.accounting import StreamSummary
from stream.service import Service, ServiceConfig
from stream.stages import DROP_CODES
from stream.wire import Message

REPO = Path(__file__).resolve().parents[2]
LOST_IN_RESTART = "lost_in_restart"


# ---------------------------------------------------------------------------------------------
# Helpers: load, answers, waiting


def make_config(weights: Path, **overrides: Any) -> ServiceConfig:
    # A SIGSTOP that lands inside a batch waits for batch_timeout_s rather than watchdog_s.
    return local_service_config(weights, **{"stop_timeout_s": 30.0, "watchdog_s": 3.0,
                                            "batch_timeout_s": 6.0, **overrides})


def wait_answered(answers: Answers, sent: dict[str, int], *, allowed_missing: int = 0,
                  timeout_s: float = TIMEOUT_S) -> None:
    """Until every stream has answers for all but ``allowed_missing`` of its seqs (then a
    moment more, for duplicates to show)."""
    try:
        wait_until(lambda: all(answers.count(s) >= n - allowed_missing
                               for s, n in sent.items()), "every answer", timeout_s)
    except AssertionError:
        got = {s: answers.count(s) for s in sent}
        raise AssertionError(f"answers {got} to {sent} ({answers.codes(tuple(sent))})") from None
    time.sleep(0.5)


def assert_once_each(answers: Answers, stream: str, n: int) -> set[int]:
    """No seq answered twice, nothing answered that was not sent; returns the missing seqs."""
    got = answers.answered(stream)
    twice = {seq: outs for seq, outs in got.items() if len(outs) != 1}
    assert not twice, f"{stream}: answered more than once: {twice}"
    assert set(got) <= set(range(n)), f"{stream}: answers to seqs never sent"
    return set(range(n)) - set(got)


def restarted(service: Service, stage: str, old_pid: int) -> Callable[[], bool]:
    """The stage has a new incarnation, and it reported ready."""
    def done() -> bool:
        pid = service.pids.get(stage)
        return (service.restarts.get(stage, 0) >= 1 and pid is not None and pid != old_pid
                and service.stages.get(stage, {}).get("pid") == pid)
    return done


def settled_summary(service: Service, streams: tuple[str, ...], sent: dict[str, int]) -> Any:
    """The live summary once every stream's account closes (stats arrive every 0.1 s)."""
    def closed() -> bool:
        summary = service.summary()
        return all(s in summary and summary[s].received == sent[s]
                   and summary[s].unexplained == 0 for s in streams)
    wait_until(closed, "the service's account closes", 30.0)
    return service.summary()


def still_serves(service: Service, answers: Answers, stream: str, n: int = 10) -> None:
    """A fresh stream gets one answer for every message, results among them (on a loaded
    machine the door may answer some ``expired``: the spectral path's deadline is 50 ms)."""
    load = Load(service.bound_ingest, (stream,), rate_hz=50.0).start()
    try:
        wait_until(lambda: len(load.sent_at[stream]) >= n, "the check load ran")
        sent = load.stop()
        wait_answered(answers, sent)
        assert not assert_once_each(answers, stream, sent[stream]), stream
        codes = answers.codes((stream,))
        assert set(codes) <= {"result", *DROP_CODES} and codes.get("result", 0) > 0, codes
    finally:
        load.close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# One service shared by the worker faults and the slow subscriber


@pytest.fixture(scope="module")
def service(weights: Path) -> Iterator[Service]:
    svc = Service(make_config(weights, workers=2, shards=0))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop(timeout_s=30)


@pytest.fixture
def answers(service: Service) -> Iterator[Answers]:
    a = live_answers(service.bound_publish, service.bound_ingest)
    yield a
    a.close()


def _fault_under_load(service: Service, answers: Answers, streams: tuple[str, ...],
                      fault: Callable[[], None], recovered: Callable[[], bool]) -> dict[str, int]:
    """Push, inject ``fault`` once answers flow, keep pushing until ``recovered`` and 2 s more,
    stop; returns what was sent per stream."""
    assert service.failure is None
    load = Load(service.bound_ingest, streams).start()
    try:
        wait_until(lambda: all(answers.count(s) >= 50 for s in streams), "answers flow")
        fault()
        wait_until(recovered, "the stage is back")
        time.sleep(2.0)
        return load.stop()
    finally:
        load.close()


def test_kill_9_of_a_worker_answers_what_it_held(service: Service, answers: Answers) -> None:
    streams = ("kw-a", "kw-b", "kw-c")
    old = service.pids["worker-0"]
    sent = _fault_under_load(service, answers, streams, lambda: os.kill(old, signal.SIGKILL),
                             restarted(service, "worker-0", old))
    wait_answered(answers, sent)
    for stream in streams:
        assert not assert_once_each(answers, stream, sent[stream]), stream
    codes = answers.codes(streams)
    assert set(codes) <= {"result", "worker_lost", *DROP_CODES}, codes
    summary = settled_summary(service, streams, sent)
    assert sum(summary[s].errors.get("worker_lost", 0) for s in streams) == codes.get(
        "worker_lost", 0)
    assert service.failure is None and service.restarts["worker-0"] >= 1
    still_serves(service, answers, "kw-after")


def test_sigstop_of_a_worker_trips_the_watchdog(service: Service, answers: Answers) -> None:
    streams = ("stop-a", "stop-b")
    old = service.pids["worker-1"]
    before = service.restarts.get("worker-1", 0)

    def back() -> bool:
        return service.restarts.get("worker-1", 0) > before and restarted(
            service, "worker-1", old)()

    try:
        sent = _fault_under_load(service, answers, streams,
                                 lambda: os.kill(old, signal.SIGSTOP), back)
    finally:
        try:  # the watchdog killed it; if not, do not leave it stopped
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass
    wait_answered(answers, sent)
    for stream in streams:
        assert not assert_once_each(answers, stream, sent[stream]), stream
    assert set(answers.codes(streams)) <= {"result", "worker_lost", *DROP_CODES}
    settled_summary(service, streams, sent)
    assert service.failure is None
    still_serves(service, answers, "stop-after")


def _blips_with_one_slow_batch(plugin: dict[str, str], *options: str, n: int = 24,
                               slow: int = 5) -> tuple[dict[int, list[Message]], str]:
    """``n`` blips to a one-worker ``tiny`` service (watchdog 3 s) whose engine stalls on seq
    ``slow`` for ``--stall-s``; every answer by seq, and the service's log."""
    run = CliService(None, "--workers", "1", "--watchdog-s", "3", *options, path="tiny",
                     env=plugin)
    try:
        ingest, publish = run.ready()
        client = Client(ingest, publish)
        try:
            blips = np.random.default_rng(1).normal(size=(n, SAMPLES)).astype(np.float32)
            blips[slow, 0] = STALL
            for seq, x in enumerate(blips):
                client.send("blips", seq, x, kind="blip", t_ns=time.time_ns(), fs=10.0)
            client.wait_for(lambda got: {m.seq for m in got} >= set(range(n)))
            by_seq: dict[int, list[Message]] = {}
            for msg in client.drain(0.5):
                by_seq.setdefault(msg.seq, []).append(msg)  # type: ignore[arg-type]
        finally:
            client.close()
    finally:
        run.close()
    return by_seq, run.finish_log()


def test_a_long_batch_is_not_taken_for_a_stall(tiny_plugin: dict[str, str]) -> None:
    # The worker spends 9 s, three times the watchdog, in one batch: it is busy, not stalled.
    answers, log = _blips_with_one_slow_batch(tiny_plugin, "--stall-s", "9")
    assert sorted(answers) == list(range(24)) and all(len(a) == 1 for a in answers.values())
    assert {a[0].kind for a in answers.values()} == {"result.tiny"}, log
    assert "killing it" not in log, log


def test_a_batch_past_batch_timeout_restarts_the_worker(tiny_plugin: dict[str, str]) -> None:
    answers, log = _blips_with_one_slow_batch(tiny_plugin, "--stall-s", "60",
                                              "--batch-timeout-s", "4")
    assert sorted(answers) == list(range(24)) and all(len(a) == 1 for a in answers.values())
    codes = {seq: a[0].payload.get("code", "result") if a[0].kind == "error" else "result"
             for seq, a in answers.items()}
    assert codes[5] == "worker_lost" and set(codes.values()) == {"result", "worker_lost"}, codes
    assert codes[23] == "result", "the restarted worker serves what waited at the door"
    assert re.search(r"stage worker-0 \(pid \d+\) has been in one batch for [\d.]+ s: "
                     r"killing it", log), log


def test_a_slow_subscriber_slows_nothing(service: Service, answers: Answers) -> None:
    # A subscriber that connects and never reads, while errors that echo an 8,000-character
    # dtype flood the results: its queues fill and the publisher drops for it alone; the good
    # subscriber gets every answer and the publisher stays within its bounds (main grew
    # 123 -> 495 MB on 20,000 such errors).
    ctx = zmq.Context()
    slow, flood = slow_subscriber_and_flood(ctx, service.bound_publish, service.bound_ingest)
    streams, bad, n_bad = ("slow-a", "slow-b"), "slow-bad", 20_000
    publisher = service.pids["publisher"]
    time.sleep(0.5)  # the slow subscription is in place
    rss0 = rss_kb(publisher)
    load = Load(service.bound_ingest, streams, rate_hz=100.0).start()
    try:
        payload = bytes(2048)
        for seq in range(n_bad):
            header = msgpack.packb({"v": 1, "kind": "spectrum", "stream": bad, "seq": seq,
                                    "t_ns": time.time_ns(), "dtype": "x" * 8000,
                                    "shape": [512]})
            flood.send_multipart([header, payload])
            if seq % 100 == 99:
                # Paced (2,000/s), so that the good subscriber (a thread of this process)
                # keeps up: one thousands of answers behind is a slow one, dropped for too.
                time.sleep(0.05)
        time.sleep(1.0)
        sent = load.stop()
        sent[bad] = n_bad
        settled_summary(service, (*streams, bad), sent)  # the service answered each
        wait_answered(answers, sent)
        for stream in sent:
            assert not assert_once_each(answers, stream, sent[stream]), stream
        assert set(answers.codes((bad,))) <= {"bad_dtype", "bad_field"}
        # Every good message answered (a result, or `expired` by the door on a loaded box).
        codes = answers.codes(streams)
        assert set(codes) <= {"result", *DROP_CODES} and codes.get("result", 0) > 0, codes
        growth_mb = (rss_kb(publisher) - rss0) / 1024
        assert growth_mb < 100, f"publisher grew {growth_mb:.0f} MB behind a slow subscriber"
        assert service.failure is None and not service.restarts.get("publisher")
    finally:
        load.close()
        slow.close(0)
        flood.close(0)
        term_context(ctx)


# ---------------------------------------------------------------------------------------------
# Faults that need the final summary: each its own service


@dataclass(frozen=True, kw_only=True)
class _FaultRun:
    """What :func:`_run_with_fault` saw: the stopped service's ``summary`` per stream, the
    ``answers``, the ``load``, what was ``sent`` per stream, and the kill and back times
    (monotonic s)."""

    summary: dict[str, StreamSummary]
    answers: Answers
    load: Load
    sent: dict[str, int]
    killed_at: float
    back_at: float

    def missing_only_around_the_kill(self, stream: str) -> set[int]:
        """The seqs of ``stream`` never answered, each sent from 2 s before the kill to 1 s
        after the stage was back (asserted); every other seq answered exactly once."""
        return _missing_only_in_window(self.answers, self.load, stream, self.sent[stream],
                                       self.killed_at - 2.0, self.back_at + 1.0)


def _run_with_fault(weights: Path, stage: str, streams: tuple[str, ...],
                    **config: Any) -> _FaultRun:
    """Start a service, push, ``kill -9`` ``stage`` once answers flow, push until it is back
    and 3 s more, stop the load, wait for the answers, stop the service; assert that it served
    on and restarted ``stage`` once (the one kill)."""
    service = Service(make_config(weights, **config))
    service.start()
    answers = live_answers(service.bound_publish, service.bound_ingest)
    load = Load(service.bound_ingest, streams)
    try:
        load.start()
        wait_until(lambda: all(answers.count(s) >= 50 for s in streams), "answers flow")
        old = service.pids[stage]
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        wait_until(restarted(service, stage, old), f"{stage} is back")
        back_at = time.monotonic()
        time.sleep(3.0)
        sent = load.stop()
        wait_until(lambda: all(answers.count(s) >= load.seq_at(s, back_at + 1.0)
                               for s in streams), "answers after the restart")
        wait_answered(answers, sent, allowed_missing=load.seq_at(streams[0], back_at)
                      - load.seq_at(streams[0], killed_at - 2.0) + 10, timeout_s=60.0)
        time.sleep(1.0)
        assert service.failure is None
        still_serves(service, answers, f"{stage}-after")
        service.stop()
    finally:
        load.close()
        answers.close()
        service.stop()
    assert service.restarts[stage] == 1
    return _FaultRun(summary=service.summary(), answers=answers, load=load, sent=sent,
                     killed_at=killed_at, back_at=back_at)


def _missing_only_in_window(answers: Answers, load: Load, stream: str, n: int,
                            start: float, end: float) -> set[int]:
    missing = assert_once_each(answers, stream, n)
    outside = {seq for seq in missing if not start <= load.sent_at[stream][seq] <= end}
    assert not outside, f"{stream}: lost outside the fault's window: {sorted(outside)[:20]}"
    return missing


@pytest.mark.slow
def test_kill_9_of_a_shard_answers_or_counts_what_it_held(weights: Path) -> None:
    streams = ("ks-a", "ks-b", "ks-c", "ks-d")  # both shards get some
    run = _run_with_fault(weights, "shard-0", streams, shards=2)
    for stream in streams:
        # Ingest took every message in; what shard-0 held is answered worker_lost, or
        # counted lost_in_restart by the service, one for one.
        missing = assert_once_each(run.answers, stream, run.sent[stream])
        s = run.summary[stream]
        assert s.received == run.sent[stream] and s.unexplained == 0, s
        assert len(missing) == s.dropped.get(LOST_IN_RESTART, 0), (stream, len(missing), s)
    assert set(run.answers.codes(streams)) <= {"result", "worker_lost", *DROP_CODES}


@pytest.mark.slow
def test_kill_9_of_ingest_loses_only_around_the_kill(weights: Path) -> None:
    streams = ("ki-a", "ki-b")
    run = _run_with_fault(weights, "ingest", streams)
    for stream in streams:
        # What ingest held, and what was on the wire, may be gone; what was sent once it
        # was back is all answered.
        missing = run.missing_only_around_the_kill(stream)
        s = run.summary[stream]
        assert s.unexplained == 0, s
        assert len(missing) <= run.sent[stream] - s.received + s.dropped.get(
            LOST_IN_RESTART, 0), (stream, len(missing), s)


@pytest.mark.slow
def test_kill_9_of_the_publisher_loses_only_what_was_in_flight(weights: Path) -> None:
    streams = ("kp-a", "kp-b")
    run = _run_with_fault(weights, "publisher", streams)
    for stream in streams:
        run.missing_only_around_the_kill(stream)
        s = run.summary[stream]
        assert s.received == run.sent[stream] and s.unexplained == 0, s


@pytest.mark.slow
def test_restarts_beyond_the_budget_stop_the_service(weights: Path) -> None:
    service = Service(make_config(weights, restart_budget=1, restart_window_s=600.0))
    service.start()
    try:
        old = service.pids["worker-0"]
        os.kill(old, signal.SIGKILL)
        wait_until(restarted(service, "worker-0", old), "the first restart")
        assert service.failure is None
        os.kill(service.pids["worker-0"], signal.SIGKILL)
        assert service.wait(timeout_s=60), "a second death within the window must stop it"
        assert "budget" in str(service.failure)
        wait_until(lambda: not alive(service.pids.values()),
                   "every stage is gone", 30.0)
    finally:
        service.stop(timeout_s=10)


@pytest.mark.slow
def test_overload_is_shed_and_answered(weights: Path) -> None:
    # Far more than two workers can serve, into a small door with a deadline: what is not
    # served is answered dropped or expired, never left unexplained.
    service = Service(make_config(weights, queue_depth=16, deadline_ms=200, max_batch=4))
    service.start()
    answers = live_answers(service.bound_publish, service.bound_ingest)
    load = Load(service.bound_ingest, ("ov-a", "ov-b"), rate_hz=3000.0)
    try:
        load.start()
        time.sleep(5.0)
        sent = load.stop()
        wait_answered(answers, sent)
        for stream in sent:
            assert not assert_once_each(answers, stream, sent[stream]), stream
        codes = answers.codes(tuple(sent))
        assert set(codes) <= {"result", *DROP_CODES}, codes
        assert codes.get("result", 0) > 0 and sum(codes.get(c, 0) for c in DROP_CODES) > 0
        still_serves(service, answers, "ov-after")
        service.stop()
        for stream in sent:
            s = service.summary()[stream]
            assert s.received == sent[stream] and s.unexplained == 0, s
    finally:
        load.close()
        answers.close()
        service.stop()




@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds child processes in /proc")
def test_group_sigterm_drains_under_load(weights: Path) -> None:
    # What `systemctl stop` does: SIGTERM to every process of the group, stages included. The
    # supervisor drains: every accepted message answered, status 0, no stage logs an error.
    metrics_port = free_port()
    run = CliService(weights, "--metrics-port", str(metrics_port))
    answers = load = None
    try:
        ingest, publish = run.ready(300)
        answers = live_answers(publish, ingest)
        stages = children(run.proc.pid)
        streams = ("term-a", "term-b")
        load = Load(ingest, streams).start()
        wait_until(lambda: all(answers.count(s) >= 50 for s in streams), "answers flow")
        sent = load.stop()
        # Taken in by ingest (not still in the sender's queue): the drain must answer them.
        wait_until(ingest_took(f"http://127.0.0.1:{metrics_port}/metrics", sent),
                   "ingest has taken every message")
        os.killpg(run.proc.pid, signal.SIGTERM)
        assert run.proc.wait(timeout=120) == 0, run.log
        wait_answered(answers, sent)
        for stream in streams:
            assert not assert_once_each(answers, stream, sent[stream]), stream
        wait_until(lambda: not alive(stages), "the stages exit", 30.0)
        log = run.finish_log()
        assert " ERROR" not in log and "Traceback" not in log, log
        for stream in streams:
            assert f"summary {stream}: received {sent[stream]}, delivered" in log, log
    finally:
        if load is not None:
            load.close()
        if answers is not None:
            answers.close()
        run.close()
