"""The rig every row of :mod:`bench.faults` runs against: a service (in this process, its stages
real processes, or ``sigstream run`` as a subprocess), the load that feeds it and the
subscriber that accounts for every answer.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np
import zmq

from bench.harness import REPO, cli, poll_until
from stream.stages import DROP_CODES

__all__ = [
    "DROP_CODES",
    "PROBE",
    "Answers",
    "CliService",
    "Load",
    "Setup",
    "accounting",
    "open_push",
    "serves_new_stream",
    "service",
    "slow_subscriber_and_flood",
    "spectra",
]

PROBE = "probe"
_POOL_SIZE = 64


# ---------------------------------------------------------------------------------------------
# Load and answers (threads of this process, real sockets)


def spectra() -> np.ndarray:
    from devices.spectra_sim import SpectrumSimConfig, simulate

    return simulate(_POOL_SIZE, config=SpectrumSimConfig(length=512),
                    rng=np.random.default_rng(0)).spectra


class Load:
    """A sender thread: ``rate_hz`` spectra/s round-robin over ``streams``, seq 0, 1, ... per
    stream, ``t_ns`` the send time; :attr:`sent_at` keeps each seq's monotonic send time."""

    def __init__(self, ingest: str, streams: tuple[str, ...], rate_hz: float = 150.0) -> None:
        self.streams, self.period_s = streams, 1.0 / rate_hz
        self.pool = spectra()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.sndhwm = 0  # never block the load: a stalled service shows as latency
        self.push.connect(ingest)
        self.sent_at: dict[str, list[float]] = {s: [] for s in streams}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        from stream.wire import data_message, encode

        k, next_t = 0, time.monotonic()
        while not self._stop.is_set():
            next_t += self.period_s
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stream = self.streams[k % len(self.streams)]
            seq = len(self.sent_at[stream])
            msg = data_message("spectrum", stream, seq, self.pool[k % _POOL_SIZE],
                               t_ns=time.time_ns())
            self.push.send_multipart(encode(msg))
            self.sent_at[stream].append(time.monotonic())
            k += 1

    def seq_at(self, stream: str, t: float) -> int:
        """The first seq of ``stream`` sent at or after monotonic time ``t``."""
        return int(np.searchsorted(self.sent_at[stream], t))

    def sent_between(self, start: float, end: float) -> dict[str, list[int]]:
        """Per stream, the seqs sent within monotonic ``[start, end]``."""
        return {s: [q for q, t in enumerate(ts) if start <= t <= end]
                for s, ts in self.sent_at.items()}

    def stop(self) -> dict[str, int]:
        """Stop sending; returns how many messages each stream sent."""
        self._stop.set()
        self._thread.join(10)
        return {s: len(t) for s, t in self.sent_at.items()}

    def close(self) -> None:
        self.stop()
        self.push.close(0)
        self.ctx.term()


