"""Per-stream ``seq`` accounting: every message a service takes in ends up explained.

Each pipeline stage keeps a :class:`StreamLedger` of what it, and only it, saw or did, so that
the ledgers of all stages add up (:func:`merge_ledgers`) to one end-to-end account per stream:

- ``received`` — messages taken in (ingest);
- ``gaps`` / ``gap_events`` — ``seq`` values the sender skipped (lost before they reached the
  service), seen as jumps of ``seq`` in arrival order (ingest, which sees every stream in order);
  ``resets`` — ``seq`` going backwards or repeating (a sender restarted, or a duplicate), or
  jumping forward by more than ``max_gap`` (a sender restarted from another base: no sender
  loses a million messages between two it delivers, and counting such a jump as loss would
  let one message add 2**64 to the gap counter);
- ``delivered`` — results published (publisher);
- ``dropped`` by reason — accepted and then given up by a queue policy (workers);
- ``errors`` by code — answered with an ``error`` message (any stage);
- ``consumed`` / ``emitted`` — for paths whose per-stream stage does not answer message for
  message (ECG: chunks of samples in, one result per heartbeat out): inputs the stage took into
  its stream's state, and the messages it made (beats, status reports), each of which is then
  delivered, dropped or answered with an error like any input (shard, or ingest).

After a clean drain, ``received + emitted == delivered + consumed + sum(errors) +
sum(dropped)`` for every stream: :attr:`StreamSummary.unexplained` is the difference, and it
must be zero.

Stream ids come from untrusted senders, so a ledger tracks at most ``max_streams`` of them; the
rest share the record :data:`OVERFLOW_STREAM` (without ``seq`` tracking). Snapshots are plain
dicts of ints and strings, so they travel as msgpack between processes; every counter in them
saturates at :data:`COUNTER_MAX` (int64, what msgpack and Prometheus carry), whatever was fed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTER_MAX",
    "DEFAULT_MAX_GAP",
    "OVERFLOW_STREAM",
    "UNKNOWN_STREAM",
    "StreamLedger",
    "StreamSummary",
    "format_summaries",
    "merge_ledgers",
    "saturate",
    "total_summary",
]

OVERFLOW_STREAM = "*"
"""The record shared by streams beyond a ledger's ``max_streams``."""
UNKNOWN_STREAM = "?"
"""The record of messages whose stream id could not be read (as in the ``error/?`` topic)."""
COUNTER_MAX = 2**63 - 1
"""Where every counter of a snapshot or summary saturates."""
DEFAULT_MAX_GAP = 1 << 20
"""Longest forward jump of ``seq`` counted as loss (about 17 minutes at 1,000 messages/s);
a longer one is a reset."""
_SEQ_MAX = 2**64 - 1


_COUNTERS = ("received", "delivered", "consumed", "emitted", "gaps", "gap_events", "resets")


class _Record:
    __slots__ = ("consumed", "delivered", "dropped", "emitted", "errors", "first_seq",
                 "gap_events", "gaps", "last_seq", "received", "resets")

    def __init__(self) -> None:
        self.received = 0
        self.delivered = 0
        self.consumed = 0
        self.emitted = 0
        self.gaps = 0
        self.gap_events = 0
        self.resets = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.dropped: dict[str, int] = {}
        self.errors: dict[str, int] = {}


