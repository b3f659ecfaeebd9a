"""The engine worker: queue, prepare, batch across streams, engine, finish; every answer goes
back, tagged, to the dispatcher that sent the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from stream.dispatch import origin_of
from stream.errors import InputError
from stream.queues import BoundedQueue, QueuePolicy
from stream.stages.base import POLL_IDLE_MS, RECV_BURST, Stage, bind, trusted
from stream.stages.config import WorkerConfig
from stream.stages.protocols import PathWorker
from stream.wire import (
    Message,
    encode,
    result_message,
)

log = logging.getLogger(__name__)


class _Item:
    __slots__ = ("msg", "plan", "rows", "tag")

    def __init__(self, tag: bytes, msg: Message, rows: np.ndarray, plan: Any) -> None:
        self.tag = tag
        self.msg = msg
        self.rows = rows
        self.plan = plan


class WorkerStage(Stage):
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
        self._clock = config.batch_clock
        self._clock.since, self._clock.done = 0.0, time.monotonic()
        self._ends = 0
        self._result_path = config.path.name

    def open(self) -> dict[str, Any]:
        cfg = self.config
        bind(self._pull, cfg.endpoint, "worker input")
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
                    POLL_IDLE_MS if deadline is None
                    else max(0, min(POLL_IDLE_MS, -(-(deadline - now) // 1_000_000)))
                )
            if not ending and pull.poll(timeout_ms, zmq.POLLIN):
                self._read()
            self._fill()
            now = time.monotonic_ns()
            if batcher.due(now) or (ending and not queue and len(batcher)):
                self._clock.since = time.monotonic()
                try:
                    self._run_batch(batcher.take())
                finally:
                    self._clock.since, self._clock.done = 0.0, time.monotonic()
            elif ending and not queue and not len(batcher):
                break
            self.stats.queue = queue.statistics()
            self.tick()
        log.info("%s: drained", self.name)

    def _read(self) -> None:
        pull, queue = self._pull, self.queue
        for _ in range(RECV_BURST):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1:
                self._ends += 1
                continue
            tag = frames[0].bytes
            msg = trusted(frames[1:])
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
