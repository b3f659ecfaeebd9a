"""Tests of the clock-injected dynamic batcher."""

from __future__ import annotations

import pytest
from checks import assert_frozen_kw_only
from hypothesis import given
from hypothesis import strategies as st

from engines.batcher import BatcherConfig, DynamicBatcher

US = 1_000  # ns per microsecond


def test_config_is_frozen_keyword_only_and_validated() -> None:
    config = assert_frozen_kw_only(BatcherConfig)
    assert (config.max_batch, config.max_wait_us) == (64, 2000)
    with pytest.raises(ValueError):
        BatcherConfig(max_batch=0)
    with pytest.raises(ValueError):
        BatcherConfig(max_wait_us=-1)


def test_empty_batcher_is_never_due() -> None:
    b: DynamicBatcher[str] = DynamicBatcher(BatcherConfig(max_batch=4, max_wait_us=100))
    assert not b.due(10**18)
    assert b.deadline_ns() is None and b.wait_ns(0) is None
    assert b.take() == [] and len(b) == 0


def test_due_on_timeout_of_the_oldest_item() -> None:
    b: DynamicBatcher[str] = DynamicBatcher(BatcherConfig(max_batch=4, max_wait_us=100))
    b.add("a", now_ns=1_000)
    b.add("b", now_ns=1_000 + 50 * US)
    assert b.deadline_ns() == 1_000 + 100 * US
    assert b.wait_ns(1_000 + 30 * US) == 70 * US
    assert not b.due(1_000 + 100 * US - 1)
    assert b.due(1_000 + 100 * US)
    assert b.wait_ns(1_000 + 500 * US) == 0
    assert b.take() == ["a", "b"]
    assert b.pending_rows == 0 and not b.due(10**18)


def test_due_when_full_before_the_deadline() -> None:
    b: DynamicBatcher[int] = DynamicBatcher(BatcherConfig(max_batch=3, max_wait_us=10_000))
    for i in range(3):
        b.add(i, now_ns=i)
    assert b.due(3)
    assert b.deadline_ns() == 0  # already due: the oldest arrival
    assert b.take() == [0, 1, 2]


def test_take_never_exceeds_max_batch_rows_and_keeps_order() -> None:
    b: DynamicBatcher[str] = DynamicBatcher(BatcherConfig(max_batch=8, max_wait_us=0))
    b.add("a", 3, now_ns=0)
    b.add("b", 4, now_ns=1)
    b.add("c", 2, now_ns=2)  # 3 + 4 + 2 > 8: "c" waits for the next batch
    assert b.pending_rows == 9
    assert b.take() == ["a", "b"]
    assert b.pending_rows == 2 and len(b) == 1
    assert b.deadline_ns() == 2  # the new oldest item's clock, not the old one's
    assert b.take() == ["c"]


def test_oversized_item_is_taken_alone() -> None:
    b: DynamicBatcher[str] = DynamicBatcher(BatcherConfig(max_batch=4, max_wait_us=1000))
    b.add("huge", 10, now_ns=0)
    b.add("small", 1, now_ns=1)
    assert b.due(1)
    assert b.take() == ["huge"]
    assert b.take() == ["small"]


def test_zero_wait_makes_every_item_due_at_once() -> None:
    b: DynamicBatcher[str] = DynamicBatcher(BatcherConfig(max_batch=4, max_wait_us=0))
    b.add("a", now_ns=5)
    assert b.due(5)


def test_rejects_non_positive_rows() -> None:
    b: DynamicBatcher[str] = DynamicBatcher()
    with pytest.raises(ValueError):
        b.add("a", 0, now_ns=0)


@given(
    max_batch=st.integers(1, 16),
    rows=st.lists(st.integers(1, 24), min_size=1, max_size=40),
)
def test_take_partitions_items_in_order_within_bounds(max_batch: int, rows: list[int]) -> None:
    b: DynamicBatcher[int] = DynamicBatcher(BatcherConfig(max_batch=max_batch, max_wait_us=0))
    for i, n in enumerate(rows):
        b.add(i, n, now_ns=i)
    taken: list[int] = []
    while len(b):
        batch = b.take()
        assert batch, "take() must make progress while items are pending"
        total = sum(rows[i] for i in batch)
        assert total <= max_batch or len(batch) == 1
        taken.extend(batch)
    assert taken == list(range(len(rows)))
    assert b.pending_rows == 0
