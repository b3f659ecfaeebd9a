"""Ingest (external PULL, validation, the door) and shards (per-stream stages of their streams).

Ingest may also mirror what it accepts (``IngestConfig.mirror``): an XPUB socket that sends an
input again, topic ``"<kind>/<stream>"`` first, only while someone subscribes to it, so a
viewer that draws one stream's spectra or ECG costs the others nothing. A slow subscriber
loses mirrored inputs (ZeroMQ drops at its queue limit); it never holds ingest back. While a
stream's topic has an exact subscription, its inputs go on with ``watched: true`` in their
header (:data:`stream.wire.WATCHED_KEY`; a sender's own value is replaced), so its path may add
detail for the viewer (ECG: a Grad-CAM heatmap per beat).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from stream.dispatch import Door, shard_of
from stream.errors import WireError
from stream.queues import QueuePolicy
from stream.security import (
    stamp_peer,
)
from stream.stages.base import (
    DRAIN_MAX_S,
    DRAIN_QUIET_MS,
    POLL_IDLE_MS,
    RECV_BURST,
    DispatchingStage,
    bind,
    trusted,
)
from stream.stages.config import END, IngestConfig, ShardConfig
from stream.wire import WATCHED_KEY, decode, stamp

log = logging.getLogger(__name__)


class IngestStage(DispatchingStage):
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
        self._input_kind: str = config.path.input_kind
        self._time_series: bool = config.path.time_series
        self.door = Door(config.door, self)
        self._poller = zmq.Poller()
        self._reading = False
        self._mirror: zmq.Socket[Any] | None = None
        self._mirror_topics: set[bytes] = set()  # the subscribed topic prefixes
        if config.mirror is not None:
            self._mirror = self._socket(zmq.XPUB, linger_ms=0)

    def open(self) -> dict[str, Any]:
        cfg = self.config
        ready: dict[str, Any] = {}
        bind(self._command, cfg.command, "command socket")
        for sock, endpoint in zip(self._shards, cfg.shards, strict=True):
            sock.connect(endpoint)
        if self.dispatcher is not None:
            self.dispatcher.connect()
            self._poller.register(self.dispatcher.results, zmq.POLLIN)
        assert self._to_publisher is not None
        self._to_publisher.connect(cfg.publisher)
        self._poller.register(self._command, zmq.POLLIN)
        self.secure(self._pull, cfg.security)
        if self._mirror is not None:
            assert cfg.mirror is not None
            self.secure(self._mirror, cfg.security)
            ready["mirror"] = bind(self._mirror, cfg.mirror, "mirror")
            self._poller.register(self._mirror, zmq.POLLIN)
        ready["endpoint"] = bind(self._pull, cfg.endpoint, "ingest")  # last: now it takes input
        return ready

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
            self._read(RECV_BURST)
        if self.dispatcher is not None and self.dispatcher.results in events:
            self.dispatcher.pump()
        if self._mirror is not None and self._mirror in events:
            self._subscriptions()
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
            return POLL_IDLE_MS
        return max(0, min(POLL_IDLE_MS, -(-(expiry - time.monotonic_ns()) // 1_000_000)))

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
        deadline = time.monotonic() + DRAIN_MAX_S
        while time.monotonic() < deadline and self._pull.poll(DRAIN_QUIET_MS, zmq.POLLIN):
            self._read(RECV_BURST)
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
        if self._time_series and "fs" not in header:
            self.answer_error("missing_field",
                              f"{self._input_kind} is a time series: header needs 'fs' "
                              "(samples/s)", stream, seq)
            return
        # Only the ZAP-authenticated key may name the sender; nothing a sender writes can.
        frames = stamp_peer(header, frames, self.config.security is not None)
        watched = None
        if self._mirror_topics:
            topic = f"{header['kind']}/{stream}".encode()
            self._mirror_input(topic, frames)
            # An exact subscription (a prefix one is a tap, not a viewer of this stream).
            watched = True if topic in self._mirror_topics else None
        frames = stamp(header, frames, WATCHED_KEY, watched)
        self.door.put(msg, frames, time.monotonic_ns())

    def _subscriptions(self) -> None:
        """Follow the mirror's subscriptions (XPUB: ``1`` + topic, ``0`` + topic when the last
        subscriber of that topic leaves)."""
        assert self._mirror is not None
        while True:
            try:
                event = self._mirror.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self._mirror_topics.add(event[1:])
            elif event[:1] == b"\x00":
                self._mirror_topics.discard(event[1:])

    def _mirror_input(self, topic: bytes, frames: list[Any]) -> None:
        if any(topic.startswith(prefix) for prefix in self._mirror_topics):
            assert self._mirror is not None
            self._mirror.send_multipart([topic, *frames], flags=zmq.NOBLOCK, copy=False)


# ---------------------------------------------------------------------------------------------
# Shard


class ShardStage(DispatchingStage):
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
        bind(self._command, self.config.command, "command socket")
        bind(self._pull, self.config.endpoint, "shard input")
        assert self.dispatcher is not None
        self.dispatcher.connect()
        assert self._to_publisher is not None
        self._to_publisher.connect(self.config.publisher)
        self._poller.register(self.dispatcher.results, zmq.POLLIN)
        self._poller.register(self._command, zmq.POLLIN)
        return {}

    def run(self) -> None:
        while not self._ended:
            self._poll(POLL_IDLE_MS)
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
        for _ in range(RECV_BURST):
            if not dispatcher.can_take():
                return
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1:  # the end marker: ingest is the only upstream
                self._ended = True
                return
            msg = trusted(frames)
            self.stats.frame_in(msg.header["stream"])
            dispatcher.handle(msg, frames)
