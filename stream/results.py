"""A client of a service's results: subscribe to its PUB endpoint and take what arrives.

The benches, the demo and the ``sigstream ecg`` tools all listen the same way: a SUB socket
(a CURVE client with keys) on a topic prefix, a wait for the first message, then every message
already queued, decoded, with the time it arrived. A message that is not valid wire v1 is
counted (:attr:`ResultsClient.invalid`), never raised: one bad answer must not end a listener.

A PUB socket drops what it publishes before a subscription reaches it, so a listener that must
see every answer opens first and waits ``settle_s`` before anything is sent; ``lossless``
lifts the receive high-water mark so the measuring end never drops anything itself.

One client is used from one thread (the one that opened it).
"""

from __future__ import annotations

import time
from typing import Any, Self

import zmq

from devices.lifecycle import ClosesOnExit
from stream.errors import WireError
from stream.security import ClientSecurity, client_context
from stream.wire import Message, decode

__all__ = ["ResultsClient"]

_MAX_BURST = 10_000  # messages taken per receive(): the caller's loop runs between bursts


class ResultsClient(ClosesOnExit):
    """A subscriber to ``endpoint`` (a service's PUB endpoint) on topic prefix ``topic``.

    ``security``: CURVE client keys (``None``: plain). ``lossless``: no receive high-water mark.
    ``settle_s``: seconds :meth:`open` waits for the subscription to reach the publisher. The
    constructor does no I/O; :meth:`open` (or ``with``) connects; :meth:`close` (safe twice)
    releases the socket and the context it made.
    """

    def __init__(self, endpoint: str, *, topic: str = "", security: ClientSecurity | None = None,
                 lossless: bool = False, settle_s: float = 0.0) -> None:
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        self.endpoint = endpoint
        self.topic = topic
        self.invalid = 0  # messages that were not valid wire v1
        self._security = security
        self._lossless = lossless
        self._settle_s = settle_s
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None

    def open(self) -> Self:
        """Subscribe and connect, then wait ``settle_s``. Returns the client."""
        if self._sock is not None:
            raise RuntimeError("ResultsClient is already open")
        self._ctx = client_context(self._security)
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.linger = 0
        if self._lossless:
            self._sock.rcvhwm = 0
        self._sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        self._sock.connect(self.endpoint)
        if self._settle_s:
            time.sleep(self._settle_s)
        return self

    def receive(self, timeout_s: float) -> list[tuple[Message, int]]:
        """Wait at most ``timeout_s`` seconds for a message, then take every message already
        queued (up to 10,000): ``(message, arrival time in Unix ns)`` in order of arrival,
        invalid ones counted in :attr:`invalid` and left out. ``[]`` when none came."""
        if self._sock is None:
            raise RuntimeError("ResultsClient is not open")
        out: list[tuple[Message, int]] = []
        if not self._sock.poll(max(0, round(timeout_s * 1000)), zmq.POLLIN):
            return out
        for _ in range(_MAX_BURST):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received_ns = time.time_ns()
            try:
                out.append((decode(frames, topic=True), received_ns))
            except WireError:
                self.invalid += 1
        return out

    def close(self) -> None:
        """Close the socket and terminate the context. Safe to call twice."""
        sock, ctx = self._sock, self._ctx
        self._sock = self._ctx = None
        if sock is not None:
            sock.close(linger=0)
        if ctx is not None:
            ctx.term()

    def __enter__(self) -> Self:
        return self.open()