class StreamLedger:
    """What one stage saw and did, per stream. Single-threaded (its stage's loop)."""

    __slots__ = ("_records", "max_gap", "max_streams")

    def __init__(self, *, max_streams: int = 4096, max_gap: int = DEFAULT_MAX_GAP) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        if max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {max_gap}")
        self.max_streams = max_streams
        self.max_gap = max_gap
        self._records: dict[str, _Record] = {}

    def _record(self, stream: str | None) -> _Record:
        key = UNKNOWN_STREAM if stream is None else stream
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= self.max_streams and key != UNKNOWN_STREAM:
                key = OVERFLOW_STREAM
                record = self._records.get(key)
            if record is None:
                record = self._records[key] = _Record()
        return record

    def received(self, stream: str | None, seq: int | None = None) -> int:
        """Count one message in; track ``seq`` when known (an unsigned 64-bit int; anything
        else is taken as unknown). Returns how many seqs it skipped (at most ``max_gap``)."""
        record = self._record(stream)
        record.received += 1
        if stream is None or stream not in self._records:
            return 0  # overflow and unknown streams mix senders: their seqs say nothing
        if not isinstance(seq, int) or not 0 <= seq <= _SEQ_MAX:
            return 0
        last = record.last_seq
        if last is None:
            record.first_seq = record.last_seq = seq
            return 0
        record.last_seq = seq
        if seq == last + 1:
            return 0
        missing = seq - last - 1
        if 0 < missing <= self.max_gap:
            record.gaps += missing
            record.gap_events += 1
            return missing
        record.resets += 1
        return 0

    def delivered(self, stream: str) -> None:
        self._record(stream).delivered += 1

    def consumed(self, stream: str) -> None:
        """An input taken into its stream's state: answered by what it contributes to."""
        self._record(stream).consumed += 1

    def emitted(self, stream: str) -> None:
        """A message made by a per-stream stage; it needs an answer like an input."""
        self._record(stream).emitted += 1

    def dropped(self, stream: str | None, reason: str) -> None:
        record = self._record(stream)
        record.dropped[reason] = record.dropped.get(reason, 0) + 1

    def error(self, stream: str | None, code: str) -> None:
        record = self._record(stream)
        record.errors[code] = record.errors.get(code, 0) + 1

    def streams(self) -> list[str]:
        return list(self._records)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A msgpack-friendly copy: ``{stream: {counter: value}}``."""
        return {
            stream: {
                "received": saturate(r.received),
                "delivered": saturate(r.delivered),
                "consumed": saturate(r.consumed),
                "emitted": saturate(r.emitted),
                "gaps": saturate(r.gaps),
                "gap_events": saturate(r.gap_events),
                "resets": saturate(r.resets),
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "dropped": {k: saturate(n) for k, n in r.dropped.items()},
                "errors": {k: saturate(n) for k, n in r.errors.items()},
            }
            for stream, r in self._records.items()
        }

    def summary(self) -> dict[str, StreamSummary]:
        return merge_ledgers([self.snapshot()])


@dataclass(frozen=True, kw_only=True)
class StreamSummary:
    """The end-to-end account of one stream (see the module docstring for each counter)."""

    stream: str
    received: int = 0
    delivered: int = 0
    consumed: int = 0
    emitted: int = 0
    gaps: int = 0
    gap_events: int = 0
    resets: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    dropped: Mapping[str, int] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    @property
    def unexplained(self) -> int:
        """Messages taken in and never answered: zero after a clean drain, > 0 is a bug
        (or messages still in flight when the snapshot was taken)."""
        return (self.received + self.emitted - self.delivered - self.consumed
                - self.errors_total - self.dropped_total)

    def format(self) -> str:
        """One log line."""
        parts = [
            f"{self.stream}: received {self.received}",
            f"delivered {self.delivered}",
            *([f"consumed {self.consumed}", f"emitted {self.emitted}"]
              if self.consumed or self.emitted else []),
            f"errors {self.errors_total}" + (f" {dict(self.errors)}" if self.errors else ""),
            f"dropped {self.dropped_total}" + (f" {dict(self.dropped)}" if self.dropped else ""),
            f"sender gaps {self.gaps}",
        ]
        if self.first_seq is not None:
            parts.append(f"seq {self.first_seq}..{self.last_seq}")
        if self.resets:
            parts.append(f"seq resets {self.resets}")
        parts.append(f"unexplained {self.unexplained}")
        return ", ".join(parts)


def merge_ledgers(snapshots: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, StreamSummary]:
    """Add up ledger snapshots of several stages into one summary per stream, sorted by id."""
    totals: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        for stream, rec in snapshot.items():
            acc = totals.setdefault(
                stream,
                {"received": 0, "delivered": 0, "consumed": 0, "emitted": 0, "gaps": 0,
                 "gap_events": 0, "resets": 0, "first_seq": None, "last_seq": None,
                 "dropped": {}, "errors": {}},
            )
            for key in _COUNTERS:
                acc[key] = saturate(acc[key] + int(rec.get(key, 0)))
            for key, pick in (("first_seq", min), ("last_seq", max)):
                value = rec.get(key)
                if value is not None:
                    acc[key] = value if acc[key] is None else pick(acc[key], value)
            for key in ("dropped", "errors"):
                for name, n in rec.get(key, {}).items():
                    acc[key][name] = saturate(acc[key].get(name, 0) + int(n))
    return {stream: StreamSummary(stream=stream, **totals[stream]) for stream in sorted(totals)}


def format_summaries(summaries: Mapping[str, StreamSummary]) -> list[str]:
    """Log lines, one per stream, plus a total line."""
    return [*(s.format() for s in summaries.values()), total_summary(summaries).format()]


def total_summary(summaries: Mapping[str, StreamSummary]) -> StreamSummary:
    """All streams' accounts added up, as the stream ``total`` (no ``seq`` range)."""
    return StreamSummary(
        stream="total",
        received=sum(s.received for s in summaries.values()),
        delivered=sum(s.delivered for s in summaries.values()),
        consumed=sum(s.consumed for s in summaries.values()),
        emitted=sum(s.emitted for s in summaries.values()),
        gaps=sum(s.gaps for s in summaries.values()),
        gap_events=sum(s.gap_events for s in summaries.values()),
        resets=sum(s.resets for s in summaries.values()),
        dropped=_sum_maps(s.dropped for s in summaries.values()),
        errors=_sum_maps(s.errors for s in summaries.values()),
    )


def _sum_maps(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = saturate(out.get(k, 0) + v)
    return out


def saturate(n: int) -> int:
    """``n`` saturated to ``0..COUNTER_MAX``."""
    return n if 0 <= n <= COUNTER_MAX else (0 if n < 0 else COUNTER_MAX)
