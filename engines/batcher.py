"""Dynamic batching: collect items until ``max_batch`` rows or ``max_wait_us``, whichever first.

:class:`DynamicBatcher` is pure bookkeeping: no threads, no sockets, no clock of its own. The
caller passes ``now_ns`` (any monotonic nanosecond clock, e.g. ``time.monotonic_ns()``) and
uses :meth:`~DynamicBatcher.deadline_ns` as its poll timeout::

    batcher = DynamicBatcher(BatcherConfig(max_batch=64, max_wait_us=2000))
    while True:
        wait_ns = batcher.wait_ns(time.monotonic_ns())       # None: nothing pending
        for item, rows in poll(timeout_ns=wait_ns):           # the caller's I/O
            batcher.add(item, rows, now_ns=time.monotonic_ns())
        if batcher.due(time.monotonic_ns()):
            run(batcher.take())

An item carries ``n_rows`` rows (e.g. the windows of one spectrum). :meth:`~DynamicBatcher.take`
returns whole items in arrival order, never more than ``max_batch`` rows in total, except that an
item larger than ``max_batch`` rows is returned alone (the caller splits it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BatcherConfig", "DynamicBatcher"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """``max_batch``: rows per batch (>= 1); ``max_wait_us``: longest time the oldest pending
    item may wait before its batch is due (>= 0; 0 means every item is due at once)."""

    max_batch: int = 64
    max_wait_us: int = 2000

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_us < 0:
            raise ValueError(f"max_wait_us must be >= 0, got {self.max_wait_us}")


class DynamicBatcher(Generic[T]):
    """Pending items with their row counts and arrival times (ns). Not thread-safe: owned by
    the one thread that feeds the engine."""

    def __init__(self, config: BatcherConfig | None = None) -> None:
        self._config = config or BatcherConfig()
        self._max_wait_ns = self._config.max_wait_us * 1000
        self._pending: deque[tuple[T, int, int]] = deque()
        self._rows = 0

    @property
    def config(self) -> BatcherConfig:
        return self._config

    @property
    def pending_rows(self) -> int:
        """Rows waiting, summed over pending items."""
        return self._rows

    def __len__(self) -> int:
        """Number of pending items."""
        return len(self._pending)

    def add(self, item: T, n_rows: int = 1, *, now_ns: int) -> None:
        """Queue ``item`` (``n_rows`` >= 1 rows) that arrived at ``now_ns``."""
        if n_rows < 1:
            raise ValueError(f"n_rows must be >= 1, got {n_rows}")
        self._pending.append((item, int(n_rows), int(now_ns)))
        self._rows += int(n_rows)

    def deadline_ns(self) -> int | None:
        """When the current batch must be flushed; ``None`` when nothing is pending.

        A full batch is due already: its deadline is the oldest item's arrival time.
        """
        if not self._pending:
            return None
        oldest = self._pending[0][2]
        if self._rows >= self._config.max_batch:
            return oldest
        return oldest + self._max_wait_ns

    def wait_ns(self, now_ns: int) -> int | None:
        """Nanoseconds until :meth:`deadline_ns` (0 if past), ``None`` when nothing is pending;
        suitable as a poll timeout."""
        deadline = self.deadline_ns()
        if deadline is None:
            return None
        return max(0, deadline - int(now_ns))

    def due(self, now_ns: int) -> bool:
        """True when ``pending_rows >= max_batch`` or the oldest item has waited
        ``>= max_wait_us``."""
        deadline = self.deadline_ns()
        return deadline is not None and int(now_ns) >= deadline

    def take(self) -> list[T]:
        """Remove and return the next batch of items in arrival order (``[]`` if none).

        The rows of the returned items sum to at most ``max_batch``, except for a single item
        larger than ``max_batch`` rows, which is returned alone.
        """
        if not self._pending:
            return []
        limit = self._config.max_batch
        batch: list[T] = []
        rows = 0
        while self._pending:
            item, n, _ = self._pending[0]
            if batch and rows + n > limit:
                break
            self._pending.popleft()
            batch.append(item)
            rows += n
            if rows >= limit:
                break
        self._rows -= rows
        return batch
