"""Pipeline stages: what runs inside each process of a :class:`~stream.service.Service`.

::

    sender --PUSH--> ingest --(crc32(stream) % shards)--> shard k --(round robin)--> worker j
                       |                                     |                          |
                       +------- errors ------------------>  publisher  <--- results ----+
                                                           (PUB, topic "<kind>/<stream>")

- **ingest** binds the external PULL, validates every message with :func:`stream.wire.decode`,
  answers wire errors and wrong kinds, tracks ``seq`` per stream (it sees every stream in
  arrival order) and forwards the received frames untouched to shard
  ``zlib.crc32(stream) % shards``.
- **shard** runs the path's per-stream stage (:class:`StreamStage`) on every message of its
  streams, in order, and hands the output to the engine workers round robin. A service with
  no shards runs the per-stream stages inside ingest instead (it sees every stream in order
  too): one hop less, for paths whose per-stream work is light, such as spectra.
- **worker** loads the path's engine once (:meth:`Path.load_worker`), drains its socket into a
  :class:`~stream.queues.BoundedQueue` with the configured policy (every message the policy
  gives up is answered ``dropped`` or ``overloaded``), prepares each message into engine rows,
  batches rows across streams with :class:`engines.batcher.DynamicBatcher` (``max_batch`` rows
  or ``max_wait_us``, whichever first), makes one engine call per batch and publishes one result
  per message.
- **publisher** binds the external PUB and sends everything it receives; it measures
  capture-to-result latency and counts deliveries.

Internal sockets are PUSH/PULL over ``ipc://`` in the service's private folder. On them a data
message is the sender's two frames ``[header, payload]`` (forwarded without re-encoding), a
message for the publisher is ``[topic, header, payload]``, and a one-frame message is the end
marker :data:`END`: it flows down every path when the service drains (ingest stops reading,
shards flush, workers flush their batches, the publisher sends everything and closes). Each
stage's sockets apply back-pressure (``block``) except the workers' queue, which applies the
configured policy: that is where a backlog builds up when the engines are the bottleneck.

Every stage reports to the supervisor on a control socket (msgpack maps): ``ready`` (with the
endpoints it bound), ``failed`` (with the error), ``stats`` (a
:meth:`~stream.metrics.StageStats.snapshot`, a few times a second) and ``stopped``. Each stage
is a single-threaded loop; :func:`stage_main` is the process entry point.

Paths plug in through :class:`Path`: declared input kind, a per-stream stage factory (run in a
shard process; stateful DSP such as filters with ``zi`` or an R-peak detector lives there),
and an engine worker (run in a worker process: ``prepare`` -> batched engine call ->
``finish``). See :mod:`stream.spectral`.
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
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Protocol

import msgpack
import numpy as np
import zmq

from stream.errors import InputError, StageError, WireError
from stream.metrics import StageStats
from stream.queues import BoundedQueue, QueuePolicy
from stream.wire import (
    ERROR_KIND,
    RESULT_PREFIX,
    Message,
    WireLimits,
    decode,
    encode,
    error_message,
    result_message,
)

__all__ = [
    "END",
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

log = logging.getLogger(__name__)

_POLL_IDLE_MS = 100  # longest sleep of a loop with nothing to do (stats, parent watch)
_COMMAND_CHECK_S = 0.05  # ingest: how often it looks for the supervisor's stop
_DRAIN_QUIET_MS = 20  # ingest drain: stop reading after this long without a message
_DRAIN_MAX_S = 2.0  # ingest drain: stop reading after this long in any case
_RECV_BURST = 512  # messages read per wake-up before the loop looks at its other duties


# ---------------------------------------------------------------------------------------------
# How a path plugs in


class StreamStage(Protocol):
    """Per-stream stage of a path, run by a shard process on every message of one stream, in
    order. Stateful DSP keeps its state on the instance."""

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


def shard_of(stream: str, shards: int) -> int:
    """The shard that owns ``stream``: ``zlib.crc32`` of its UTF-8 id, stable across runs and
    processes (unlike ``hash``)."""
    return zlib.crc32(stream.encode()) % shards


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
class IngestConfig:
    """``endpoint``: external PULL to bind; ``command``: ipc PULL for the supervisor's stop;
    ``shards``/``publisher``: ipc endpoints to connect; ``max_message_bytes``: ZeroMQ
    ``MAXMSGSIZE`` (a bigger frame disconnects its sender before anything is allocated).
    With no ``shards``, ingest runs the ``path``'s per-stream stages itself and hands their
    output to ``workers``: one hop less, for paths whose per-stream work is light."""

    name: str
    wiring: StageWiring
    endpoint: str
    command: str
    shards: tuple[str, ...]
    publisher: str
    input_kind: str
    limits: WireLimits
    max_message_bytes: int
    rcvhwm: int = 1024
    path: Any = None  # a Path; used when there are no shards
    workers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """``endpoint``: ipc PULL to bind; ``workers``/``publisher``: ipc endpoints to connect."""

    name: str
    wiring: StageWiring
    path: Any  # a Path
    endpoint: str
    workers: tuple[str, ...]
    publisher: str


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """``endpoint``: ipc PULL to bind; ``upstream``: how many stages send to it, the shards or
    else ingest (end markers to wait for); ``queue_depth``/``queue_policy``: its bounded
    queue; ``max_batch`` (engine rows) and ``max_wait_us`` (counted from the capture time of
    the oldest message waiting): the batcher's bounds; ``threads``: intra-op threads of the
    engine."""

    name: str
    wiring: StageWiring
    path: Any  # a Path
    endpoint: str
    publisher: str
    upstream: int
    backend: str
    cache_dir: FsPath | None
    max_batch: int
    max_wait_us: int
    queue_depth: int
    queue_policy: str
    threads: int | None


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """``endpoint``: external PUB to bind; ``inputs``: ipc PULL to bind; ``upstream``: how
    many stages send to it (end markers to wait for); ``sndhwm``: messages queued per
    subscriber before ZeroMQ drops for that subscriber; ``linger_ms``: time to flush at close."""

    name: str
    wiring: StageWiring
    endpoint: str
    inputs: str
    upstream: int
    sndhwm: int = 100_000
    linger_ms: int = 2000


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

    def _socket(self, kind: int, *, linger_ms: int | None = None, hwm: int | None = None
                ) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.linger = self.wiring.linger_ms if linger_ms is None else linger_ms
        sock.sndhwm = self.wiring.hwm if hwm is None else hwm
        sock.rcvhwm = self.wiring.hwm if hwm is None else hwm
        self._sockets.append(sock)
        return sock

    def report(self, event: str, **fields: Any) -> None:
        """Tell the supervisor. Never blocks the stage for long: control messages are small and
        the supervisor reads them continuously."""
        payload = msgpack.packb({"event": event, "stage": self.name, "pid": os.getpid(),
                                 **fields}, use_bin_type=True)
        try:
            self._control.send(payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("%s: control socket full, %s report lost", self.name, event)

    def tick(self) -> None:
        """Periodic duties: stats to the supervisor, and exit when the supervisor is gone."""
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + self.wiring.stats_interval_s
        self.report("stats", stats=self.stats.snapshot())
        if os.getppid() != self.wiring.parent_pid:
            raise StageError(f"{self.name}: the supervisor (pid {self.wiring.parent_pid}) is gone")

    def answer_error(
        self, code: str, reason: str, stream: str | None, seq: int | None
    ) -> None:
        """Publish an ``error`` for one input and count it."""
        self.stats.ledger.error(stream, code)
        msg = error_message(code, reason, stream=stream, seq=seq, stage=self.name)
        self.send_publisher(encode(msg, topic=True))

    def send_publisher(self, frames: Sequence[Any]) -> None:
        assert self._to_publisher is not None
        self._to_publisher.send_multipart(frames, copy=False)

    def open(self) -> dict[str, Any]:
        """Bind and connect (and, for workers, load the engine). Returns ready info."""
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def close_control(self) -> None:
        """Close the control socket, last (after the final report)."""
        self._control.close()

    def close(self) -> None:
        """Close every socket but the control one (each with its linger). Safe twice."""
        for sock in self._sockets:
            if sock is not self._control and not sock.closed:
                sock.close()


def _bind(sock: zmq.Socket[Any], endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise StageError(f"cannot bind {what} {endpoint}: {exc}") from exc
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))


# ---------------------------------------------------------------------------------------------
# Ingest


class IngestStage(_Stage):
    """External PULL -> validation -> shard by stream id (or, without shards, the per-stream
    stages here and on to the workers). See the module docstring."""

    def __init__(self, config: IngestConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL, linger_ms=0, hwm=config.rcvhwm)
        self._pull.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self._command = self._socket(zmq.PULL, linger_ms=0)
        self._shards = [self._socket(zmq.PUSH) for _ in config.shards]
        self._streams = (
            None if config.shards else _StreamStages(self, config.path, config.workers)
        )
        self._to_publisher = self._socket(zmq.PUSH)
        self._input_kind = config.input_kind

    def open(self) -> dict[str, Any]:
        cfg = self.config
        _bind(self._command, cfg.command, "command socket")
        for sock, endpoint in zip(self._shards, cfg.shards, strict=True):
            sock.connect(endpoint)
        if self._streams is not None:
            self._streams.connect()
        assert self._to_publisher is not None
        self._to_publisher.connect(cfg.publisher)
        bound = _bind(self._pull, cfg.endpoint, "ingest")
        return {"endpoint": bound}

    def run(self) -> None:
        # Block in recv (with a timeout for the periodic duties) rather than poll-then-recv:
        # one wake-up per message instead of two. The command socket is looked at between
        # messages, at most every _COMMAND_CHECK_S.
        pull, command = self._pull, self._command
        pull.rcvtimeo = _POLL_IDLE_MS
        next_check = 0.0
        while True:
            try:
                frames = pull.recv_multipart(copy=False)
            except zmq.Again:
                frames = None
            if frames is not None:
                self._handle(frames)
                self._read(_RECV_BURST)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + _COMMAND_CHECK_S
                if command.poll(0) and command.recv() == b"stop":
                    break
            self.tick()
        self._drain()

    def _drain(self) -> None:
        """Stop: answer what senders already delivered, then send the end marker."""
        deadline = time.monotonic() + _DRAIN_MAX_S
        while time.monotonic() < deadline and self._pull.poll(_DRAIN_QUIET_MS, zmq.POLLIN):
            self._read(_RECV_BURST)
        self._pull.close(linger=0)
        for sock in self._shards:
            sock.send(END)
        if self._streams is not None:
            self._streams.finish()
        self.send_publisher([END])
        log.info("%s: drained, end marker sent", self.name)

    def _read(self, budget: int) -> None:
        pull = self._pull
        for _ in range(budget):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames)

    def _handle(self, frames: list[Any]) -> None:
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
        if self._streams is not None:
            self._streams.handle(msg, frames)
            return
        self._shards[zlib.crc32(stream.encode()) % len(self._shards)].send_multipart(
            frames, copy=False
        )
        stats.frame_out(stream)


# ---------------------------------------------------------------------------------------------
# Per-stream stages (in a shard, or in ingest)


class _StreamStages:
    """The per-stream stages of the streams one process owns, run in order, and the round-robin
    hand-off of their output to the engine workers. Used by a shard, or by ingest when the
    service runs without shards."""

    def __init__(self, owner: _Stage, path: Path, workers: Sequence[str]) -> None:
        self.owner = owner
        self.path = path
        self._endpoints = tuple(workers)
        self._workers = [owner._socket(zmq.PUSH) for _ in workers]
        self._stages: OrderedDict[str, StreamStage] = OrderedDict()
        self._next_worker = 0
        self.sticky = bool(path.sticky_streams)
        self._out_poller = zmq.Poller()
        for sock in self._workers:
            self._out_poller.register(sock, zmq.POLLOUT)

    def connect(self) -> None:
        for sock, endpoint in zip(self._workers, self._endpoints, strict=True):
            sock.connect(endpoint)

    def handle(self, msg: Message, frames: Sequence[Any]) -> None:
        """Run ``msg`` (whose received ``frames`` these are) through its stream's stage."""
        owner = self.owner
        stream, seq = msg.header["stream"], msg.header.get("seq")
        try:
            outs = self._stage(stream).process(msg)
        except InputError as exc:
            owner.answer_error(exc.code, exc.reason, stream, seq)
            return
        except Exception as exc:  # a bug in a stage must not take the other streams down
            log.exception("%s: stream stage failed on %s seq %s", owner.name, stream, seq)
            owner.answer_error("internal", f"stream stage failed: {exc!r}", stream, seq)
            return
        if not any(out is msg for out in outs):
            owner.stats.ledger.consumed(stream)
        self._send(stream, outs, msg, frames)

    def finish(self) -> None:
        """End of input: flush every stage, then send the end marker to every worker."""
        for stream, stage in self._stages.items():
            self._send(stream, stage.flush())
        for sock in self._workers:
            sock.send(END)

    def _send(self, stream: str, outs: Sequence[Message], msg: Message | None = None,
              frames: Sequence[Any] = ()) -> None:
        """Hand a stage's output on: its input unchanged (``msg`` itself: the received
        ``frames``), a message it made to a worker, or a result it made to the publisher."""
        owner = self.owner
        for out in outs:
            if out is msg:
                self._dispatch(stream, frames)
            else:
                owner.stats.ledger.emitted(stream)
                if out.header["kind"].startswith(RESULT_PREFIX):
                    owner.send_publisher(encode(out, topic=True))
                else:
                    self._dispatch(stream, encode(out))
            owner.stats.frame_out(stream)

    def _stage(self, stream: str) -> StreamStage:
        stage = self._stages.get(stream)
        if stage is None:
            if len(self._stages) >= self.owner.wiring.max_streams:
                # The least recently seen stream gives up its state (a restart for it).
                old_stream, old = self._stages.popitem(last=False)
                self._send(old_stream, old.flush())
            stage = self._stages[stream] = self.path.stream_stage(stream)
        else:
            self._stages.move_to_end(stream)
        return stage

    def _dispatch(self, stream: str, frames: Sequence[Any]) -> None:
        """To a worker: the stream's own one if the path keeps per-stream state in its workers
        (:attr:`Path.sticky_streams`), else round robin skipping full ones. Blocks while the
        chosen worker (or every worker) is full."""
        workers = self._workers
        n = len(workers)
        if self.sticky:
            sock = workers[shard_of(stream, n)]
            while True:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    return
                except zmq.Again:
                    sock.poll(_POLL_IDLE_MS, zmq.POLLOUT)
                    self.owner.tick()
        while True:
            for _ in range(n):
                sock = workers[self._next_worker]
                self._next_worker = (self._next_worker + 1) % n
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    return
                except zmq.Again:
                    continue
            self._out_poller.poll(_POLL_IDLE_MS)
            self.owner.tick()


