"""Pipeline stages: what runs inside each process of a :class:`~stream.service.Service`.

::

    sender --PUSH--> ingest --(crc32(stream) % shards)--> shard k --(tagged)--> worker j
                     [door]                                  ^  |                  |
                       |                                     |  +-- answers <------+
                       +---- errors, answers ----------> publisher <-- answers ----+
                                                      (PUB, topic "<kind>/<stream>")

- **ingest** binds the external PULL and reads it greedily: every message is validated with
  :func:`stream.wire.decode` (wire errors and wrong kinds answered at once), ``seq`` is tracked
  per stream (ingest sees every stream in arrival order), and the message waits at the
  :class:`~stream.dispatch.Door` (bounded in messages and bytes, shedding by its policy, answering
  ``expired`` past the path's deadline) until there is room downstream. It then goes to shard
  ``crc32(stream) % shards`` — or, in a service without shards, through the path's per-stream
  stage right here (one hop less, for paths whose per-stream work is light, such as spectra).
- **shard** runs the path's per-stream stage (:class:`StreamStage`) on every message of its
  streams, in order, and hands the output to the engine workers.
- ingest (without shards) or each shard is a :class:`~stream.dispatch.Dispatcher`: it tags
  every message it hands to a worker, gets the answer back, and forwards it to the publisher,
  so it knows what each worker holds and answers ``worker_lost`` for it if that worker dies.
- **worker** loads the path's engine once (:meth:`Path.load_worker`), prepares each message into
  engine rows, batches rows across streams with :class:`engines.batcher.DynamicBatcher`
  (``max_batch`` rows or ``max_wait_us``, whichever first), makes one engine call per batch and
  sends one answer per message back to the dispatcher that sent it.
- **publisher** binds the external PUB and sends every answer; it is where answers are counted
  (delivered, errors and drops by code) and capture-to-result latency is measured.

Internal sockets are PUSH/PULL over ``ipc://`` in the service's private folder. A data message is
the sender's two frames ``[header, payload]`` (forwarded without re-encoding), prefixed with its
tag between a dispatcher and a worker; a message for the publisher is ``[topic, header,
payload]``; a one-frame message is the end marker :data:`END`, which flows down when the service
drains (ingest stops reading and empties its door, dispatchers wait for every answer, the
publisher sends everything and closes).

Every stage reports to the supervisor on a control socket (msgpack maps): ``ready`` (with the
endpoints it bound), ``failed`` (with the error), ``stats`` (a
:meth:`~stream.metrics.StageStats.snapshot`, a few times a second; the supervisor's watchdog
reads silence as a stall) and ``stopped``. The supervisor tells dispatchers on their command
socket when a worker is lost or back (``lost <j>``, ``up <j>``) and tells ingest to ``stop``.
Each stage is a single-threaded loop; :func:`stage_main` is the process entry point. Stage
processes ignore SIGINT and SIGTERM: a terminal or ``systemctl stop`` signals the whole process
group, and it is the supervisor that decides how to drain.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing.util
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Protocol

import msgpack
import numpy as np
import zmq

from stream.dispatch import Dispatcher, Door, DoorConfig, origin_of, shard_of
from stream.errors import InputError, StageError, WireError
from stream.metrics import StageStats
from stream.queues import BoundedQueue, QueuePolicy
from stream.security import (
    RefusedConnections,
    ServerGuard,
    ServerSecurity,
    secure_server,
    stamp_peer,
)
from stream.wire import (
    ERROR_KIND,
    Message,
    WireLimits,
    decode,
    encode,
    error_message,
    result_message,
)

__all__ = [
    "END",
    "DROP_CODES",
    "IngestConfig",
    "Path",
    "PathWorker",
    "PublisherConfig",
    "ShardConfig",
    "StageWiring",
    "StreamStage",
    "WorkerConfig",
    "shard_of",
    "stage_main",
]

END = b"END"
"""The end marker: a one-frame message on an internal socket."""

DROP_CODES = frozenset({"dropped", "expired", "overloaded"})
"""Error codes of messages given up under load (counted as drops, not as errors)."""

log = logging.getLogger(__name__)

_POLL_IDLE_MS = 100  # longest sleep of a loop with nothing to do (stats, parent watch)
_DRAIN_QUIET_MS = 20  # ingest drain: stop reading after this long without a message
_DRAIN_MAX_S = 2.0  # ingest drain: stop reading after this long in any case
_RECV_BURST = 512  # messages read per wake-up before the loop looks at its other duties


# ---------------------------------------------------------------------------------------------
# How a path plugs in


class StreamStage(Protocol):
    """Per-stream stage of a path, run on every message of one stream, in order. Stateful DSP
    keeps its state on the instance."""

    def process(self, msg: Message) -> Sequence[Message]:
        """Messages for the engine workers. Returning ``msg`` itself forwards its received
        frames unchanged. Raises :class:`~stream.errors.InputError` for an input it rejects."""
        ...

    def flush(self) -> Sequence[Message]:
        """End of stream: anything held back."""
        ...


class PathWorker(Protocol):
    """Engine half of a path, loaded once per worker process."""

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        """Engine rows ``(n, *row_shape)`` float32 for ``msg``, and an opaque plan.
        Raises :class:`~stream.errors.InputError`."""
        ...

    def run(self, rows: np.ndarray) -> np.ndarray:
        """One engine call on rows of many messages."""
        ...

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        """The result body for ``msg`` from its rows' outputs. Raises ``InputError``."""
        ...

    def close(self) -> None: ...


