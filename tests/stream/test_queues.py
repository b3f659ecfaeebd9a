"""BoundedQueue: each policy, statistics, end of stream."""

from __future__ import annotations

import pytest

from stream.queues import (
    BoundedQueue,
    EndOfQueue,
    QueueClosed,
    QueueEmpty,
    QueueFull,
    QueuePolicy,
)


def test_fifo_and_statistics() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, "block")
    assert q.put(1) is None and q.put(2) is None
    assert len(q) == 2 and q and not q.full()
    assert q.get() == 1
    stats = q.statistics()
    assert (stats.depth, stats.max_depth, stats.accepted, stats.taken) == (1, 2, 2, 1)
    assert stats.policy == "block" and stats.capacity == 3 and not stats.closed


def test_block_policy_refuses_when_full() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, QueuePolicy.BLOCK)
    q.put(1)
    q.put(2)
    with pytest.raises(QueueFull):
        q.put(3)
    assert [q.get(), q.get()] == [1, 2]  # nothing was lost
    s = q.statistics()
    assert (s.accepted, s.dropped, s.rejected) == (2, 0, 0)


def test_drop_oldest_evicts_and_returns_the_oldest() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, "drop-oldest")
    assert q.put(1) is None
    assert q.put(2) is None
    assert q.put(3) == 1
    assert q.put(4) == 2
    assert [q.get(), q.get()] == [3, 4]
    s = q.statistics()
    assert (s.accepted, s.dropped, s.rejected, s.max_depth) == (4, 2, 0, 2)
    assert s.accepted == s.taken + s.dropped + s.depth


def test_reject_returns_the_new_item() -> None:
    q: BoundedQueue[str] = BoundedQueue(1, "reject")
    assert q.put("a") is None
    assert q.put("b") == "b"
    assert q.get() == "a"
    s = q.statistics()
    assert (s.accepted, s.dropped, s.rejected) == (1, 0, 1)


def test_end_of_stream_is_a_clean_signal() -> None:
    q: BoundedQueue[int] = BoundedQueue(4)
    with pytest.raises(QueueEmpty):
        q.get()
    q.put(7)
    q.close()
    q.close()  # safe twice
    with pytest.raises(QueueClosed):
        q.put(8)
    assert q.peek() == 7 and q.get() == 7
    with pytest.raises(EndOfQueue):
        q.get()
    assert q.statistics().closed


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_positive_int(capacity: object) -> None:
    with pytest.raises(ValueError):
        BoundedQueue(capacity)  # type: ignore[arg-type]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError):
        BoundedQueue(2, "drop-newest")