class Answers:
    """A subscriber to everything, reading in a thread: per stream and seq the outcomes
    (``result`` or the error code), each result's capture-to-answer latency (ms), and per
    stream the result bodies' ``type`` (ECG: ``beat``/``status``)."""

    def __init__(self, publish: str, *, reconnect_ms: int = 10) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.rcvhwm = 0  # the measuring end must not lose anything itself
        self.sub.reconnect_ivl = reconnect_ms  # back at once when a restarted publisher binds
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(publish)
        self.outcomes: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.latency_ms: dict[str, dict[int, float]] = defaultdict(dict)
        self.types: dict[str, Counter[str]] = defaultdict(Counter)
        self.unattributed: Counter[str] = Counter()  # errors about unreadable messages
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def wait_live(self, ingest: str, timeout_s: float = 60.0) -> bool:
        """Send a probe (answered with an error) until one comes back: from then on the
        subscription reaches the publisher and nothing sent is missed."""
        push = self.ctx.socket(zmq.PUSH)
        push.linger = 0
        push.connect(ingest)
        header = msgpack.packb({"v": 1, "stream": PROBE, "seq": 0, "t_ns": time.time_ns(),
                                "dtype": "float32", "shape": [4]})
        try:
            return poll_until(lambda: bool(push.send_multipart([header, b""]) or
                                           self.count(PROBE)), timeout_s, poll_s=0.2)
        finally:
            push.close(0)

    def _run(self) -> None:
        from stream.wire import decode

        while not self._stop.is_set():
            if not self.sub.poll(50):
                continue
            now = time.time_ns()
            msg = decode(self.sub.recv_multipart(), topic=True)
            with self._lock:
                if msg.seq is None:
                    self.unattributed[str(msg.payload.get("code"))] += 1
                    continue
                if msg.kind == "error":
                    outcome = str(msg.payload.get("code"))
                else:
                    outcome = "result"
                    if msg.t_ns is not None:
                        self.latency_ms[msg.stream].setdefault(msg.seq, (now - msg.t_ns) / 1e6)
                    if isinstance(msg.payload, dict):
                        self.types[msg.stream][str(msg.payload.get("type"))] += 1
                self.outcomes[msg.stream][msg.seq].append(outcome)

    def count(self, stream: str) -> int:
        """Distinct seqs of ``stream`` answered."""
        with self._lock:
            return len(self.outcomes.get(stream, {}))

    def answered(self, stream: str) -> dict[int, list[str]]:
        with self._lock:
            return {seq: list(v) for seq, v in self.outcomes.get(stream, {}).items()}

    def codes(self, streams: tuple[str, ...] | list[str]) -> dict[str, int]:
        """Answers by outcome over ``streams`` (every copy counted)."""
        out: Counter[str] = Counter()
        for stream in streams:
            for outs in self.answered(stream).values():
                out.update(outs)
        return dict(sorted(out.items()))

    def settle(self, streams: tuple[str, ...] | list[str], sent: dict[str, int], *,
               timeout_s: float, quiet_s: float = 10.0) -> bool:
        """Until every seq sent is answered (True), or ``timeout_s`` passed or nothing new
        came for ``quiet_s`` (False)."""
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            counts = [self.count(s) for s in streams]
            if all(c >= sent.get(s, 0) for c, s in zip(counts, streams, strict=True)):
                time.sleep(0.3)  # a moment for duplicates to show
                return True
            if sum(counts) != last:
                last, last_change = sum(counts), time.monotonic()
            elif time.monotonic() - last_change > quiet_s:
                return False
            time.sleep(0.1)
        return False

    def tally(self, sent: dict[str, int]) -> dict[str, Any]:
        """Sent, answered (distinct seqs), duplicates, answers by outcome, unanswered."""
        answered = duplicates = 0
        for stream, n in sent.items():
            got = self.answered(stream)
            answered += sum(1 for seq in got if seq < n)
            duplicates += sum(len(v) - 1 for v in got.values())
        return {"sent": sum(sent.values()), "answered": answered,
                "unanswered": sum(sent.values()) - answered, "duplicates": duplicates,
                "answers": self.codes(list(sent))}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sub.close(0)
        self.ctx.term()


@contextlib.contextmanager
def flowing_load(publish: str, ingest: str, streams: tuple[str, ...], *, rate_hz: float,
                 warm_answers: int = 50) -> Iterator[tuple[Answers, Load]]:
    """A subscriber made live through ``ingest`` and a :class:`Load` of ``streams`` at
    ``rate_hz`` each, given once every stream has ``warm_answers`` answers (60 s at most); on
    exit the load is closed, then the subscriber."""
    answers = Answers(publish)
    try:
        answers.wait_live(ingest)
        load = Load(ingest, streams, rate_hz=rate_hz).start()
        try:
            poll_until(lambda: all(answers.count(s) >= warm_answers for s in streams), 60.0)
            yield answers, load
        finally:
            load.close()
    finally:
        answers.close()


# ---------------------------------------------------------------------------------------------
# Services: in this process (stages are real processes), or `sigstream run` as a subprocess


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What every row shares: ``backend`` of the engines, spectral ``weights`` (``None``: the
    shipped ones), a scratch folder ``tmp``, and per-row sizes."""

    backend: str
    weights: Path | None
    tmp: Path
    ecg_streams: int
    restart_s: float


@contextlib.contextmanager
def service(setup: Setup, path: str = "spectral", **overrides: Any) -> Iterator[Any]:
    """A started :class:`~stream.service.Service` on random ports of 127.0.0.1, default
    settings otherwise; stopped on exit."""
    from stream.paths.ecg import EcgSettings
    from stream.service import Service, ServiceConfig

    settings: dict[str, Any] = {"path": path, "ingest": "tcp://127.0.0.1:*",
                                "publish": "tcp://127.0.0.1:*", "backend": setup.backend}
    if path == "spectral":
        settings["weights"] = setup.weights
    else:
        store = Path(tempfile.mkdtemp(prefix="ecg-", dir=setup.tmp))
        settings.update(settings=EcgSettings(templates=store / "users.sqlite"),
                        cache_dir=store / "cache")
    settings.update(overrides)
    svc = Service(ServiceConfig(**settings))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop(timeout_s=30)


def accounting(summary: dict[str, Any], streams: list[str] | None = None) -> dict[str, Any]:
    """The service's own account over ``streams`` (all but the probe when ``None``)."""
    chosen = [s for s in summary.values() if (s.stream in streams if streams is not None
                                              else s.stream != PROBE)]
    errors: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for s in chosen:
        errors.update(s.errors)
        dropped.update(s.dropped)
    return {"received": sum(s.received for s in chosen),
            "delivered": sum(s.delivered for s in chosen),
            "consumed": sum(s.consumed for s in chosen),
            "errors": dict(sorted(errors.items())), "dropped": dict(sorted(dropped.items())),
            "unexplained": sum(s.unexplained for s in chosen)}


