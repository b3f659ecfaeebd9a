"""A bounded FIFO with a declared overflow policy, and the statistics it keeps.

Every queue in the pipeline is bounded on purpose, and what happens when it is full is declared,
not accidental:

- ``block``: the producer must wait; :meth:`BoundedQueue.put` raises :class:`QueueFull` and the
  caller applies back-pressure upstream (it stops reading its socket, so the ZeroMQ high-water
  marks fill and the sender blocks).
- ``drop-oldest``: the new item is accepted and the oldest one is evicted and handed back, so
  the caller can count it and answer its sender (fresh data beats stale data for live sensors).
- ``reject``: the new item is refused and handed back (the caller answers ``overloaded``).

End of stream is a clean signal, not an error: after :meth:`BoundedQueue.close`, :meth:`get`
returns what is left and then raises :class:`EndOfQueue` (trio's ``EndOfChannel``).

Modelled on trio's memory channels and their ``statistics()``. Not thread-safe: one owner
thread (each pipeline stage is a single-threaded loop) puts and gets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from stream.errors import SigstreamError

__all__ = [
    "BoundedQueue",
    "EndOfQueue",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "QueuePolicy",
    "QueueStatistics",
]

T = TypeVar("T")


class QueuePolicy(StrEnum):
    """What a full queue does with one more item."""

    BLOCK = "block"
    DROP_OLDEST = "drop-oldest"
    REJECT = "reject"


class QueueFull(Exception):  # noqa: N818 - a signal to wait, like trio.WouldBlock
    """A ``block`` queue is full: the producer must wait for room."""


class QueueEmpty(Exception):  # noqa: N818 - a signal to wait, like trio.WouldBlock
    """The queue is open and empty: nothing to get yet."""


class EndOfQueue(Exception):  # noqa: N818 - a clean signal, like trio.EndOfChannel
    """The queue was closed and everything put before the close has been taken."""


class QueueClosed(SigstreamError, RuntimeError):
    """An item was put after :meth:`BoundedQueue.close` (a bug in the producer)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueStatistics:
    """A snapshot of a queue's counters.

    ``depth``: items in the queue now; ``capacity``: its bound; ``max_depth``: the highest depth
    seen; ``accepted``: items taken in; ``dropped``: accepted items evicted by ``drop-oldest``;
    ``rejected``: items refused by ``reject``; ``taken``: items handed out by :meth:`get`.
    Invariant: ``accepted == taken + dropped + depth``.
    """

    policy: str
    capacity: int
    depth: int
    max_depth: int
    accepted: int
    dropped: int
    rejected: int
    taken: int
    closed: bool


class BoundedQueue(Generic[T]):
    """A FIFO of at most ``capacity`` items that applies ``policy`` when full."""

    __slots__ = (
        "_accepted", "_closed", "_dropped", "_items", "_max_depth", "_rejected", "_taken",
        "capacity", "policy",
    )

    def __init__(self, capacity: int, policy: QueuePolicy | str = QueuePolicy.BLOCK) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.policy = QueuePolicy(policy)
        self._items: deque[T] = deque()
        self._closed = False
        self._accepted = 0
        self._dropped = 0
        self._rejected = 0
        self._taken = 0
        self._max_depth = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put(self, item: T) -> T | None:
        """Put ``item`` under the queue's policy; return the item the policy gave up, if any.

        Returns ``None`` when nothing was lost; under ``drop-oldest`` the evicted oldest item;
        under ``reject`` ``item`` itself. Raises :class:`QueueFull` (``block``, full) and
        :class:`QueueClosed` (after :meth:`close`).
        """
        if self._closed:
            raise QueueClosed("put() on a closed queue")
        items = self._items
        lost: T | None = None
        if len(items) >= self.capacity:
            if self.policy is QueuePolicy.BLOCK:
                raise QueueFull(f"queue full ({self.capacity} items)")
            if self.policy is QueuePolicy.REJECT:
                self._rejected += 1
                return item
            lost = items.popleft()
            self._dropped += 1
        items.append(item)
        self._accepted += 1
        if len(items) > self._max_depth:
            self._max_depth = len(items)
        return lost

    def get(self) -> T:
        """The oldest item. Raises :class:`QueueEmpty` (open, empty) or :class:`EndOfQueue`."""
        if not self._items:
            if self._closed:
                raise EndOfQueue
            raise QueueEmpty
        self._taken += 1
        return self._items.popleft()

    def peek(self) -> T:
        """The oldest item, left in place. Raises like :meth:`get`."""
        if not self._items:
            if self._closed:
                raise EndOfQueue
            raise QueueEmpty
        return self._items[0]

    def close(self) -> None:
        """Mark the end of stream: no more puts; gets drain what is left. Safe twice."""
        self._closed = True

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            policy=self.policy.value,
            capacity=self.capacity,
            depth=len(self._items),
            max_depth=self._max_depth,
            accepted=self._accepted,
            dropped=self._dropped,
            rejected=self._rejected,
            taken=self._taken,
            closed=self._closed,
        )
