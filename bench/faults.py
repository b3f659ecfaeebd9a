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

import argparse
import ast
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Run as a script, Python puts bench/ first on sys.path: import the bench helpers as
# `bench.pipeline` from the repository root (spawned children inherit sys.path).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench.fuzz import killers  # noqa: E402
from bench.pipeline import _weights, cpu_seconds, emit  # noqa: E402
from bench.soak import rss_mb  # noqa: E402

REPO = _BENCH.parent
PROBE = "probe"
DROP_CODES = frozenset({"dropped", "expired", "overloaded"})
_POOL_SIZE = 64


# ---------------------------------------------------------------------------------------------
# Helpers: waiting, processes, ports


def wait_until(done: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``done`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (for a service restarted on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> list[str]:
    """The ``sigstream`` command line, run by this interpreter."""
    return [sys.executable, "-m", "stream.cli", *args]


def peak_mb(pid: int) -> float | None:
    """Peak resident memory of a live process, MB (``VmHWM``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _mb(pid: int) -> float | None:
    value = rss_mb(pid)
    return None if value is None else round(value, 1)


def measured(cmd: list[str], *, timeout_s: float, env: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """Run ``cmd`` to its end: exit code, wall time (s), peak RSS (MB), stderr's last line
    (clipped to 300 characters) and its full length in characters."""
    with tempfile.TemporaryDirectory(prefix="faults-time-") as tmp:
        report = Path(tmp) / "time.txt"
        if os.access("/usr/bin/time", os.X_OK):
            wrapped = ["/usr/bin/time", "-v", "-o", str(report), *cmd]
        else:
            wrapped = [sys.executable, "-c", (
                "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                "open(sys.argv[1], 'w').write('Maximum resident set size (kbytes): %d\\n' % "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"),
                str(report), *cmd]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(wrapped, cwd=REPO, capture_output=True, text=True,
                                  timeout=timeout_s, env=env, errors="replace")
            rc: int | str = proc.returncode
            stderr = proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = f"timed out after {timeout_s:g} s"
            stderr = exc.stderr if isinstance(exc.stderr, str) else ""
        wall = time.monotonic() - t0
        text = report.read_text() if report.exists() else ""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return {"exit_code": rc, "wall_s": round(wall, 2),
            "peak_rss_mb": round(int(found.group(1)) / 1024, 1) if found else None,
            "stderr_lines": len(lines), "traceback": "Traceback" in stderr,
            "error_line_chars": len(last), "error_line": last[:300]}


class LogTap(logging.Handler):
    """Keeps the records of this process's loggers (the supervisor's own lines) with their
    monotonic time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.levelname, record.getMessage()))

    @contextlib.contextmanager
    def attached(self, name: str = "stream") -> Iterator[LogTap]:
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Load and answers (threads of this process, real sockets)


def _spectra() -> np.ndarray:
    from devices.spectra_sim import SpectrumSimConfig, simulate

    return simulate(_POOL_SIZE, config=SpectrumSimConfig(length=512),
                    rng=np.random.default_rng(0)).spectra


class Load:
    """A sender thread: ``rate_hz`` spectra/s round-robin over ``streams``, seq 0, 1, ... per
    stream, ``t_ns`` the send time; :attr:`sent_at` keeps each seq's monotonic send time."""

    def __init__(self, ingest: str, streams: tuple[str, ...], rate_hz: float) -> None:
        self.streams, self.period_s = streams, 1.0 / rate_hz
        self.pool = _spectra()
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
            return wait_until(lambda: bool(push.send_multipart([header, b""]) or
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
    from stream.service import Service, ServiceConfig

    settings: dict[str, Any] = {"path": path, "ingest": "tcp://127.0.0.1:*",
                                "publish": "tcp://127.0.0.1:*", "backend": setup.backend}
    if path == "spectral":
        settings["weights"] = setup.weights
    else:
        store = Path(tempfile.mkdtemp(prefix="ecg-", dir=setup.tmp))
        settings.update(templates=store / "users.sqlite", cache_dir=store / "cache")
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
        return wait_until(lambda: self._ready.is_set() or proc.poll() is not None,
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


# ---------------------------------------------------------------------------------------------
# Rows


def _serves(svc: Any, answers: Answers, stream: str, n: int = 10) -> bool:
    """A fresh spectral stream gets a result for each of ``n`` messages."""
    load = Load(svc.bound_ingest, (stream,), rate_hz=50.0).start()
    try:
        wait_until(lambda: len(load.sent_at[stream]) >= n, 30.0)
        sent = load.stop()
        answers.settle([stream], sent, timeout_s=30.0)
        got = answers.answered(stream)
        return len(got) == sent[stream] and all(v == ["result"] for v in got.values())
    finally:
        load.close()


def _push(ingest: str) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.sndhwm = 0
    push.connect(ingest)
    return ctx, push


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
        ctx, push = _push(svc.bound_ingest)
        try:
            live = answers.wait_live(svc.bound_ingest)
            pids = dict(svc.pids)
            push.send_multipart(killers(kind, "killer", payload, fs=fs)["shape"][0])
            answered = wait_until(lambda: answers.count("killer") >= 1, 30.0)
            counted = wait_until(lambda: "killer" in svc.summary()
                                 and svc.summary()["killer"].errors_total >= 1, 10.0)
            time.sleep(1.0)
            before = answers.count(PROBE)
            if path == "spectral":
                serves = _serves(svc, answers, "after")
            else:  # one chunk makes no beat: a probe's error answer shows ingest reads on
                push.send_multipart([msgpack.packb({"v": 1, "stream": PROBE, "seq": 1}), b""])
                serves = wait_until(lambda: answers.count(PROBE) > before, 30.0)
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
        ctx, push = _push(f"tcp://127.0.0.1:{port}")
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
    pool = _spectra()
    with service(setup) as svc:
        answers = Answers(svc.bound_publish)
        ctx, push = _push(svc.bound_ingest)
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
            serves = _serves(svc, answers, "after")
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


def _restarted(svc: Any, stage: str, old_pid: int) -> Callable[[], bool]:
    def done() -> bool:
        pid = svc.pids.get(stage)
        return (pid is not None and pid != old_pid
                and svc.stages.get(stage, {}).get("pid") == pid)
    return done


def row_kill9_worker(setup: Setup) -> dict[str, Any]:
    streams = ("k9-a", "k9-b", "k9-c", "k9-d")
    with service(setup) as svc:
        answers = Answers(svc.bound_publish)
        answers.wait_live(svc.bound_ingest)
        load = Load(svc.bound_ingest, streams, rate_hz=200.0).start()
        try:
            wait_until(lambda: all(answers.count(s) >= 50 for s in streams), 60.0)
            old = svc.pids["worker-0"]
            killed_at = time.monotonic()
            os.kill(old, signal.SIGKILL)
            back = wait_until(_restarted(svc, "worker-0", old), 120.0)
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
        finally:
            load.close()
        svc.stop(timeout_s=30)
        acc = accounting(svc.summary(), list(streams))
        answers.close()
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
        answers = Answers(svc.bound_publish)
        answers.wait_live(svc.bound_ingest)
        load = Load(svc.bound_ingest, streams, rate_hz=100.0).start()
        try:
            wait_until(lambda: all(answers.count(s) >= 50 for s in streams), 60.0)
            old = svc.pids["worker-1"]
            stopped_at = time.monotonic()
            os.kill(old, signal.SIGSTOP)
            restarted = wait_until(_restarted(svc, "worker-1", old), 5.0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)  # if the watchdog has not killed it by now
            if not restarted:  # killed by now, or left running: a restart takes seconds
                restarted = wait_until(_restarted(svc, "worker-1", old), 120.0)
            back_at = time.monotonic()
            time.sleep(2.0)
            sent = load.stop()
            answers.settle(list(streams), sent, timeout_s=60.0)
            tally = answers.tally(sent)
            after = load.sent_between(stopped_at, back_at + 2.0)
            lat = [answers.latency_ms[s][q] for s, seqs in after.items() for q in seqs
                   if q in answers.latency_ms[s]]
            running = svc.running and svc.failure is None
        finally:
            load.close()
        svc.stop(timeout_s=30)
        acc = accounting(svc.summary(), list(streams))
        answers.close()
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
    answers: Answers | None = None
    load: Load | None = None
    try:
        if not svc.wait_ready():
            return {"error": "the service never became ready", "log": svc.lines[-10:]}
        ingest, publish = svc.endpoints()
        answers = Answers(publish)
        answers.wait_live(ingest)
        streams = ("term-a", "term-b")
        load = Load(ingest, streams, rate_hz=150.0).start()
        wait_until(lambda: all(answers is not None and answers.count(s) >= 50 for s in streams),
                   60.0)
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
        if load is not None:
            load.close()
        if answers is not None:
            answers.close()
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


def row_overload(setup: Setup) -> dict[str, Any]:
    path = setup.tmp / "overload.json"
    cmd = [sys.executable, str(_BENCH / "overload.py"), "--backend", setup.backend,
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
        slow = ctx.socket(zmq.SUB)  # connects, subscribes to everything, never reads
        slow.linger = 0
        slow.rcvhwm = 1
        slow.setsockopt(zmq.RCVBUF, 4096)
        slow.setsockopt(zmq.SUBSCRIBE, b"")
        slow.connect(svc.bound_publish)
        flood = ctx.socket(zmq.PUSH)
        flood.linger = 0
        flood.sndhwm = 0
        flood.connect(svc.bound_ingest)
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
            serves = _serves(svc, answers, "after")
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
        ctx, push = _push(svc.bound_ingest)
        t0 = time.monotonic()
        try:
            for i in range(n):
                push.send_multipart(encode(data_message("ecg", f"s{i}", 0, chunk, fs=250.0)))

            def done() -> bool:
                acc = accounting(svc.summary())
                explained = acc["received"] - acc["unexplained"]
                return acc["received"] >= n and explained >= n

            finished = wait_until(done, 900.0, poll_s=0.5)
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


def row_enroll_file(setup: Setup) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="enroll-", dir=setup.tmp))
    sparse, digits = work / "sparse.csv", work / "digits.csv"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
    with open(digits, "wb") as f:
        f.write(b"0123456789" * 10)
        f.truncate(100 + (1 << 30))
    out: dict[str, Any] = {}
    for name, path in (("sparse_1GiB", sparse), ("digits_then_1GiB_NUL", digits)):
        for cap, extra in (("default_cap", []), ("cap_2GiB", ["--max-file-mb", "2048"])):
            out[f"{name}/{cap}"] = measured(
                cli("ecg", "--db", str(work / "users.sqlite"), "enroll", "--user", "bench",
                    "--file", str(path), "--fs", "250", *extra), timeout_s=300)
    shutil.rmtree(work, ignore_errors=True)
    out["ok"] = all(r["exit_code"] not in (0,) and not r["traceback"] and r["stderr_lines"] == 1
                    and (r["peak_rss_mb"] or 0) < 1024 and r["error_line_chars"] < 1000
                    for r in out.values())
    return out


def _sgc_bomb(path: Path, frames: int = 100_000) -> Path:
    """An .sgc of ``frames`` empty (lost) frames under the shipped wideband codec's header,
    written byte by byte (``write_sgc`` refuses it): about 200 KB."""
    from engines.codec.specs import CODECS

    sha = CODECS["wideband"].decoder.weights_sha256()
    header = {"v": 1, "codec": "wideband", "model": f"wideband@{sha[:12]}", "fs": 16000,
              "frame": 1024, "hop": 896, "step": 0.1, "kbps": 16.0,
              "samples": frames * 896 - 128, "frames": frames}
    raw = msgpack.packb(header, use_bin_type=True)
    body = b"SGC1" + struct.pack("<I", len(raw)) + raw + struct.pack("<H", 0) * frames
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return path


def row_codec_decode(setup: Setup) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="decode-", dir=setup.tmp))
    bomb = _sgc_bomb(work / "empty.sgc")
    cases = {
        "empty_frames": [str(bomb), str(work / "a.wav")],
        "empty_frames/max_seconds_1e5": [str(bomb), str(work / "b.wav"), "--max-seconds",
                                         "100000"],
        "directory_input": [str(work), str(work / "c.wav")],
        "missing_output_folder": [str(bomb), str(work / "absent" / "d.wav")],
    }
    out: dict[str, Any] = {"sgc_bytes": bomb.stat().st_size}
    for name, argv in cases.items():
        result = measured(cli("codec", "decode", *argv[:2], "--backend", setup.backend,
                              *argv[2:]), timeout_s=300)
        wav = Path(argv[1])
        result["output_bytes"] = wav.stat().st_size if wav.is_file() else None
        out[name] = result
    shutil.rmtree(work, ignore_errors=True)
    out["ok"] = all(out[n]["exit_code"] == 2 and not out[n]["traceback"]
                    and out[n]["stderr_lines"] == 1 and out[n]["output_bytes"] is None
                    for n in cases)
    return out


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