class CliService:
    """``sigstream run ...`` as a subprocess in its own session (process group), stderr read
    by a thread; :meth:`summary` parses the ``summary total`` line it logs when it stops."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.cmd = cli("run", *args)
        self.env = env
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.ready_at: float | None = None
        self._ready = threading.Event()

    def start(self) -> CliService:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True,
                                     env=self.env)
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        return self

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if "service ready" in line or "codec-rx: listening on" in line:
                self.ready_at = time.monotonic()
                self._ready.set()

    def wait_ready(self, timeout_s: float = 300.0) -> bool:
        proc = self.proc
        assert proc is not None
        return poll_until(lambda: self._ready.is_set() or proc.poll() is not None,
                          timeout_s) and self._ready.is_set()

    def endpoints(self) -> tuple[str, str]:
        found = re.search(r"ingest (\S+), publish (\S+?)[,\s]", "\n".join(self.lines) + " ")
        if not found:
            raise RuntimeError("no 'service ready' line: " + "\n".join(self.lines[-5:]))
        return found.group(1), found.group(2)

    def stop(self, sig: int = signal.SIGTERM, *, group: bool = False,
             timeout_s: float = 120.0) -> int | None:
        """Send ``sig`` (to the whole group with ``group``), wait; killed if it outlives
        ``timeout_s`` (then ``None``)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def errors(self) -> list[str]:
        """Lines logged at ERROR, and whether a traceback was printed."""
        return [ln[:300] for ln in self.lines if " ERROR" in ln or "Traceback" in ln]

    def summary(self, streams: list[str] | None = None) -> dict[str, Any] | None:
        """The ``summary`` lines it logged when it stopped, as numbers: the ``total`` line, or
        the sum over ``streams`` (counts by code included)."""
        wanted = ["total"] if streams is None else streams
        out: dict[str, Any] = {}
        found_any = False
        for stream in wanted:
            line = next((ln for ln in self.lines if f"summary {stream}: received" in ln), None)
            if line is None:
                continue
            found_any = True
            for key in ("received", "delivered", "consumed", "emitted", "errors", "dropped",
                        "unexplained"):
                found = re.search(rf"\b{key} (-?\d+)( \{{[^}}]*\}})?", line)
                if found:
                    out[key] = out.get(key, 0) + int(found.group(1))
                    if found.group(2):
                        by_code = out.setdefault(f"{key}_by_code", {})
                        for code, n in ast.literal_eval(found.group(2).strip()).items():
                            by_code[code] = by_code.get(code, 0) + n
        return out if found_any else None


def serves_new_stream(svc: Any, answers: Answers, stream: str, n: int = 10) -> bool:
    """A fresh spectral stream gets a result for each of ``n`` messages."""
    load = Load(svc.bound_ingest, (stream,), rate_hz=50.0).start()
    try:
        poll_until(lambda: len(load.sent_at[stream]) >= n, 30.0)
        sent = load.stop()
        answers.settle([stream], sent, timeout_s=30.0)
        got = answers.answered(stream)
        return len(got) == sent[stream] and all(v == ["result"] for v in got.values())
    finally:
        load.close()


def open_push(ingest: str) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    return ctx, _flood_socket(ctx, ingest)


def slow_subscriber_and_flood(ctx: zmq.Context[Any], publish: str, ingest: str
                              ) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """A subscriber to everything at ``publish`` that will never read (its queues hold next to
    nothing, so the publisher must drop for it), and a PUSH to ``ingest`` that never blocks."""
    slow = ctx.socket(zmq.SUB)
    slow.linger = 0
    slow.rcvhwm = 1
    slow.setsockopt(zmq.RCVBUF, 4096)
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    slow.connect(publish)
    return slow, _flood_socket(ctx, ingest)


def _flood_socket(ctx: zmq.Context[Any], ingest: str) -> zmq.Socket[Any]:
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.sndhwm = 0
    push.connect(ingest)
    return push
