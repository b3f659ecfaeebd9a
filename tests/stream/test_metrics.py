"""Stage stats snapshots and their Prometheus export on a private registry."""

from __future__ import annotations

import urllib.request

import msgpack
import pytest
from prometheus_client import REGISTRY, generate_latest

from stream.metrics import LATENCY_BUCKETS_S, Histogram, MetricsCollector, MetricsServer, StageStats
from stream.queues import BoundedQueue


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram(LATENCY_BUCKETS_S)
    for ms in (1, 2, 2, 4, 30):
        h.observe(ms / 1e3)
    assert h.count == 5 and h.max == pytest.approx(0.030)
    assert h.quantile(0.5) == pytest.approx(0.002)
    assert h.quantile(0.99) == pytest.approx(0.030)  # the top value's bucket is capped at max
    buckets = dict(h.buckets())
    assert buckets["0.002"] == 3 and buckets["+Inf"] == 5
    assert Histogram(LATENCY_BUCKETS_S).quantile(0.5) is None


def test_stage_stats_snapshot_is_msgpack_and_exports() -> None:
    stats = StageStats("worker-0")
    stats.frame_in("a")
    stats.frame_out("a")
    stats.ledger.dropped("a", "dropped")
    stats.ledger.error("a", "input_contract")
    stats.observe_latency("a", 0.004)
    stats.observe_batch(8, 0.003)
    q: BoundedQueue[int] = BoundedQueue(4, "drop-oldest")
    q.put(1)
    stats.queue = q.statistics()
    snap = msgpack.unpackb(msgpack.packb(stats.snapshot()))

    collector = MetricsCollector()
    collector.update(snap)
    collector.set_up("worker-0", True)
    server = MetricsServer(collector, port=0, addr="127.0.0.1")
    text = generate_latest(server.registry).decode()
    assert 'sigstream_frames_in_total{stage="worker-0",stream="a"} 1.0' in text
    assert 'sigstream_drops_total{reason="dropped",stage="worker-0",stream="a"} 1.0' in text
    assert 'sigstream_errors_total{code="input_contract",stage="worker-0",stream="a"} 1.0' in text
    assert 'sigstream_latency_seconds_bucket{le="0.005",stream="a"} 1.0' in text
    assert 'sigstream_queue_depth{stage="worker-0"} 1.0' in text
    assert 'sigstream_batch_rows_count{stage="worker-0"} 1.0' in text
    assert 'sigstream_stage_up{stage="worker-0"} 1.0' in text
    assert b"sigstream_frames_in" not in generate_latest(REGISTRY)  # global registry untouched


def test_stream_labels_are_capped() -> None:
    stats = StageStats("ingest", max_streams=2)
    for stream in ("a", "b", "c", None):
        stats.frame_in(stream)
    assert stats.frames_in == {"a": 1, "b": 1, "*": 1, "?": 1}


def test_metrics_server_serves_http() -> None:
    collector = MetricsCollector()
    collector.set_up("ingest", True)
    server = MetricsServer(collector, port=0, addr="127.0.0.1")
    server.start()
    try:
        assert server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert b'sigstream_stage_up{stage="ingest"} 1.0' in r.read()
    finally:
        server.close()
        server.close()  # safe twice


def test_bookkeeping_never_raises_on_what_it_is_fed() -> None:
    h = Histogram(LATENCY_BUCKETS_S)
    for value in (float("nan"), float("inf"), -float("inf"), 0.001):
        h.observe(value)
    assert h.count == 1 and h.sum == pytest.approx(0.001)  # non-finite values are ignored
    stats = StageStats("ingest")
    stats.ledger.received("a", 0)
    stats.ledger.received("a", 2**64 - 1)  # a restart, not 2**64 lost seqs
    stats.frames_in["a"] = 2**70  # past what msgpack and Prometheus carry: saturates
    snap = msgpack.unpackb(msgpack.packb(stats.snapshot()))
    assert snap["frames_in"]["a"] == 2**63 - 1 and snap["ledger"]["a"]["gaps"] == 0
    collector = MetricsCollector()
    collector.update(snap)
    collector.update({"stage": "broken", "frames_in": {"a": "many"}, "latency": {"a": [1]}})
    text = generate_latest(MetricsServer(collector, port=0).registry).decode()
    assert 'sigstream_frames_in_total{stage="ingest",stream="a"} 9.223372036854776e+18' in text
    assert 'stage="broken"' not in text  # left out of the scrape, not failing it