# ---------------------------------------------------------------------------------------------
# Shard


class ShardStage(_Stage):
    """Per-stream stages of the streams that hash here, in order; output to the workers."""

    def __init__(self, config: ShardConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL)
        self._streams = _StreamStages(self, config.path, config.workers)
        self._to_publisher = self._socket(zmq.PUSH)

    def open(self) -> dict[str, Any]:
        _bind(self._pull, self.config.endpoint, "shard input")
        self._streams.connect()
        assert self._to_publisher is not None
        self._to_publisher.connect(self.config.publisher)
        return {}

    def run(self) -> None:
        pull = self._pull
        pull.rcvtimeo = _POLL_IDLE_MS
        while True:
            try:
                frames = pull.recv_multipart(copy=False)
            except zmq.Again:
                self.tick()
                continue
            for _ in range(_RECV_BURST):
                if len(frames) == 1:  # the end marker: ingest is the only upstream
                    self._streams.finish()
                    self.send_publisher([END])
                    log.info("%s: drained, end marker sent", self.name)
                    return
                msg = _trusted(frames)
                self.stats.frame_in(msg.header["stream"])
                self._streams.handle(msg, frames)
                try:
                    frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
            self.tick()


# ---------------------------------------------------------------------------------------------
# Engine worker


class _Item:
    __slots__ = ("msg", "plan", "rows")

    def __init__(self, msg: Message, rows: np.ndarray, plan: Any) -> None:
        self.msg = msg
        self.rows = rows
        self.plan = plan


