"""What every stage has: the control socket, stats, answers to the publisher, server security,
and, for ingest and shards, the dispatcher and the supervisor's worker notices.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import zmq

from stream.dispatch import Dispatcher
from stream.errors import StageError
from stream.metrics import StageStats
from stream.security import (
    RefusedConnections,
    ServerGuard,
    ServerSecurity,
    curve_server,
    secure_server,
)
from stream.stages.config import END, DispatchConfig, StageWiring
from stream.wire import (
    Message,
    encode,
    error_message,
)

log = logging.getLogger(__name__)


POLL_IDLE_MS = 100  # longest sleep of a loop with nothing to do (stats, parent watch)
DRAIN_QUIET_MS = 20  # ingest drain: stop reading after this long without a message
DRAIN_MAX_S = 2.0  # ingest drain: stop reading after this long in any case
RECV_BURST = 512  # messages read per wake-up before the loop looks at its other duties


def trusted(frames: Sequence[Any]) -> Message:
    """Decode a message ingest already validated (internal sockets only): no checks, no
    copy of the payload (it views the received frame)."""
    header = msgpack.unpackb(frames[0].buffer if hasattr(frames[0], "buffer") else frames[0])
    buf = frames[1].buffer if hasattr(frames[1], "buffer") else frames[1]
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    return Message(header, np.frombuffer(buf, dtype=dtype).reshape(header["shape"]))


class Stage:
    """Base of the four stages: control socket, stats, error answers, parent watch."""

    def __init__(self, name: str, wiring: StageWiring, ctx: zmq.Context[Any]) -> None:
        self.name = name
        self.wiring = wiring
        self.ctx = ctx
        self.stats = StageStats(name, max_streams=wiring.max_streams)
        self._sockets: list[zmq.Socket[Any]] = []
        self._next_stats = 0.0
        self._control = self._socket(zmq.PUSH, linger_ms=wiring.linger_ms)
        self._control.connect(wiring.control)
        self._to_publisher: zmq.Socket[Any] | None = None
        self._guard: ServerGuard | None = None
        self._refused: RefusedConnections | None = None

    def _socket(self, kind: int, *, linger_ms: int | None = None, hwm: int | None = None
                ) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.linger = self.wiring.linger_ms if linger_ms is None else linger_ms
        sock.sndhwm = self.wiring.hwm if hwm is None else hwm
        sock.rcvhwm = self.wiring.hwm if hwm is None else hwm
        self._sockets.append(sock)
        return sock

    def report(self, event: str, **fields: Any) -> None:
        """Tell the supervisor. Never blocks the stage for long, and never raises: a stage's
        own bookkeeping must not take it down."""
        try:
            payload = msgpack.packb({"event": event, "stage": self.name, "pid": os.getpid(),
                                     **fields}, use_bin_type=True)
            self._control.send(payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("%s: control socket full, %s report lost", self.name, event)
        except Exception:
            log.exception("%s: %s report failed", self.name, event)

    def secure(self, sock: zmq.Socket[Any], security: ServerSecurity | None) -> None:
        """With keys, make ``sock`` (external, not yet bound) a CURVE server that accepts the
        listed clients only, and count the connections it refuses. A second socket of the
        stage shares the first one's ZAP handler, and so its list of clients."""
        if self._guard is not None and security is not None:
            curve_server(sock, security)
            return
        self._guard = secure_server(sock, security)
        if self._guard is not None:
            self._refused = RefusedConnections(sock)

    def tick(self) -> None:
        """Periodic duties: stats to the supervisor (also its sign of life for the watchdog),
        and exit when the supervisor is gone."""
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + self.wiring.stats_interval_s
        if self._refused is not None:
            self.stats.refused_connections += self._refused.take()
        self.report("stats", stats=self.stats.snapshot())
        if os.getppid() != self.wiring.parent_pid:
            raise StageError(f"{self.name}: the supervisor (pid {self.wiring.parent_pid}) is gone")

    def answer_error(
        self, code: str, reason: str, stream: str | None, seq: int | None
    ) -> None:
        """Publish an ``error`` for one input (the publisher counts it)."""
        self.send_publisher(encode(self._error(code, reason, stream, seq), topic=True))

    def _error(self, code: str, reason: str, stream: str | None, seq: int | None) -> Message:
        return error_message(code, reason, stream=stream, seq=seq, stage=self.name)

    def send_publisher(self, frames: Sequence[Any]) -> None:
        """Send to the publisher; while it is full or away (being restarted) wait, still
        reporting to the supervisor, so a publisher restart does not look like a stall here."""
        sock = self._to_publisher
        assert sock is not None
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                sock.poll(POLL_IDLE_MS, zmq.POLLOUT)
                self.tick()

    def open(self) -> dict[str, Any]:
        """Bind and connect (and, for workers, load the engine). Returns ready info."""
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def close_control(self) -> None:
        """Close the control socket, last (after the final report)."""
        self._control.close()

    def close(self) -> None:
        """Close every socket but the control one (each with its linger), and the ZAP handler.
        Safe twice."""
        if self._refused is not None:
            self._refused.close()
        for sock in self._sockets:
            if sock is not self._control and not sock.closed:
                sock.close()
        if self._guard is not None:
            self._guard.close()


def bind(sock: zmq.Socket[Any], endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise StageError(f"cannot bind {what} {endpoint}: {exc}") from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


class DispatchingStage(Stage):
    """A stage that owns per-stream stages and a :class:`Dispatcher` (ingest without shards,
    or a shard), and obeys the supervisor's worker notices."""

    dispatcher: Dispatcher | None = None

    def _make_dispatcher(self, path: Any, config: DispatchConfig) -> Dispatcher:
        return Dispatcher(
            self, path, workers=config.workers, results=config.results, origin=config.origin,
            credit=config.credit, make_socket=self._socket, tick=self.tick,
            max_streams=self.wiring.max_streams,
        )

    def on_command(self, command: bytes) -> bool:
        """Apply one supervisor command; True for ``stop``."""
        verb, _, arg = command.partition(b" ")
        if verb == b"stop":
            return True
        if self.dispatcher is not None and arg.isdigit():
            j = int(arg)
            if verb == b"lost":
                n = self.dispatcher.worker_lost(j)
                log.warning("%s: worker-%d lost; %d messages it held answered worker_lost",
                            self.name, j, n)
            elif verb == b"up":
                self.dispatcher.worker_up(j)
        return False

    def drain_dispatcher(self, deadline: float, poll: Any) -> None:
        """Flush the stream stages, wait for every answer (until ``deadline``), then tell the
        workers to stop."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        dispatcher.finish()
        dispatcher.wait_idle(deadline, poll)
        if dispatcher.inflight:
            log.warning("%s: %d messages unanswered at the drain deadline", self.name,
                        dispatcher.inflight)
            dispatcher.answer_all_lost("the service stopped before the engine answered")
        dispatcher.end_workers(END)
