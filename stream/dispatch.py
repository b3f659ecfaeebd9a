"""Who holds what: the service's door, and the hand-off to engine workers that never loses track.

Two pieces, both pure bookkeeping around sockets that their stage owns and polls:

- :class:`Door` — the bounded queue right behind ingest's external socket. Ingest reads its
  socket greedily into the door, so a backlog never builds up unseen in ZeroMQ and TCP buffers;
  the door is bounded in messages and in bytes and sheds by its declared policy (``drop-oldest``:
  the oldest waiting message is answered ``dropped``; ``reject``: the newcomer is answered
  ``overloaded``; ``block``: ingest stops reading, so senders feel back-pressure), and a message
  that has waited longer than the path's deadline is answered ``expired``. Under overload the
  service thus serves fresh messages and answers the stale ones at its door.
- :class:`Dispatcher` — a per-stream-stage owner (ingest, or a shard) that runs each stream's
  :class:`~stream.stages.StreamStage` in order and hands the output to the engine workers. Every
  message it hands out carries a *tag*; the worker sends the answer (result or error) back here
  with that tag, and the dispatcher forwards it to the publisher. So the dispatcher knows exactly
  which messages each worker holds (at most ``credit`` at a time): when the supervisor reports a
  worker lost (it died or stalled), every message it held is answered ``worker_lost``, and an
  answer that arrives for a tag already answered is discarded — each message gets exactly one
  answer. A tag names the dispatcher's incarnation too: answers addressed to an earlier
  incarnation (the dispatcher itself was restarted) are forwarded, not discarded.

Tags are 14 bytes: origin index (uint16: which dispatcher), incarnation (uint32), counter
(uint64), little-endian. Workers read the origin index to route an answer back.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from stream.errors import InputError
from stream.metrics import StageStats
from stream.queues import QueuePolicy, QueueStatistics
from stream.wire import RESULT_PREFIX, Message, encode

__all__ = ["TAG", "Dispatcher", "Door", "DoorConfig", "origin_of", "shard_of"]

log = logging.getLogger(__name__)

TAG = struct.Struct("<HIQ")


def origin_of(tag: bytes) -> int:
    """The index of the dispatcher that handed out the message tagged ``tag``."""
    return int.from_bytes(tag[:2], "little")


def shard_of(stream: str, shards: int) -> int:
    """The shard (or sticky worker) that owns ``stream``: ``zlib.crc32`` of its UTF-8 id,
    stable across runs and processes (unlike ``hash``)."""
    import zlib

    return zlib.crc32(stream.encode()) % shards


class Answerer(Protocol):
    """What a dispatcher or door needs from its stage: answering and counting."""

    name: str
    stats: StageStats

    def answer_error(self, code: str, reason: str, stream: str | None, seq: int | None
                     ) -> None: ...

    def send_publisher(self, frames: Sequence[Any]) -> None: ...


# ---------------------------------------------------------------------------------------------
# The door


@dataclass(frozen=True, kw_only=True)
class DoorConfig:
    """``depth``/``max_bytes``: bounds of the door (messages, payload and header bytes);
    ``policy``: what a full door does (:class:`~stream.queues.QueuePolicy`); ``deadline_ms``:
    longest wait at the door before a message is answered ``expired`` (``None``: no deadline)."""

    depth: int = 1024
    max_bytes: int = 64 * 1024 * 1024
    policy: str = "drop-oldest"
    deadline_ms: int | None = None


class _Entry:
    __slots__ = ("arrived_ns", "frames", "msg", "nbytes")

    def __init__(self, msg: Message, frames: Sequence[Any], nbytes: int, arrived_ns: int) -> None:
        self.msg = msg
        self.frames = frames
        self.nbytes = nbytes
        self.arrived_ns = arrived_ns


class Door:
    """Validated messages waiting for room downstream, oldest first. Single-threaded (ingest)."""

    def __init__(self, config: DoorConfig, owner: Answerer) -> None:
        self.config = config
        self.policy = QueuePolicy(config.policy)
        self.owner = owner
        self._entries: deque[_Entry] = deque()
        self.nbytes = 0
        self.max_seen = 0
        self.accepted = 0
        self.taken = 0
        self.shed = 0  # dropped (oldest first) or rejected by the policy, and expired
        self.rejected = 0

    def __len__(self) -> int:
        return len(self._entries)

    def full(self) -> bool:
        return len(self._entries) >= self.config.depth or self.nbytes >= self.config.max_bytes

    def put(self, msg: Message, frames: Sequence[Any], now_ns: int) -> None:
        """Admit ``msg`` (its received ``frames``), shedding by the policy when full."""
        nbytes = sum(len(f) for f in frames)
        if self.full() and self.policy is QueuePolicy.REJECT:
            self.rejected += 1
            self._answer(msg, "overloaded", "the service is overloaded: rejected at the door")
            return
        self._entries.append(_Entry(msg, frames, nbytes, now_ns))
        self.accepted += 1
        self.nbytes += nbytes
        while len(self._entries) > 1 and (
            len(self._entries) > self.config.depth or self.nbytes > self.config.max_bytes
        ):
            old = self._pop()
            self.shed += 1
            self._answer(old.msg, "dropped",
                         "the service is overloaded: the oldest waiting message was dropped")
        self.max_seen = max(self.max_seen, len(self._entries))

    def expire(self, now_ns: int) -> None:
        """Answer ``expired`` every message that waited longer than the deadline."""
        deadline_ms = self.config.deadline_ms
        if deadline_ms is None:
            return
        limit = now_ns - deadline_ms * 1_000_000
        entries = self._entries
        while entries and entries[0].arrived_ns < limit:
            old = self._pop()
            self.shed += 1
            self._answer(old.msg, "expired",
                         f"waited more than {deadline_ms} ms at the service's door")

    def next_expiry_ns(self) -> int | None:
        if not self._entries or self.config.deadline_ms is None:
            return None
        return self._entries[0].arrived_ns + self.config.deadline_ms * 1_000_000

    def peek(self) -> tuple[Message, Sequence[Any]]:
        entry = self._entries[0]
        return entry.msg, entry.frames

    def pop(self) -> None:
        self._pop()
        self.taken += 1

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            policy=self.policy.value, capacity=self.config.depth, depth=len(self._entries),
            max_depth=self.max_seen, accepted=self.accepted, dropped=self.shed,
            rejected=self.rejected, taken=self.taken, closed=False,
        )

    def drop_all(self, reason: str) -> None:
        while self._entries:
            self.shed += 1
            self._answer(self._pop().msg, "dropped", reason)

    def _pop(self) -> _Entry:
        entry = self._entries.popleft()
        self.nbytes -= entry.nbytes
        return entry

    def _answer(self, msg: Message, code: str, reason: str) -> None:
        self.owner.answer_error(code, reason, msg.header["stream"], msg.header.get("seq"))


# ---------------------------------------------------------------------------------------------
# The hand-off to the engine workers


class Dispatcher:
    """Per-stream stages of the streams one process owns, and the tracked hand-off of their
    output to the engine workers (see the module docstring).

    ``workers``: the workers' input endpoints; ``results``: the endpoint this dispatcher binds
    for their answers; ``origin``: its index among the service's dispatchers; ``credit``:
    messages a worker may hold at once. Sockets are created through ``make_socket`` (the
    stage's, so the stage closes them).
    """

    def __init__(
        self,
        owner: Answerer,
        path: Any,
        *,
        workers: Sequence[str],
        results: str,
        origin: int,
        credit: int,
        make_socket: Callable[..., zmq.Socket[Any]],
        tick: Callable[[], None],
        max_streams: int,
    ) -> None:
        self.owner = owner
        self.path = path
        self._endpoints = tuple(workers)
        self._results_endpoint = results
        # hwm 0: the credit, not ZeroMQ, bounds what a worker is handed; a send never blocks.
        self._workers = [make_socket(zmq.PUSH, hwm=0) for _ in workers]
        self.results = make_socket(zmq.PULL, hwm=0)
        self._tick = tick
        self._max_streams = max_streams
        self._stages: OrderedDict[str, Any] = OrderedDict()
        self._origin = origin
        self._incarnation = int.from_bytes(os.urandom(4), "little")
        self._counter = 0
        self._credit = credit
        self._inflight: dict[bytes, tuple[int, str, int | None]] = {}
        self._load = [0] * len(workers)
        self._up = [True] * len(workers)
        self._next = 0
        self.sticky = bool(path.sticky_streams)
        self.stale_answers = 0  # answers to messages already answered worker_lost

    def connect(self) -> None:
        self.results.bind(self._results_endpoint)
        for sock, endpoint in zip(self._workers, self._endpoints, strict=True):
            sock.connect(endpoint)

    # -- capacity --------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def can_take(self, stream: str | None = None) -> bool:
        """Whether a worker has room for output of ``stream`` (any stream: ``None``). A
        sticky stream whose worker is down is taken all the same: its stage keeps its state,
        and what it hands on is answered ``worker_lost`` at once, rather than every stream
        behind it waiting at the door."""
        if self.sticky and stream is not None:
            j = shard_of(stream, len(self._workers))
            return not self._up[j] or self._load[j] < self._credit
        return any(up and load < self._credit for up, load in zip(self._up, self._load,
                                                                  strict=True))

    # -- messages in -------------------------------------------------------------------------

    def handle(self, msg: Message, frames: Sequence[Any]) -> None:
        """Run ``msg`` (whose received ``frames`` these are) through its stream's stage and
        hand the output on."""
        owner = self.owner
        stream, seq = msg.header["stream"], msg.header.get("seq")
        try:
            outs = self._stage(stream).process(msg)
        except InputError as exc:
            owner.answer_error(exc.code, exc.reason, stream, seq)
            return
        except Exception as exc:  # a bug in a stage must not take the other streams down
            log.exception("%s: stream stage failed on %s seq %s", owner.name, stream, seq)
            owner.answer_error("internal", f"stream stage failed: {type(exc).__name__}",
                               stream, seq)
            return
        if not any(out is msg for out in outs):
            owner.stats.ledger.consumed(stream)
        self._send(stream, outs, msg, frames)

    def finish(self) -> None:
        """End of input: flush every stream's stage."""
        for stream, stage in self._stages.items():
            self._flush(stream, stage)

    def _flush(self, stream: str, stage: Any) -> None:
        try:
            outs = stage.flush()
        except Exception:  # a stage bug loses only what that stream held back
            log.exception("%s: flushing the stage of %s failed", self.owner.name, stream)
            return
        self._send(stream, outs)

    def end_workers(self, marker: bytes) -> None:
        for sock in self._workers:
            sock.send(marker)

    def _stage(self, stream: str) -> Any:
        stage = self._stages.get(stream)
        if stage is None:
            if len(self._stages) >= self._max_streams:
                # The least recently seen stream gives up its state (a restart for it).
                old_stream, old = self._stages.popitem(last=False)
                self._flush(old_stream, old)
            stage = self._stages[stream] = self.path.stream_stage(stream)
        else:
            self._stages.move_to_end(stream)
        return stage

    def _send(self, stream: str, outs: Sequence[Message], msg: Message | None = None,
              frames: Sequence[Any] = ()) -> None:
        """Hand a stage's output on: its input unchanged (``msg`` itself: the received
        ``frames``), a message it made to a worker, or a result it made to the publisher. A
        message the stage made that cannot be encoded is answered ``internal``, never fatal."""
        owner = self.owner
        stats = owner.stats
        for out in outs:
            seq = out.header.get("seq")
            if out is msg:
                self._dispatch(stream, seq, frames)
                stats.frame_out(stream)
                continue
            stats.ledger.emitted(stream)
            to_publisher = out.header["kind"].startswith(RESULT_PREFIX)
            try:
                encoded = encode(out, topic=to_publisher)
            except Exception as exc:  # a stage bug must not take the other streams down
                log.exception("%s: cannot encode a message of %s", owner.name, stream)
                owner.answer_error("internal", f"stream stage output: {type(exc).__name__}",
                                   stream, seq if isinstance(seq, int) else None)
                continue
            if to_publisher:
                owner.send_publisher(encoded)
            else:
                self._dispatch(stream, seq, encoded)
            stats.frame_out(stream)

    def _dispatch(self, stream: str, seq: int | None, frames: Sequence[Any]) -> None:
        """To a worker, tagged: the stream's own one for sticky paths, else the next one with
        room (round robin), else the least loaded. No worker up: answered ``worker_lost``."""
        n = len(self._workers)
        if self.sticky:
            j = shard_of(stream, n)
            if not self._up[j]:
                j = -1
        else:
            j = -1
            for _ in range(n):
                k = self._next
                self._next = (self._next + 1) % n
                if self._up[k] and self._load[k] < self._credit:
                    j = k
                    break
            if j < 0:
                up = [k for k in range(n) if self._up[k]]
                j = min(up, key=self._load.__getitem__) if up else -1
        if j < 0:
            self.owner.answer_error("worker_lost", "no engine worker is running", stream, seq)
            return
        tag = TAG.pack(self._origin, self._incarnation, self._counter)
        self._counter += 1
        self._workers[j].send_multipart([tag, *frames], copy=False)
        self._inflight[tag] = (j, stream, seq)
        self._load[j] += 1

    # -- answers back ----------------------------------------------------------------------

    def pump(self) -> None:
        """Forward every answer the workers sent back to the publisher."""
        results = self.results
        while True:
            try:
                frames = results.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue  # a worker's end marker: nothing to forward
            tag = frames[0].bytes
            entry = self._inflight.pop(tag, None)
            if entry is not None:
                self._load[entry[0]] -= 1
            elif len(tag) == TAG.size and TAG.unpack(tag)[1] == self._incarnation:
                self.stale_answers += 1  # already answered worker_lost
                continue
            self.owner.send_publisher(frames[1:])

    def worker_lost(self, j: int) -> int:
        """Worker ``j`` died or stalled: answer ``worker_lost`` for everything it held.
        Returns how many messages that was."""
        self.pump()  # what it answered before it went
        lost = [(tag, stream, seq) for tag, (k, stream, seq) in self._inflight.items() if k == j]
        for tag, stream, seq in lost:
            del self._inflight[tag]
            self.owner.answer_error("worker_lost", f"engine worker {j} was lost while it held "
                                    "this message", stream, seq)
        self._load[j] = 0
        self._up[j] = False
        return len(lost)

    def worker_up(self, j: int) -> None:
        self._up[j] = True

    def answer_all_lost(self, reason: str) -> None:
        """Stop without waiting further: answer everything still held."""
        for _tag, (_j, stream, seq) in list(self._inflight.items()):
            self.owner.answer_error("worker_lost", reason, stream, seq)
        self._inflight.clear()
        self._load = [0] * len(self._load)

    def wait_idle(self, deadline: float, poll: Callable[[int], None]) -> None:
        """Pump answers until nothing is in flight or ``deadline`` (monotonic s) passes;
        ``poll(timeout_ms)`` waits for and handles the stage's sockets meanwhile."""
        while self._inflight and time.monotonic() < deadline:
            poll(20)
            self.pump()
            self._tick()
