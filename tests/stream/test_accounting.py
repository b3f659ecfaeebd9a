"""Per-stream seq accounting: gaps, resets, merging the stages' ledgers."""

from __future__ import annotations

import msgpack

from stream.accounting import (
    COUNTER_MAX,
    OVERFLOW_STREAM,
    UNKNOWN_STREAM,
    StreamLedger,
    format_summaries,
    merge_ledgers,
)


def test_gaps_and_resets_from_the_sender_side() -> None:
    ledger = StreamLedger()
    skipped = [ledger.received("a", seq) for seq in (10, 11, 14, 15, 3, 4)]
    assert skipped == [0, 0, 2, 0, 0, 0]
    s = ledger.summary()["a"]
    assert (s.received, s.gaps, s.gap_events, s.resets) == (6, 2, 1, 1)
    assert (s.first_seq, s.last_seq) == (10, 4)  # first seen, last seen


def test_duplicate_counts_as_reset() -> None:
    ledger = StreamLedger()
    for seq in (0, 1, 1, 2):
        ledger.received("a", seq)
    s = ledger.summary()["a"]
    assert s.resets == 1 and s.gaps == 0  # 1 -> 2 after the repeat is no gap


def test_stages_add_up_to_an_end_to_end_account() -> None:
    ingest, worker, publisher = StreamLedger(), StreamLedger(), StreamLedger()
    for seq in range(10):
        ingest.received("a", seq)
    ingest.received(None)  # unreadable message
    ingest.error(None, "bad_msgpack")
    ingest.error("a", "payload_length")
    worker.dropped("a", "dropped")
    worker.dropped("a", "dropped")
    worker.error("a", "input_contract")
    for _ in range(6):
        publisher.delivered("a")
    summary = merge_ledgers([ingest.snapshot(), worker.snapshot(), publisher.snapshot()])
    a = summary["a"]
    assert (a.received, a.delivered, a.errors_total, a.dropped_total) == (10, 6, 2, 2)
    assert a.errors == {"payload_length": 1, "input_contract": 1}
    assert a.unexplained == 0
    unknown = summary[UNKNOWN_STREAM]
    assert unknown.received == 1 and unknown.errors == {"bad_msgpack": 1}
    assert unknown.unexplained == 0


def test_unexplained_shows_a_loss() -> None:
    ingest, publisher = StreamLedger(), StreamLedger()
    for seq in range(3):
        ingest.received("a", seq)
    publisher.delivered("a")
    a = merge_ledgers([ingest.snapshot(), publisher.snapshot()])["a"]
    assert a.unexplained == 2
    assert "unexplained 2" in a.format()


def test_stream_cap_overflows_into_one_record() -> None:
    ledger = StreamLedger(max_streams=2)
    for stream in ("a", "b", "c", "d"):
        ledger.received(stream, 0)
    assert sorted(ledger.streams()) == sorted(["a", "b", OVERFLOW_STREAM])
    assert ledger.summary()[OVERFLOW_STREAM].received == 2
    assert ledger.summary()[OVERFLOW_STREAM].first_seq is None  # no seq tracking there


def test_format_has_a_total_line() -> None:
    ledger = StreamLedger()
    ledger.received("x", 0)
    ledger.delivered("x")
    lines = format_summaries(ledger.summary())
    assert lines[0].startswith("x: received 1, delivered 1")
    assert lines[-1].startswith("total: received 1, delivered 1")


def test_snapshot_is_plain_data() -> None:
    import msgpack

    ledger = StreamLedger()
    ledger.received("a", 5)
    ledger.error("a", "bad_shape")
    snap = ledger.snapshot()
    assert msgpack.unpackb(msgpack.packb(snap)) == snap


def test_consumed_inputs_and_emitted_messages_balance() -> None:
    # An ECG-like stream: 3 chunks in; the stage keeps them and makes 2 beats and 1 status;
    # one beat is delivered, one dropped, the status delivered; a 4th chunk is refused.
    ingest, worker, publisher = StreamLedger(), StreamLedger(), StreamLedger()
    for seq in range(4):
        ingest.received("w1", seq)
    for _ in range(3):
        ingest.consumed("w1")
    ingest.error("w1", "bad_fs")
    for _ in range(3):
        ingest.emitted("w1")
    publisher.delivered("w1")
    publisher.delivered("w1")
    worker.dropped("w1", "dropped")
    summary = merge_ledgers([ingest.snapshot(), worker.snapshot(), publisher.snapshot()])["w1"]
    assert (summary.consumed, summary.emitted) == (3, 3)
    assert summary.unexplained == 0
    assert "consumed 3, emitted 3" in summary.format()
    publisher_lost = merge_ledgers([ingest.snapshot(), worker.snapshot()])["w1"]
    assert publisher_lost.unexplained == 2


def test_seq_jumps_beyond_max_gap_are_resets_and_pack() -> None:
    ledger = StreamLedger()
    for seq in (0, 2**64 - 1, 0, 2**64 - 1):
        ledger.received("a", seq)
    summary = ledger.summary()["a"]
    assert (summary.gaps, summary.resets) == (0, 3)  # jumps past max_gap are resets
    msgpack.packb(ledger.snapshot())


def test_merged_counters_saturate() -> None:
    snap = {"a": {"received": COUNTER_MAX, "gaps": COUNTER_MAX, "errors": {"x": COUNTER_MAX}}}
    s = merge_ledgers([snap, snap, snap])["a"]
    assert s.received == s.gaps == COUNTER_MAX and s.errors == {"x": COUNTER_MAX}




def test_max_gap_bounds_a_gap_and_odd_seqs_are_not_tracked() -> None:
    ledger = StreamLedger(max_gap=10)
    skipped = [ledger.received("a", seq) for seq in (0, 11, 23, 24, -5, 2**64, 25)]
    assert skipped == [0, 10, 0, 0, 0, 0, 0]  # 11 -> 23 skips 11 > max_gap: a reset
    s = ledger.summary()["a"]
    assert (s.received, s.gaps, s.gap_events, s.resets, s.last_seq) == (7, 10, 1, 1, 25)