class Path(Protocol):
    """A processing path: a frozen, picklable description the stage processes receive.

    A stream stage may answer message for message (returning ``msg`` itself, or a message in
    its place) or keep inputs in its stream's state and make messages of its own (ECG: chunks
    in, beats out); the runtime counts the inputs it consumed and the messages it emitted
    (:mod:`stream.accounting`). A message it makes whose kind is ``result.*`` (a status report
    that needs no engine) goes straight to the publisher.
    """

    name: str  # results are kind "result.<name>"
    input_kind: str  # the wire kind this path serves ("spectrum", "ecg", ...)
    # True: every message of a stream goes to the same worker, in order (the worker keeps
    # per-stream state, such as a fused decision over the last beats); False: round robin.
    sticky_streams: bool

    def stream_stage(self, stream: str) -> StreamStage: ...

    def load_worker(
        self, *, backend: str, max_batch: int, cache_dir: FsPath | None, threads: int | None
    ) -> PathWorker: ...


# ---------------------------------------------------------------------------------------------
# Stage configurations (frozen, picklable: they cross the spawn boundary)


@dataclass(frozen=True, kw_only=True)
class StageWiring:
    """What every stage process needs besides its own settings.

    ``control``: the supervisor's PULL endpoint. ``parent_pid``: the supervisor; a stage whose
    parent changed exits. ``hwm``: high-water mark (messages) of internal sockets.
    ``linger_ms``: how long closing a socket may wait to deliver what is queued.
    """

    control: str
    parent_pid: int
    hwm: int = 1024
    linger_ms: int = 2000
    stats_interval_s: float = 0.5
    max_streams: int = 4096
    log_level: int = logging.INFO


@dataclass(frozen=True, kw_only=True)
class DispatchConfig:
    """A dispatcher's side of the worker hand-off: the workers' input endpoints, the endpoint
    it binds for their answers, its index among dispatchers, and the credit per worker."""

    workers: tuple[str, ...]
    results: str
    origin: int
    credit: int


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """``endpoint``: external PULL to bind; ``command``: ipc PULL for the supervisor's
    commands; ``shards``/``publisher``: ipc endpoints to connect; ``max_message_bytes``: ZeroMQ
    ``MAXMSGSIZE`` (a bigger frame disconnects its sender before anything is allocated);
    ``door``: the bounded queue behind the socket. With no ``shards``, ingest runs the
    ``path``'s per-stream stages itself and hands their output on through ``dispatch``."""

    name: str
    wiring: StageWiring
    endpoint: str
    command: str
    shards: tuple[str, ...]
    publisher: str
    input_kind: str
    limits: WireLimits
    max_message_bytes: int
    door: DoorConfig
    drain_s: float = 10.0
    path: Any = None  # a Path; used when there are no shards
    dispatch: DispatchConfig | None = None
    security: ServerSecurity | None = None


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """``endpoint``: ipc PULL to bind; ``command``: ipc PULL for the supervisor's commands;
    ``dispatch``: the worker hand-off; ``publisher``: ipc endpoint to connect."""

    name: str
    wiring: StageWiring
    path: Any  # a Path
    endpoint: str
    command: str
    dispatch: DispatchConfig
    publisher: str
    drain_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """``endpoint``: ipc PULL to bind; ``origins``: the dispatchers' answer endpoints, by
    origin index (their end markers tell it to stop); ``queue_depth``: its bounded queue (the
    dispatchers' credit keeps it from overflowing); ``max_batch`` (engine rows) and
    ``max_wait_us`` (counted from the capture time of the oldest message waiting): the
    batcher's bounds; ``threads``: intra-op threads of the engine."""

    name: str
    wiring: StageWiring
    path: Any  # a Path
    endpoint: str
    origins: tuple[str, ...]
    backend: str
    cache_dir: FsPath | None
    max_batch: int
    max_wait_us: int
    queue_depth: int
    threads: int | None


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """``endpoint``: external PUB to bind; ``inputs``: ipc PULL to bind; ``upstream``: how
    many stages send it end markers (ingest and the shards); ``sndhwm``: messages queued per
    subscriber before ZeroMQ drops for that subscriber (with answers of at most a few KB this
    bounds a slow subscriber's cost in bytes); ``linger_ms``: time to flush at close."""

    name: str
    wiring: StageWiring
    endpoint: str
    inputs: str
    upstream: int
    sndhwm: int = 10_000
    linger_ms: int = 2000
    security: ServerSecurity | None = None