class WorkerStage(_Stage):
    """Bounded queue (policy) -> prepare -> batch across streams -> engine -> finish."""

    def __init__(self, config: WorkerConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        from engines.batcher import BatcherConfig, DynamicBatcher

        self.config = config
        self.path = config.path
        self._pull = self._socket(zmq.PULL)
        self._to_publisher = self._socket(zmq.PUSH)
        self.queue: BoundedQueue[Message] = BoundedQueue(config.queue_depth, config.queue_policy)
        self.batcher: DynamicBatcher[_Item] = DynamicBatcher(
            BatcherConfig(max_batch=config.max_batch, max_wait_us=config.max_wait_us)
        )
        self.worker: PathWorker | None = None
        self._ends = 0
        self._result_path = config.path.name

    def open(self) -> dict[str, Any]:
        cfg = self.config
        _bind(self._pull, cfg.endpoint, "worker input")
        assert self._to_publisher is not None
        self._to_publisher.connect(cfg.publisher)
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
        upstream = self.config.upstream
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
            # A full queue under ``block`` leaves messages in the socket (back-pressure); the
            # queue is then non-empty, so this iteration runs a batch and makes room.
            if not ending and (not queue.full() or queue.policy is not QueuePolicy.BLOCK):
                if pull.poll(timeout_ms, zmq.POLLIN):
                    self._read()
            self._fill()
            now = time.monotonic_ns()
            if batcher.due(now) or (ending and not queue and len(batcher)):
                self._run_batch(batcher.take())
            elif ending and not queue and not len(batcher):
                break
            self.stats.queue = queue.statistics()
            self.tick()
        self.send_publisher([END])
        log.info("%s: drained, end marker sent", self.name)

    def _read(self) -> None:
        """Move what the socket holds into the bounded queue, applying its policy."""
        pull, queue = self._pull, self.queue
        block = queue.policy is QueuePolicy.BLOCK
        for _ in range(_RECV_BURST):
            if block and queue.full():
                return  # back-pressure: leave the rest in the socket
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1:
                self._ends += 1
                continue
            msg = _trusted(frames)
            self.stats.frame_in(msg.header["stream"])
            lost = queue.put(msg)
            if lost is not None:
                self._give_up(lost)

    def _give_up(self, msg: Message) -> None:
        """A message the queue policy sacrificed: count it and tell its sender."""
        stream, seq = msg.header["stream"], msg.header.get("seq")
        cap = self.queue.capacity
        if self.queue.policy is QueuePolicy.REJECT:
            code, reason = "overloaded", f"{self.name} queue full ({cap}): rejected"
        else:
            code, reason = "dropped", f"{self.name} queue full ({cap}): oldest dropped"
        self.stats.ledger.dropped(stream, code)
        msg_out = error_message(code, reason, stream=stream, seq=seq, stage=self.name)
        self.send_publisher(encode(msg_out, topic=True))

    def _fill(self) -> None:
        """Prepare queued messages into the batcher until it holds a full batch."""
        queue, batcher, worker = self.queue, self.batcher, self.worker
        assert worker is not None
        max_batch = self.config.max_batch
        while queue and batcher.pending_rows < max_batch:
            msg = queue.get()
            try:
                rows, plan = worker.prepare(msg)
            except InputError as exc:
                self.answer_error(exc.code, exc.reason, msg.header["stream"],
                                  msg.header.get("seq"))
                continue
            except Exception as exc:
                log.exception("%s: prepare failed", self.name)
                self.answer_error("internal", f"prepare failed: {exc!r}",
                                  msg.header["stream"], msg.header.get("seq"))
                continue
            batcher.add(_Item(msg, rows, plan), int(rows.shape[0]),
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
                h = item.msg.header
                self.answer_error("engine_failed", f"engine failed: {exc!r}", h["stream"],
                                  h.get("seq"))
            return
        self.stats.observe_batch(int(rows.shape[0]), time.perf_counter() - t0)
        offset = 0
        for item in items:
            n = item.rows.shape[0]
            header = item.msg.header
            try:
                body = worker.finish(item.msg, outputs[offset:offset + n], item.plan)
            except InputError as exc:
                self.answer_error(exc.code, exc.reason, header["stream"], header.get("seq"))
            except Exception as exc:
                log.exception("%s: finish failed", self.name)
                self.answer_error("internal", f"finish failed: {exc!r}", header["stream"],
                                  header.get("seq"))
            else:
                self.send_publisher(
                    encode(result_message(self._result_path, header, body), topic=True)
                )
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
    """Internal PULL -> external PUB; capture-to-result latency and deliveries counted here."""

    def __init__(self, config: PublisherConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL)
        self._pub = self._socket(zmq.PUB, linger_ms=config.linger_ms, hwm=config.sndhwm)

    def open(self) -> dict[str, Any]:
        _bind(self._pull, self.config.inputs, "publisher input")
        bound = _bind(self._pub, self.config.endpoint, "publish")
        return {"endpoint": bound}

    def run(self) -> None:
        pull, pub = self._pull, self._pub
        stats = self.stats
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
                else:
                    pub.send_multipart(frames, copy=False)
                    self._count(frames)
                try:
                    frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
            self.tick()
        stats.queue = None
        log.info("%s: every upstream stage ended; closing", self.name)

    def _count(self, frames: list[Any]) -> None:
        header = msgpack.unpackb(frames[1].buffer)
        stream = header.get("stream")
        self.stats.frame_out(stream)
        if header.get("kind") == ERROR_KIND:
            return
        self.stats.ledger.delivered(stream)
        t_ns = header.get("t_ns")
        if isinstance(t_ns, int):
            self.stats.observe_latency(stream, max(0, time.time_ns() - t_ns) / 1e9)


# ---------------------------------------------------------------------------------------------
# Process entry point


def stage_main(config: IngestConfig | ShardConfig | WorkerConfig | PublisherConfig) -> None:
    """Entry point of a stage process (``multiprocessing`` spawn target).

    Ctrl-C is ignored here: the terminal sends it to the whole process group, and it is the
    supervisor that decides how to drain. Exits 0 after a clean drain, 1 on failure; either
    way the supervisor hears ``failed``/``stopped`` first. Never returns.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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


def _make_stage(
    config: IngestConfig | ShardConfig | WorkerConfig | PublisherConfig, ctx: zmq.Context[Any]
) -> _Stage:
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
