"""Clients of a running service, shared by the stream tests (the fixtures are in conftest.py).

Every socket here is on 127.0.0.1 with ``linger`` 0, and every context is terminated with a
timeout (:func:`term_context`, as pyzmq's own ``tests/conftest.py`` does): a socket left open
fails its test instead of hanging the suite. Waiting is by count (every seq answered, the
service's account closed); :data:`TIMEOUT_S` only ends a broken run on a loaded machine, it is
never a latency target.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from bench.faults_rig import Answers
from stream.service import ServiceConfig
from stream.wire import Message, data_message, decode, encode

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120.0
TEARDOWN_S = 10.0
PROBE = "probe"


def term_context(ctx: zmq.Context[Any], timeout_s: float = TEARDOWN_S) -> None:
    """Terminate ``ctx`` in a thread, so that a socket left open fails instead of hanging."""
    thread = threading.Thread(target=ctx.term, name="term-context", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RuntimeError(f"{ctx} did not terminate in {timeout_s} s: a socket was left open")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for an end that binds by name)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(done: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``done`` every 50 ms; fail after ``timeout_s`` (a broken run, not a slow one)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def scrape(url: str) -> str:
    """The text of a ``/metrics`` page ("" while nothing answers there yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def ingest_took(url: str, sent: Mapping[str, int]) -> Callable[[], bool]:
    """Whether the service whose ``/metrics`` is at ``url`` has taken in every message
    ``sent`` per stream (no longer in a sender's queue: a drain must answer them)."""
    def done() -> bool:
        text = scrape(url)
        return all(f'sigstream_frames_in_total{{stage="ingest",stream="{stream}"}} {n}.0' in text
                   for stream, n in sent.items())
    return done


def probe_frames() -> list[bytes]:
    """A message without ``kind`` on stream :data:`PROBE`: any path answers it with an error,
    which tells a subscriber that its subscription has reached the publisher."""
    header = {"v": 1, "stream": PROBE, "seq": 0, "t_ns": time.time_ns(), "dtype": "float32",
              "shape": [512]}
    return [msgpack.packb(header), b""]


def settled(service: Any, sent: Mapping[str, int]) -> Callable[[], bool]:
    """Whether the service's account of each stream is closed: it received the ``sent``
    messages and explained every one (stage statistics arrive every ``stats_interval_s``)."""
    def done() -> bool:
        summary = service.summary()
        return all(stream in summary and summary[stream].received == n
                   and summary[stream].unexplained == 0 for stream, n in sent.items())
    return done


class Client:
    """A sender (PUSH to ``ingest``) and a subscriber (SUB on ``publish``) owned by one test.

    ``topics``: the subscriptions (default: everything); ``context``: the client's own context
    (a CURVE client's, from :meth:`stream.security.ClientSecurity.context`), terminated by
    :meth:`close`; ``probe``: wait until the subscription is live (a refused client never is);
    ``blocking``: ``False`` for a client that may have no connection to queue to (its unsent
    messages are counted in :attr:`unsent`). Answers on stream :data:`PROBE` are not kept.
    """

    def __init__(self, ingest: str, publish: str, *, topics: Iterable[str] = ("",),
                 context: zmq.Context[Any] | None = None, probe: bool = True,
                 blocking: bool = True, sndhwm: int | None = None) -> None:
        self.ctx: zmq.Context[Any] = context if context is not None else zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.sub = self.ctx.socket(zmq.SUB)
        for sock in (self.push, self.sub):
            sock.linger = 0
        if sndhwm is not None:
            self.push.sndhwm = sndhwm
        self.sub.rcvhwm = 0  # the measuring end must not lose anything itself
        self.topics = tuple(topics)
        for topic in self.topics:
            self.sub.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.sub.connect(publish)
        self.push.connect(ingest)
        self.blocking = blocking
        self.unsent = 0
        self.received: list[Message] = []
        if probe:
            self._wait_for_subscription()

    def _wait_for_subscription(self) -> None:
        # The SUB sees nothing sent before its subscription reached the publisher: send a
        # probe until its answer comes back.
        probe_topic = f"error/{PROBE}"
        self.sub.setsockopt_string(zmq.SUBSCRIBE, probe_topic)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                self.push.send_multipart(probe_frames())
                if self.sub.poll(200):
                    time.sleep(0.1)  # the answers to the other probes sent meanwhile
                    while self.sub.poll(50):
                        self._receive()
                    return
            raise AssertionError("subscription never became live")
        finally:
            if probe_topic not in self.topics and "" not in self.topics:
                self.sub.setsockopt_string(zmq.UNSUBSCRIBE, probe_topic)

    # -- sending ----------------------------------------------------------------------------
    def send_frames(self, frames: list[bytes]) -> None:
        if self.blocking:
            self.push.send_multipart(frames)
            return
        try:
            self.push.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.unsent += 1

    def send(self, stream: str, seq: int, array: np.ndarray, kind: str = "spectrum",
             **extra: Any) -> None:
        self.send_frames(encode(data_message(kind, stream, seq, array, **extra)))

    def send_signal(self, kind: str, stream: str, signal: np.ndarray, *, chunk: int, fs: float,
                    seq0: int = 0, **extra: Any) -> int:
        """``signal`` in chunks of ``chunk`` samples, seq ``seq0``, ``seq0 + 1``, ..., stamped
        as if captured up to now; returns the next seq."""
        t0 = time.time_ns() - round(len(signal) * 1e9 / fs)
        seq = seq0
        for i in range(0, len(signal), chunk):
            self.send(stream, seq, signal[i:i + chunk], kind=kind,
                      t_ns=t0 + round(i * 1e9 / fs), fs=fs, **extra)
            seq += 1
        return seq

    # -- receiving --------------------------------------------------------------------------
    def _receive(self) -> None:
        msg = decode(self.sub.recv_multipart(), topic=True)
        if msg.stream != PROBE:
            self.received.append(msg)

    def wait_for(self, done: Callable[[list[Message]], bool], timeout_s: float = TIMEOUT_S
                 ) -> list[Message]:
        """Read until ``done(received)``; returns everything received so far."""
        deadline = time.monotonic() + timeout_s
        while not done(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {[m.topic for m in self.received]}")
            if self.sub.poll(100):
                self._receive()
        return self.received

    def drain(self, quiet_s: float = 0.2) -> list[Message]:
        """Read until nothing has come for ``quiet_s`` (what was already on its way)."""
        while self.sub.poll(int(quiet_s * 1000)):
            self._receive()
        return self.received

    def settle(self, service: Any, sent: Mapping[str, int], timeout_s: float = TIMEOUT_S
               ) -> list[Message]:
        """Wait until the service has received and explained every message ``sent`` per
        stream, then until this client holds every answer it published for those streams
        (results delivered, errors); returns everything received so far."""
        wait_until(settled(service, sent), f"the service's account of {dict(sent)} closes",
                   timeout_s)
        summary = service.summary()
        expected = {s: summary[s].delivered + summary[s].errors_total for s in sent}
        self.wait_for(lambda _: all(len(self.messages(s)) >= n for s, n in expected.items()),
                      timeout_s)
        return self.drain()

    def messages(self, stream: str) -> list[Message]:
        return [m for m in self.received if m.stream == stream]

    def answers(self, stream: str) -> dict[int, list[Message]]:
        """seq -> every answer received for it, on ``stream``."""
        out: dict[int, list[Message]] = {}
        for m in self.received:
            if m.stream == stream and m.seq is not None:
                out.setdefault(m.seq, []).append(m)
        return out

    def close(self) -> None:
        self.push.close(0)
        self.sub.close(0)
        term_context(self.ctx)


def live_answers(publish: str, ingest: str) -> Answers:
    """A :class:`bench.faults_rig.Answers` on ``publish`` whose subscription is live: probed
    through ``ingest`` until the service answers, so that nothing sent from now on is missed."""
    answers = Answers(publish)
    if not answers.wait_live(ingest, TIMEOUT_S):
        answers.close()
        raise AssertionError("subscription never became live")
    return answers


# ---------------------------------------------------------------------------------------------
# `sigstream run` as a real process


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that are running (not gone, not zombies), from /proc."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def start_logged(cmd: Sequence[str], ready: str | None = None, **kwargs: Any
                 ) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd`` with its stderr piped; with ``ready``, wait for a log line holding it and
    return that line. A thread reads the rest of the log, so the process never blocks on it."""
    proc = subprocess.Popen(list(cmd), stderr=subprocess.PIPE, text=True, **kwargs)
    assert proc.stderr is not None
    line = ""
    if ready is not None:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if ready in line:
                break
        else:
            raise AssertionError(f"{list(cmd)[3:5]} never said {ready!r}:\n"
                                 f"{''.join(seen)[-3000:]}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, line


class CliService:
    """``sigstream run PATH`` (eager, ``weights`` if given, ``extra`` options, ``top`` options
    of ``sigstream`` itself; ``env`` added to the environment) in its own session, its log
    collected by a thread. :meth:`ready` waits for it and returns its ingest and publish
    endpoints; :meth:`close` kills the whole session if it is still there."""

    def __init__(self, weights: Path | None, *extra: str, path: str = "spectral",
                 env: Mapping[str, str] | None = None, top: Sequence[str] = ()) -> None:
        cmd = [sys.executable, "-m", "stream.cli", *top, "run", path,
               "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*",
               "--backend", "eager", "--max-batch", "8", *extra]
        if weights is not None:
            cmd += ["--weights", str(weights)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "service ready" in line:
                self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def ready(self, timeout_s: float = TIMEOUT_S) -> tuple[str, str]:
        assert self._ready.wait(timeout_s), self.log
        found = re.search(r"ingest (\S+), publish (\S+?)[,\s]", self.log)
        assert found, self.log
        return found.group(1), found.group(2)

    def finish_log(self, timeout_s: float = 10.0) -> str:
        """The whole log, once the process has exited."""
        self._reader.join(timeout_s)
        return self.log

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: the service and its stages
            self.proc.wait()


def local_service_config(weights: Path, **settings: Any) -> ServiceConfig:
    """An eager spectral service on random 127.0.0.1 ports, batches of up to 8 rows after at
    most 1 ms, statistics every 0.1 s; ``settings`` add to these or replace them."""
    return ServiceConfig(**{
        "path": "spectral",
        "ingest": "tcp://127.0.0.1:*",
        "publish": "tcp://127.0.0.1:*",
        "backend": "eager",
        "weights": weights,
        "max_batch": 8,
        "max_wait_us": 1000,
        "stats_interval_s": 0.1,
        **settings,
    })