StageConfig = IngestConfig | ShardConfig | WorkerConfig | PublisherConfig


# ---------------------------------------------------------------------------------------------
# Shared machinery


def _trusted(frames: Sequence[Any]) -> Message:
    """Decode a message ingest already validated (internal sockets only): no checks, no
    copy of the payload (it views the received frame)."""
    header = msgpack.unpackb(frames[0].buffer if hasattr(frames[0], "buffer") else frames[0])
    buf = frames[1].buffer if hasattr(frames[1], "buffer") else frames[1]
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    return Message(header, np.frombuffer(buf, dtype=dtype).reshape(header["shape"]))


class _Stage:
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
        listed clients only, and count the connections it refuses."""
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
                sock.poll(_POLL_IDLE_MS, zmq.POLLOUT)
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


def _bind(sock: zmq.Socket[Any], endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise StageError(f"cannot bind {what} {endpoint}: {exc}") from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


class _DispatchingStage(_Stage):
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


# ---------------------------------------------------------------------------------------------
# Ingest


class IngestStage(_DispatchingStage):
    """External PULL -> validation -> door -> shard by stream id (or, without shards, the
    per-stream stages here and on to the workers). See the module docstring."""

    def __init__(self, config: IngestConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL, linger_ms=0, hwm=config.door.depth)
        self._pull.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self._command = self._socket(zmq.PULL, linger_ms=0)
        self._shards = [self._socket(zmq.PUSH) for _ in config.shards]
        if not config.shards:
            assert config.dispatch is not None
            self.dispatcher = self._make_dispatcher(config.path, config.dispatch)
        self._to_publisher = self._socket(zmq.PUSH)
        self._input_kind = config.input_kind
        self.door = Door(config.door, self)
        self._poller = zmq.Poller()
        self._reading = False

    def open(self) -> dict[str, Any]:
        cfg = self.config
        _bind(self._command, cfg.command, "command socket")
        for sock, endpoint in zip(self._shards, cfg.shards, strict=True):
            sock.connect(endpoint)
        if self.dispatcher is not None:
            self.dispatcher.connect()
            self._poller.register(self.dispatcher.results, zmq.POLLIN)
        assert self._to_publisher is not None
        self._to_publisher.connect(cfg.publisher)
        self._poller.register(self._command, zmq.POLLIN)
        self.secure(self._pull, cfg.security)
        bound = _bind(self._pull, cfg.endpoint, "ingest")
        return {"endpoint": bound}

    def run(self) -> None:
        while True:
            if self._poll(self._timeout_ms()):
                break
            self.tick()
        self._drain()

    def _poll(self, timeout_ms: int) -> bool:
        """Wait for and handle every socket once; True when told to stop."""
        # A ``block`` door that is full stops reading: the senders feel back-pressure.
        want = not (self.door.policy is QueuePolicy.BLOCK and self.door.full())
        if want != self._reading:
            if want:
                self._poller.register(self._pull, zmq.POLLIN)
            else:
                self._poller.unregister(self._pull)
            self._reading = want
        events = dict(self._poller.poll(timeout_ms))
        if self._pull in events:
            self._read(_RECV_BURST)
        if self.dispatcher is not None and self.dispatcher.results in events:
            self.dispatcher.pump()
        stop = False
        if self._command in events:
            while True:
                try:
                    command = self._command.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                stop = self.on_command(command) or stop
        now = time.monotonic_ns()
        self.door.expire(now)
        self._forward()
        self.stats.queue = self.door.statistics()
        return stop

    def _timeout_ms(self) -> int:
        if self.door and self._has_room():
            return 0
        expiry = self.door.next_expiry_ns()
        if expiry is None:
            return _POLL_IDLE_MS
        return max(0, min(_POLL_IDLE_MS, -(-(expiry - time.monotonic_ns()) // 1_000_000)))

    def _has_room(self) -> bool:
        if self.dispatcher is not None:
            return self.dispatcher.can_take(self.door.peek()[0].header["stream"])
        return True  # shards: _forward tries, and stops at the first full one

    def _forward(self) -> None:
        """Move messages from the door downstream while there is room."""
        door = self.door
        dispatcher = self.dispatcher
        stats = self.stats
        while door:
            msg, frames = door.peek()
            stream = msg.header["stream"]
            if dispatcher is not None:
                if not dispatcher.can_take(stream):
                    return
                door.pop()
                dispatcher.handle(msg, frames)
                continue
            shard = self._shards[shard_of(stream, len(self._shards))]
            try:
                shard.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # that shard is full: the door holds the rest
            door.pop()
            stats.frame_out(stream)

    def _drain(self) -> None:
        """Stop: answer what senders already delivered, then send the end markers."""
        cfg = self.config
        deadline = time.monotonic() + _DRAIN_MAX_S
        while time.monotonic() < deadline and self._pull.poll(_DRAIN_QUIET_MS, zmq.POLLIN):
            self._read(_RECV_BURST)
        if self._reading:
            self._poller.unregister(self._pull)
            self._reading = False
        self._pull.close(linger=0)
        end = time.monotonic() + cfg.drain_s
        while self.door and time.monotonic() < end:
            self._poll(20)
            self.tick()
        self.door.drop_all("the service stopped before this message could be served")
        for sock in self._shards:
            sock.send(END)
        self.drain_dispatcher(end, self._poll)
        self.send_publisher([END])
        log.info("%s: drained, end marker sent", self.name)

    def _read(self, budget: int) -> None:
        pull = self._pull
        for _ in range(budget):
            if self.door.policy is QueuePolicy.BLOCK and self.door.full():
                return
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._admit(frames)
            except Exception as exc:  # decode raises only WireError; no bug may take ingest down
                log.exception("%s: unexpected failure on a message", self.name)
                self.stats.ledger.received(None)
                self.answer_error("internal", f"ingest failed: {type(exc).__name__}", None, None)

    def _admit(self, frames: list[Any]) -> None:
        stats = self.stats
        try:
            msg = decode(frames, limits=self.config.limits)
        except WireError as exc:
            stats.frame_in(exc.stream)
            stats.ledger.received(exc.stream, exc.seq)
            self.answer_error(exc.code, exc.reason, exc.stream, exc.seq)
            return
        header = msg.header
        stream, seq = header["stream"], header.get("seq")
        stats.frame_in(stream)
        stats.ledger.received(stream, seq)
        if header["kind"] != self._input_kind:
            self.answer_error(
                "wrong_kind",
                f"this service serves kind {self._input_kind!r}, got {header['kind']!r}",
                stream, seq,
            )
            return
        # Only the ZAP-authenticated key may name the sender; nothing a sender writes can.
        frames = stamp_peer(header, frames, self.config.security is not None)
        self.door.put(msg, frames, time.monotonic_ns())


# ---------------------------------------------------------------------------------------------
# Shard


class ShardStage(_DispatchingStage):
    """Per-stream stages of the streams that hash here, in order; output to the workers."""

    def __init__(self, config: ShardConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL)
        self._command = self._socket(zmq.PULL, linger_ms=0)
        self.dispatcher = self._make_dispatcher(config.path, config.dispatch)
        self._to_publisher = self._socket(zmq.PUSH)
        self._poller = zmq.Poller()
        self._ended = False

    def open(self) -> dict[str, Any]:
        _bind(self._command, self.config.command, "command socket")
        _bind(self._pull, self.config.endpoint, "shard input")
        assert self.dispatcher is not None
        self.dispatcher.connect()
        assert self._to_publisher is not None
        self._to_publisher.connect(self.config.publisher)
        self._poller.register(self.dispatcher.results, zmq.POLLIN)
        self._poller.register(self._command, zmq.POLLIN)
        return {}

    def run(self) -> None:
        while not self._ended:
            self._poll(_POLL_IDLE_MS)
            self.tick()
        self.drain_dispatcher(time.monotonic() + self.config.drain_s, self._poll)
        self.send_publisher([END])
        log.info("%s: drained, end marker sent", self.name)

    def _poll(self, timeout_ms: int) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        # Read only while a worker has room: otherwise the backlog waits at ingest's door.
        reading = not self._ended and dispatcher.can_take()
        if reading:
            self._poller.register(self._pull, zmq.POLLIN)
        events = dict(self._poller.poll(timeout_ms))
        if reading:
            self._poller.unregister(self._pull)
        if dispatcher.results in events:
            dispatcher.pump()
        if self._command in events:
            while True:
                try:
                    self.on_command(self._command.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
        if self._pull in events:
            self._read()

    def _read(self) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        for _ in range(_RECV_BURST):
            if not dispatcher.can_take():
                return
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1:  # the end marker: ingest is the only upstream
                self._ended = True
                return
            msg = _trusted(frames)
            self.stats.frame_in(msg.header["stream"])
            dispatcher.handle(msg, frames)


# ---------------------------------------------------------------------------------------------
# Engine worker


class _Item:
    __slots__ = ("msg", "plan", "rows", "tag")

    def __init__(self, tag: bytes, msg: Message, rows: np.ndarray, plan: Any) -> None:
        self.tag = tag
        self.msg = msg
        self.rows = rows
        self.plan = plan


class WorkerStage(_Stage):
    """Queue -> prepare -> batch across streams -> engine -> finish; every answer goes back,
    tagged, to the dispatcher that sent the message."""

    def __init__(self, config: WorkerConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        from engines.batcher import BatcherConfig, DynamicBatcher

        self.config = config
        self.path = config.path
        self._pull = self._socket(zmq.PULL, hwm=0)  # the dispatchers' credit bounds it
        self._origins = [self._socket(zmq.PUSH, hwm=0) for _ in config.origins]
        self.queue: BoundedQueue[tuple[bytes, Message]] = BoundedQueue(
            config.queue_depth, QueuePolicy.DROP_OLDEST
        )
        self.batcher: DynamicBatcher[_Item] = DynamicBatcher(
            BatcherConfig(max_batch=config.max_batch, max_wait_us=config.max_wait_us)
        )
        self.worker: PathWorker | None = None
        self._ends = 0
        self._result_path = config.path.name

    def open(self) -> dict[str, Any]:
        cfg = self.config
        _bind(self._pull, cfg.endpoint, "worker input")
        for sock, endpoint in zip(self._origins, cfg.origins, strict=True):
            sock.connect(endpoint)
        t0 = time.perf_counter()
        self.worker = self.path.load_worker(
            backend=cfg.backend, max_batch=cfg.max_batch, cache_dir=cfg.cache_dir,
            threads=cfg.threads,
        )
        engine = getattr(self.worker, "engine", None)
        return {
            "load_s": round(time.perf_counter() - t0, 3),
            "backend": str(getattr(engine, "backend", cfg.backend)),
        }

    def run(self) -> None:
        pull, queue, batcher = self._pull, self.queue, self.batcher
        upstream = len(self.config.origins)
        while True:
            ending = self._ends >= upstream
            now = time.monotonic_ns()
            if queue or ending:
                timeout_ms = 0
            else:
                deadline = batcher.deadline_ns()
                timeout_ms = (
                    _POLL_IDLE_MS if deadline is None
                    else max(0, min(_POLL_IDLE_MS, -(-(deadline - now) // 1_000_000)))
                )
            if not ending and pull.poll(timeout_ms, zmq.POLLIN):
                self._read()
            self._fill()
            now = time.monotonic_ns()
            if batcher.due(now) or (ending and not queue and len(batcher)):
                self._run_batch(batcher.take())
            elif ending and not queue and not len(batcher):
                break
            self.stats.queue = queue.statistics()
            self.tick()
        log.info("%s: drained", self.name)

    def _read(self) -> None:
        pull, queue = self._pull, self.queue
        for _ in range(_RECV_BURST):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1:
                self._ends += 1
                continue
            tag = frames[0].bytes
            msg = _trusted(frames[1:])
            self.stats.frame_in(msg.header["stream"])
            lost = queue.put((tag, msg))
            if lost is not None:  # more than the credit: a dispatcher bug, still answered
                old_tag, old = lost
                self._answer_error(old_tag, old, "dropped", f"{self.name} queue full")

    def _answer(self, tag: bytes, frames: list[bytes]) -> None:
        self._origins[origin_of(tag)].send_multipart([tag, *frames], copy=False)

    def _answer_error(self, tag: bytes, msg: Message, code: str, reason: str) -> None:
        h = msg.header
        self._answer(tag, encode(self._error(code, reason, h["stream"], h.get("seq")),
                                 topic=True))

    def _fill(self) -> None:
        """Prepare queued messages into the batcher until it holds a full batch."""
        queue, batcher, worker = self.queue, self.batcher, self.worker
        assert worker is not None
        max_batch = self.config.max_batch
        while queue and batcher.pending_rows < max_batch:
            tag, msg = queue.get()
            try:
                rows, plan = worker.prepare(msg)
            except InputError as exc:
                self._answer_error(tag, msg, exc.code, exc.reason)
                continue
            except Exception as exc:
                log.exception("%s: prepare failed", self.name)
                self._answer_error(tag, msg, "internal", f"prepare failed: {type(exc).__name__}")
                continue
            batcher.add(_Item(tag, msg, rows, plan), int(rows.shape[0]),
                        now_ns=self._arrival_ns(msg.header.get("t_ns")))

    @staticmethod
    def _arrival_ns(t_ns: Any) -> int:
        """The message's capture time on the monotonic clock, so ``max_wait_us`` bounds the
        wait for batch companions from capture, not from when this worker got to it: a message
        that already waited upstream or behind a busy engine does not wait again. Clamped to
        now (a sender clock ahead of ours); a sender clock behind ours only means no wait."""
        now = time.monotonic_ns()
        if not isinstance(t_ns, int):
            return now
        return now - max(0, time.time_ns() - t_ns)

    def _run_batch(self, items: Sequence[_Item]) -> None:
        worker = self.worker
        assert worker is not None
        if not items:
            return
        rows = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
        t0 = time.perf_counter()
        try:
            outputs = self._run_engine(rows)
        except Exception as exc:
            log.exception("%s: engine failed on a batch of %d rows", self.name, rows.shape[0])
            for item in items:
                self._answer_error(item.tag, item.msg, "engine_failed",
                                   f"engine failed: {type(exc).__name__}")
            return
        self.stats.observe_batch(int(rows.shape[0]), time.perf_counter() - t0)
        offset = 0
        for item in items:
            n = item.rows.shape[0]
            header = item.msg.header
            try:
                body = worker.finish(item.msg, outputs[offset:offset + n], item.plan)
                frames = encode(result_message(self._result_path, header, body), topic=True)
            except InputError as exc:
                self._answer_error(item.tag, item.msg, exc.code, exc.reason)
            except Exception as exc:
                log.exception("%s: finish failed", self.name)
                self._answer_error(item.tag, item.msg, "internal",
                                   f"finish failed: {type(exc).__name__}")
            else:
                self._answer(item.tag, frames)
                self.stats.frame_out(header["stream"])
            offset += n

    def _run_engine(self, rows: np.ndarray) -> np.ndarray:
        """Engine call(s): one per ``max_batch`` rows (a long spectrum may need several)."""
        worker = self.worker
        assert worker is not None
        max_batch = self.config.max_batch
        if rows.shape[0] <= max_batch:
            return worker.run(np.ascontiguousarray(rows, dtype=np.float32))
        return np.concatenate([
            worker.run(np.ascontiguousarray(rows[i:i + max_batch], dtype=np.float32))
            for i in range(0, rows.shape[0], max_batch)
        ])

    def close(self) -> None:
        super().close()
        if self.worker is not None:
            self.worker.close()
            self.worker = None


# ---------------------------------------------------------------------------------------------
# Publisher


class PublisherStage(_Stage):
    """Internal PULL -> external PUB. Every answer is counted here, where it leaves: results
    delivered, errors and drops by code, and capture-to-result latency."""

    def __init__(self, config: PublisherConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL)
        self._pub = self._socket(zmq.PUB, linger_ms=config.linger_ms, hwm=config.sndhwm)

    def open(self) -> dict[str, Any]:
        _bind(self._pull, self.config.inputs, "publisher input")
        self.secure(self._pub, self.config.security)
        bound = _bind(self._pub, self.config.endpoint, "publish")
        return {"endpoint": bound}

    def run(self) -> None:
        pull, pub = self._pull, self._pub
        ends = 0
        pull.rcvtimeo = _POLL_IDLE_MS
        while ends < self.config.upstream:
            try:
                frames = pull.recv_multipart(copy=False)
            except zmq.Again:
                self.tick()
                continue
            for _ in range(_RECV_BURST):
                if len(frames) == 1:
                    ends += 1
                elif len(frames) == 3:
                    pub.send_multipart(frames, copy=False)
                    self._count(frames)
                try:
                    frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
            self.tick()
        log.info("%s: every upstream stage ended; closing", self.name)

    def _count(self, frames: list[Any]) -> None:
        try:
            header = msgpack.unpackb(frames[1].buffer)
            stream = header.get("stream")
            stream = stream if isinstance(stream, str) else None
        except Exception:  # our own stages wrote it; never let counting take the loop down
            log.exception("%s: unreadable header of an answer", self.name)
            return
        stats = self.stats
        stats.frame_out(stream)
        if header.get("kind") == ERROR_KIND:
            code = str(header.get("code", "error"))
            if code in DROP_CODES:
                stats.ledger.dropped(stream, code)
            else:
                stats.ledger.error(stream, code)
            return
        if stream is None:
            return
        stats.ledger.delivered(stream)
        t_ns = header.get("t_ns")
        if isinstance(t_ns, int):
            stats.observe_latency(stream, max(0, time.time_ns() - t_ns) / 1e9)


# ---------------------------------------------------------------------------------------------
# Process entry point


def stage_main(config: StageConfig) -> None:
    """Entry point of a stage process (``multiprocessing`` spawn target).

    SIGINT and SIGTERM are ignored here: a terminal or a service manager signals the whole
    process group, and it is the supervisor that decides how to drain (it kills a stage with
    SIGKILL when it must). Exits 0 after a clean drain, 1 on failure; either way the
    supervisor hears ``failed``/``stopped`` first. Never returns.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=config.wiring.log_level,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
    ctx: zmq.Context[Any] = zmq.Context()
    stage: _Stage | None = None
    status = 0
    try:
        stage = _make_stage(config, ctx)
        try:
            info = stage.open()
        except BaseException as exc:
            stage.report("failed", error=_describe(exc), during="start")
            status = 1
        else:
            # Everything allocated so far (torch, the engine, imports) lives as long as the
            # process: take it out of the collector's reach, so a full collection on the hot
            # path walks only the objects made since, not a heap of millions.
            gc.collect()
            gc.freeze()
            stage.report("ready", **info)
            stage.run()
    except BaseException as exc:
        log.exception("%s failed", config.name)
        if stage is not None:
            stage.report("failed", error=_describe(exc), during="run")
        status = 1
    finally:
        if stage is not None:
            stage.close()
            stage.report("stopped", stats=stage.stats.snapshot(), status=status)
            stage.close_control()
        ctx.term()
    # Every socket is closed and flushed: skip the interpreter teardown, which takes seconds
    # once torch is loaded and would only delay the supervisor's join. multiprocessing's own
    # finalizers still run, so semaphores that libraries created (the ONNX export does) are
    # released rather than reported as leaked by the resource tracker.
    try:
        getattr(multiprocessing.util, "_run_finalizers")()  # noqa: B009 - what exit runs
    except Exception:
        log.debug("multiprocessing finalizers failed", exc_info=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _make_stage(config: StageConfig, ctx: zmq.Context[Any]) -> _Stage:
    if isinstance(config, IngestConfig):
        return IngestStage(config, ctx)
    if isinstance(config, ShardConfig):
        return ShardStage(config, ctx)
    if isinstance(config, WorkerConfig):
        return WorkerStage(config, ctx)
    if isinstance(config, PublisherConfig):
        return PublisherStage(config, ctx)
    raise TypeError(f"not a stage config: {type(config).__name__}")


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (StageError, WireError)):
        text += "\n" + "".join(traceback.format_exception(exc, limit=-3)).rstrip()
    return text
