"""The publisher: internal PULL to external PUB; every answer is counted here, where it leaves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
import zmq

from stream.stages.base import POLL_IDLE_MS, RECV_BURST, Stage, bind
from stream.stages.config import DROP_CODES, PublisherConfig
from stream.wire import (
    ERROR_KIND,
)

log = logging.getLogger(__name__)


class PublisherStage(Stage):
    """Internal PULL -> external PUB. Every answer is counted here, where it leaves: results
    delivered, errors and drops by code, and capture-to-result latency."""

    def __init__(self, config: PublisherConfig, ctx: zmq.Context[Any]) -> None:
        super().__init__(config.name, config.wiring, ctx)
        self.config = config
        self._pull = self._socket(zmq.PULL)
        self._pub = self._socket(zmq.PUB, linger_ms=config.linger_ms, hwm=config.sndhwm)

    def open(self) -> dict[str, Any]:
        bind(self._pull, self.config.inputs, "publisher input")
        self.secure(self._pub, self.config.security)
        bound = bind(self._pub, self.config.endpoint, "publish")
        return {"endpoint": bound}

    def run(self) -> None:
        pull, pub = self._pull, self._pub
        ends = 0
        pull.rcvtimeo = POLL_IDLE_MS
        while ends < self.config.upstream:
            try:
                frames = pull.recv_multipart(copy=False)
            except zmq.Again:
                self.tick()
                continue
            for _ in range(RECV_BURST):
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
