"""The codec link: ``sigstream run codec-tx`` (capture, encode, send) and ``codec-rx`` (receive,
jitter buffer, decode, play).

::

    mic / WAV --blocks--> StreamEncoder --frame packets--> PUSH ==tcp==> PULL --> jitter buffer
                                                                            --> StreamDecoder
                                                                            --> speaker / WAV

One packet per codec frame, on the wire format v1 (``docs/protocol.md``, "The codec link"):
header ``kind: "codec"``, ``stream``, ``seq`` (+1 per frame), ``t_ns`` (capture time of the
frame's first sample), ``dtype: "uint8"``, ``shape: [bytes]``, ``fs``, and what the receiver
needs to decode it: ``codec``, ``model`` (codec key and weights hash), ``step``, ``kbps``,
``frame``, ``hop``. A last message with ``end: true`` and no bytes ends the stream.
Each end is its own module: :mod:`stream.paths.codec.sender` (``run codec-tx``) and
:mod:`stream.paths.codec.receiver` (``run codec-rx``); this one holds what they share: the counters
and their JSON report (:class:`LinkStats`), ``/metrics``, loading the codec, and the release of
a link end's resources.

Latency of each played frame: wall clock when its samples go to the sink (plus the sound
device's output latency) minus the frame's capture time ``t_ns``; sender and receiver on one
machine share the clock, across machines they must be NTP-synchronised for this figure.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zmq
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engines.codec.codec import CODEC_LINK_MAX_BATCH, Codec, load_codec
from stream.metrics import LATENCY_BUCKETS_S, Histogram, MetricsServer
from stream.security import ServerGuard

__all__ = [
    "LinkEndConfig",
    "LinkStats",
    "load_link_codec",
    "release_link",
    "serve_link_metrics",
    "write_link_report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LinkEndConfig:
    """What both ends of the link set (:class:`~stream.paths.codec.sender.TxConfig`,
    :class:`~stream.paths.codec.receiver.RxConfig` add their own): ``stream`` id sent or
    played; ``codec`` key and engine ``backend`` (``cache_dir`` for built engines); sound
    ``device`` (index or name part, ``None``: the default) and ``device_latency``, PortAudio's
    ``"high"`` (safe from over/underruns) or ``"low"`` (less delay); ``seconds`` to run
    (``None``: until the input or stream ends); ``metrics_port`` for ``/metrics`` (``None``:
    none) on ``metrics_addr``; ``report``: where the JSON report goes."""

    stream: str = "mic"
    codec: str = "wideband"
    backend: str = "auto"
    device: str | None = None
    device_latency: Literal["high", "low"] = "high"
    seconds: float | None = None
    cache_dir: Path | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    report: Path | None = None


SILENCE_DBFS = -120.0


@dataclass
class LinkStats:
    """Counters of one end of a link; ``snapshot()`` is the JSON report."""

    role: str
    counters: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    latency_ms: list[float] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    cpu_ready_s: float = 0.0  # process CPU time once the engines were loaded
    level_dbfs: float = SILENCE_DBFS  # RMS of the last block captured (tx) or played (rx)

    def ready(self) -> None:
        self.cpu_ready_s = time.process_time()

    def level(self, samples: np.ndarray) -> None:
        """Note the RMS level of a block of samples (full scale 1.0), in dBFS."""
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0
        self.level_dbfs = (20.0 * math.log10(rms) if math.isfinite(rms) and rms > 1e-6
                           else SILENCE_DBFS)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def error(self, code: str, reason: str, n: int = 1) -> None:
        first = code not in self.errors
        self.errors[code] = self.errors.get(code, 0) + n
        (log.warning if first else log.debug)("codec-%s: %s: %s", self.role, code, reason)

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)
        if len(self.latency_ms) < 1_000_000:
            self.latency_ms.append(1000.0 * seconds)

    def snapshot(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms)
        cpu = time.process_time()
        return {
            "role": self.role,
            "cpu_s": round(cpu, 3),
            "cpu_s_streaming": round(cpu - self.cpu_ready_s, 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **dict(sorted(self.counters.items())),
            "errors": dict(sorted(self.errors.items())),
            "device": self.device,
            "latency_ms": None if not lat.size else {
                "p50": round(float(np.percentile(lat, 50)), 2),
                "p99": round(float(np.percentile(lat, 99)), 2),
                "max": round(float(lat.max()), 2), "count": int(lat.size)},
        }


# Counters exported from the start, at zero (alerts and dashboards divide by them); the others
# appear once they count something.
_LINK_COUNTERS = {"tx": ("packets_sent", "bytes_sent"),
                  "rx": ("packets_received", "played", "concealed", "late", "skipped")}


class _LinkCollector(Collector):
    """``/metrics`` of one link end: ``sigstream_codec_<counter>_total``, errors by code, and
    the capture-to-playout latency histogram (receiver)."""

    def __init__(self, stats: LinkStats, lock: threading.Lock) -> None:
        self._stats, self._lock = stats, lock

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        with self._lock:
            counters = dict(self._stats.counters)
            errors = dict(self._stats.errors)
            device = {k: v for k, v in self._stats.device.items() if isinstance(v, int)}
            hist = Histogram.from_snapshot(LATENCY_BUCKETS_S, self._stats.latency.snapshot())
            level = self._stats.level_dbfs
        role = self._stats.role
        yield GaugeMetricFamily("sigstream_codec_level_dbfs",
                                f"codec-{role}: RMS level of the last block "
                                f"{'captured' if role == 'tx' else 'played'}, dBFS.", value=level)
        base = dict.fromkeys(_LINK_COUNTERS.get(role, ()), 0)
        for name, value in sorted({**base, **counters, **device}.items()):
            family = CounterMetricFamily(f"sigstream_codec_{name}",
                                         f"codec-{role}: {name.replace('_', ' ')}.")
            family.add_metric([], value)
            yield family
        errs = CounterMetricFamily("sigstream_codec_errors", f"codec-{role}: bad messages.",
                                   labels=["code"])
        for code, n in sorted(errors.items()):
            errs.add_metric([code], n)
        yield errs
        if role == "rx":
            lat = HistogramMetricFamily("sigstream_codec_latency_seconds",
                                        "Capture to playout of a frame, seconds.")
            lat.add_metric([], hist.buckets(), hist.sum)
            yield lat


def serve_link_metrics(stats: LinkStats, lock: threading.Lock,
                   port: int | None, addr: str) -> MetricsServer | None:
    if port is None:
        return None
    server = MetricsServer(_LinkCollector(stats, lock), port=port, addr=addr)
    server.start()
    log.info("metrics on http://%s:%s/metrics", addr, server.port)
    return server


def release_link(sock: zmq.Socket[Any], server: MetricsServer | None, codec: Codec | None,
             guard: ServerGuard | None = None) -> None:
    """Close a link end's socket (and its ZAP guard and context), metrics server and, if owned,
    codec."""
    context = sock.context
    sock.close()
    if guard is not None:
        guard.close()
    context.term()
    if server is not None:
        server.close()
    if codec is not None:
        codec.close()


def write_link_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")

def load_link_codec(name: str, backend: str, cache_dir: Path | None) -> Codec:
    return load_codec(name, backend=backend, cache_dir=cache_dir, max_batch=CODEC_LINK_MAX_BATCH)
