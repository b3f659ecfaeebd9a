"""Prometheus metrics of a multi-process service: stage-side counters, supervisor-side export.

The stages are separate processes, so each keeps its own :class:`StageStats` (plain counters,
no locks, updated by its single loop) and sends :meth:`StageStats.snapshot` to the supervisor a
few times a second and once more when it stops. The supervisor keeps the latest snapshot of
each stage in a :class:`MetricsCollector`, registered on a private
``prometheus_client.CollectorRegistry`` and served by :class:`MetricsServer`. Nothing touches
the global registry, and no environment variable (multiprocess mode) is needed.

Exported families (labels in braces):

- ``sigstream_frames_in_total{stage,stream}``, ``sigstream_frames_out_total{stage,stream}``
- ``sigstream_drops_total{stage,stream,reason}``, ``sigstream_errors_total{stage,stream,code}``
- ``sigstream_seq_gaps_total{stream}``: seqs the sender skipped (lost before the service)
- ``sigstream_queue_depth{stage}``, ``sigstream_queue_max_depth{stage}``,
  ``sigstream_queue_capacity{stage}``
- ``sigstream_latency_seconds{stream}`` (histogram): capture (``t_ns`` of the input) to result
  published, in seconds; buckets :data:`LATENCY_BUCKETS_S` (0.5 ms .. 2.5 s)
- ``sigstream_batch_rows{stage}`` (histogram): engine rows per batch;
  ``sigstream_engine_seconds{stage}`` (histogram): engine call time per batch
- ``sigstream_stage_up{stage}``: 1 while the stage process is alive;
  ``sigstream_restarts_total{stage}``: times the supervisor restarted it
- ``sigstream_refused_connections_total{stage}``: connection attempts a CURVE socket refused
  (a key not listed): what such a client sends never arrives, so this is its only trace

Stream ids are untrusted: each stage labels at most ``max_streams`` of them, the rest as
:data:`~stream.accounting.OVERFLOW_STREAM`, so a scrape has at most stages x (``max_streams`` + 2)
stream labels per family (the ledger caps its records the same way). A stage's bookkeeping
never raises on what it is fed: a non-finite observation is ignored, snapshot counters saturate
(:func:`~stream.accounting.saturate`), and a stage snapshot the collector cannot read is left out
of the scrape (logged) rather than failing it.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from stream.accounting import OVERFLOW_STREAM, UNKNOWN_STREAM, StreamLedger, saturate
from stream.queues import QueueStatistics

__all__ = [
    "BATCH_BUCKETS",
    "ENGINE_BUCKETS_S",
    "LATENCY_BUCKETS_S",
    "Histogram",
    "MetricsCollector",
    "MetricsServer",
    "Readiness",
    "StageStats",
]

log = logging.getLogger(__name__)

# Capture-to-result latency: fine steps around the 25 ms target, coarse beyond.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.010, 0.015, 0.020, 0.025, 0.035, 0.050,
    0.075, 0.100, 0.250, 0.500, 1.0, 2.5,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ENGINE_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100, 0.250, 1.0,
)


class Histogram:
    """Bucket counts, sum, count and max of observed values (one stage's loop updates it)."""

    __slots__ = ("bounds", "counts", "max", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``; a NaN or infinity is ignored (it would poison :attr:`sum`)."""
        if not math.isfinite(value):
            return
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if value > self.max:
            self.max = value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> list[Any]:
        return [[saturate(c) for c in self.counts], self.sum, self.max]

    @classmethod
    def from_snapshot(cls, bounds: Sequence[float], snap: Sequence[Any]) -> Histogram:
        """Raises ``ValueError``/``TypeError`` for a snapshot that does not fit ``bounds``."""
        hist = cls(bounds)
        counts, total, top = snap
        hist.counts = [int(c) for c in counts]
        if len(hist.counts) != len(hist.bounds) + 1:
            raise ValueError(f"{len(hist.counts)} bucket counts for {len(hist.bounds)} bounds")
        hist.sum, hist.max = float(total), float(top)
        return hist

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (Prometheus-style estimate, the
        top bucket reports :attr:`max`); ``None`` when empty."""
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return min(self.bounds[i], self.max) if i < len(self.bounds) else self.max
        return self.max

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs for Prometheus, ending with ``+Inf``."""
        out, seen = [], 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            seen += c
            out.append((_le(bound), seen))
        out.append(("+Inf", seen + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class StageStats:
    """Counters of one stage process. Called only from that stage's loop (no locking)."""

    def __init__(self, stage: str, *, max_streams: int = 4096) -> None:
        self.stage = stage
        self.max_streams = max_streams
        self.ledger = StreamLedger(max_streams=max_streams)
        self.frames_in: dict[str, int] = {}
        self.frames_out: dict[str, int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.engine_s = Histogram(ENGINE_BUCKETS_S)
        self.queue: QueueStatistics | None = None
        self.refused_connections = 0
        self._labels: set[str] = set()

    def label(self, stream: str | None) -> str:
        """The label for ``stream``: itself, ``"?"`` when unknown, ``"*"`` past the cap."""
        if stream is None:
            return UNKNOWN_STREAM
        if stream in self._labels:
            return stream
        if len(self._labels) >= self.max_streams:
            return OVERFLOW_STREAM
        self._labels.add(stream)
        return stream

    def frame_in(self, stream: str | None) -> None:
        key = self.label(stream)
        self.frames_in[key] = self.frames_in.get(key, 0) + 1

    def frame_out(self, stream: str | None) -> None:
        key = self.label(stream)
        self.frames_out[key] = self.frames_out.get(key, 0) + 1

    def observe_latency(self, stream: str, seconds: float) -> None:
        key = self.label(stream)
        hist = self.latency.get(key)
        if hist is None:
            hist = self.latency[key] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(seconds)

    def observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.engine_s.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-friendly copy of every counter."""
        return {
            "stage": self.stage,
            "t_ns": time.time_ns(),
            "frames_in": {k: saturate(n) for k, n in self.frames_in.items()},
            "frames_out": {k: saturate(n) for k, n in self.frames_out.items()},
            "ledger": self.ledger.snapshot(),
            "latency": {k: h.snapshot() for k, h in self.latency.items()},
            "batch_rows": self.batch_rows.snapshot(),
            "engine_s": self.engine_s.snapshot(),
            "refused_connections": saturate(self.refused_connections),
            "queue": None if self.queue is None else {
                "policy": self.queue.policy,
                "capacity": self.queue.capacity,
                "depth": self.queue.depth,
                "max_depth": self.queue.max_depth,
                "accepted": saturate(self.queue.accepted),
                "dropped": saturate(self.queue.dropped),
                "rejected": saturate(self.queue.rejected),
            },
        }


class MetricsCollector(Collector):
    """Supervisor side: the latest snapshot of each stage, exported on scrape.

    :meth:`update` is called by the supervisor's monitor thread, :meth:`collect` by the HTTP
    server's thread; a lock keeps them apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._up: dict[str, bool] = {}
        self._restarts: dict[str, int] = {}

    def update(self, snapshot: Mapping[str, Any]) -> None:
        with self._lock:
            self._snapshots[str(snapshot["stage"])] = dict(snapshot)

    def set_up(self, stage: str, up: bool) -> None:
        with self._lock:
            self._up[stage] = up

    def count_restart(self, stage: str) -> None:
        with self._lock:
            self._restarts[stage] = self._restarts.get(stage, 0) + 1

    def snapshots(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._snapshots)

    def latency(self) -> dict[str, Histogram]:
        """Capture-to-result latency per stream, merged over stages."""
        out: dict[str, Histogram] = {}
        for stage, snap in self.snapshots().items():
            try:
                hists = {str(stream): Histogram.from_snapshot(LATENCY_BUCKETS_S, h)
                         for stream, h in snap.get("latency", {}).items()}
            except Exception:
                log.exception("latency of stage %s unreadable; left out", stage)
                continue
            for stream, hist in hists.items():
                if stream in out:
                    out[stream].merge(hist)
                else:
                    out[stream] = hist
        return out

    def describe(self) -> Iterable[Any]:
        return []  # families vary with the stages and streams seen; collect() names them

    def collect(self) -> Iterable[Any]:
        with self._lock:
            snaps = {k: dict(v) for k, v in self._snapshots.items()}
            up = dict(self._up)
            restart_counts = dict(self._restarts)
        frames_in = CounterMetricFamily(
            "sigstream_frames_in", "Messages taken in by a stage.", labels=["stage", "stream"]
        )
        frames_out = CounterMetricFamily(
            "sigstream_frames_out", "Messages passed on by a stage.", labels=["stage", "stream"]
        )
        drops = CounterMetricFamily(
            "sigstream_drops", "Messages given up by a queue policy (each answered with an "
            "error).", labels=["stage", "stream", "reason"]
        )
        errors = CounterMetricFamily(
            "sigstream_errors", "Messages answered with an error result.",
            labels=["stage", "stream", "code"],
        )
        gaps = CounterMetricFamily(
            "sigstream_seq_gaps", "Seqs a sender skipped (lost before reaching the service).",
            labels=["stream"],
        )
        # the per-stage families, labelled by stage alone
        depth, max_depth, capacity, stage_up = (
            GaugeMetricFamily(name, doc, labels=["stage"]) for name, doc in (
                ("sigstream_queue_depth", "Items queued now."),
                ("sigstream_queue_max_depth", "Highest queue depth seen."),
                ("sigstream_queue_capacity", "Queue bound."),
                ("sigstream_stage_up", "1 while the stage process is alive."),
            )
        )
        batch, engine = (
            HistogramMetricFamily(name, doc, labels=["stage"]) for name, doc in (
                ("sigstream_batch_rows", "Engine rows per batch."),
                ("sigstream_engine_seconds", "Engine call time per batch, seconds."),
            )
        )
        restarts, refused = (
            CounterMetricFamily(name, doc, labels=["stage"]) for name, doc in (
                ("sigstream_restarts", "Times the supervisor restarted a stage."),
                ("sigstream_refused_connections", "Connection attempts a CURVE socket refused."),
            )
        )
        latency = HistogramMetricFamily(
            "sigstream_latency_seconds", "Capture (input t_ns) to result published, seconds.",
            labels=["stream"],
        )

        def samples(stage: str, snap: Mapping[str, Any]) -> list[tuple[Any, list[str], tuple]]:
            """Every sample of one stage, converted first: a snapshot that does not convert
            adds nothing (a half-added stage would be worse than none)."""
            out: list[tuple[Any, list[str], tuple]] = []
            for family, key in ((frames_in, "frames_in"), (frames_out, "frames_out")):
                for stream, n in snap.get(key, {}).items():
                    out.append((family, [stage, str(stream)], (float(n),)))
            for stream, rec in snap.get("ledger", {}).items():
                for reason, n in rec.get("dropped", {}).items():
                    out.append((drops, [stage, str(stream), str(reason)], (float(n),)))
                for code, n in rec.get("errors", {}).items():
                    out.append((errors, [stage, str(stream), str(code)], (float(n),)))
                if rec.get("gap_events") or rec.get("first_seq") is not None:
                    out.append((gaps, [str(stream)], (float(rec.get("gaps", 0)),)))
            if snap.get("refused_connections"):
                out.append((refused, [stage], (float(snap["refused_connections"]),)))
            queue = snap.get("queue")
            if queue:
                for gauge, key in ((depth, "depth"), (max_depth, "max_depth"),
                                   (capacity, "capacity")):
                    out.append((gauge, [stage], (float(queue[key]),)))
            for name, histogram, bounds in (
                ("batch_rows", batch, BATCH_BUCKETS),
                ("engine_s", engine, ENGINE_BUCKETS_S),
            ):
                hist = Histogram.from_snapshot(bounds, snap[name]) if name in snap else None
                if hist is not None and hist.count:
                    out.append((histogram, [stage], (hist.buckets(), hist.sum)))
            return out

        for stage, snap in sorted(snaps.items()):
            try:
                stage_samples = samples(stage, snap)
            except Exception:  # one bad snapshot must not fail the whole scrape
                log.exception("stats of stage %s unreadable; left out of the scrape", stage)
                continue
            for family, labels, args in stage_samples:
                family.add_metric(labels, *args)
        for stream, hist in sorted(self.latency().items()):
            latency.add_metric([stream], hist.buckets(), hist.sum)
        for stage, alive in sorted(up.items()):
            stage_up.add_metric([stage], 1.0 if alive else 0.0)
        for stage, n in sorted(restart_counts.items()):
            restarts.add_metric([stage], float(n))
        yield from (frames_in, frames_out, drops, errors, gaps, depth, max_depth, capacity,
                    latency, batch, engine, stage_up, restarts, refused)


#: What a readiness check returns: ready or not, and the details served as JSON.
Readiness = Callable[[], tuple[bool, Mapping[str, Any]]]


class MetricsServer:
    """``/metrics`` over HTTP for one collector, on a private registry, beside the health
    endpoints that orchestrators probe (as Kubernetes and Triton's ``/v2/health/*`` do):

    - ``/healthz``: 200 while the process answers (liveness);
    - ``/readyz``: 200 when ``readiness()`` says the service serves, else 503; both with its
      JSON details (which stage is not ready, and why). Without a ``readiness`` check, 200;
    - ``/streams``: ``streams()`` as JSON (404 without it): the per-stream counts a dashboard
      polls rather than reading every result (:meth:`stream.service.Service.stream_counts`).

    ``port=0`` picks a free port (see :attr:`port`). :meth:`start` raises ``OSError`` when the
    port is taken; :meth:`close` is safe twice.
    """

    def __init__(self, collector: Collector, *, port: int, addr: str = "127.0.0.1",
                 readiness: Readiness | None = None,
                 streams: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._addr = addr
        self._port = port
        self._readiness = readiness
        self._streams = streams
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def start(self) -> None:
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                return _json(start_response, 200, {"alive": True})
            if path == "/readyz":
                ready, details = (True, {}) if self._readiness is None else self._readiness()
                return _json(start_response, 200 if ready else 503, {"ready": ready, **details})
            if path == "/streams":
                if self._streams is None:
                    return _json(start_response, 404, {"error": "no per-stream counts here"})
                return _json(start_response, 200, self._streams())
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        class Server(ThreadingWSGIServer):  # IPv4 or IPv6, as the address is
            address_family = socket.getaddrinfo(self._addr, self._port,
                                                type=socket.SOCK_STREAM)[0][0]

        self._server = make_server(self._addr, self._port, app, Server,
                                   handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="sigstream-metrics")
        self._thread.start()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request: probes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _json(start_response: Callable[..., Any], status: int, body: Mapping[str, Any]
          ) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data)))])
    return [data]
