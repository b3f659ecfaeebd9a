"""What ``sigstream view`` knows of a service, and the snapshots the page draws.

:class:`ViewState` is fed, from one thread, with the results and errors the service publishes
(every one, or, once the service's own per-stream counts come, only errors and the results of
the streams drawn), the mirrored inputs of the streams a viewer chose, reads of the service's
``/readyz`` and ``/streams``, and scrapes of the ``/metrics`` of processes drawn as meters;
:meth:`ViewState.snapshot` is the JSON a page draws. It names no path: each result's path comes
from its kind (``result.<path>``), and the path's :class:`~stream.paths.ViewSpec` says how to
draw it.

Everything is bounded, so a view keeps up with any rate and the page never receives more than
it can draw: per-second buckets for two minutes of history, at most ``max_streams`` streams
(the rest counted together), a few hundred latencies per stream, the latest result per panel
(a digest at most :data:`TRACE_HZ` times a second) and the last :data:`STRIP_S` seconds of a
strip.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.paths import PathSpec, ViewSpec, path_specs
from stream.paths.deferred import load_attribute
from stream.stages.config import DROP_CODES
from stream.view.panels import envelope, finite
from stream.wire import ERROR_KIND, RESULT_PREFIX

__all__ = ["HISTORY_S", "STALE_S", "STRIP_S", "ViewState"]

log = logging.getLogger(__name__)

HISTORY_S = 120  # seconds of rate and latency history
STALE_S = 3.0  # a stream silent this long is shown as stale
STRIP_S = 10.0  # seconds of a strip panel
STRIP_SAMPLES = 1 << 16  # at most this many of them held
TRACE_HZ = 10.0  # digests per second of a trace or slices panel
WATERFALL_ROWS = 120
STREAM_LATENCIES = 512  # latest latencies kept per stream (its p50 / p99)
RATE_S = 5  # a stream's rate: results over this many seconds
CODES_PER_STREAM = 32  # distinct error codes counted per stream (the rest as "other")
TABLE_ROWS = 200  # streams listed in a snapshot (the rest are counted)
PENDING_INPUTS, PENDING_BYTES = 64, 64 << 20  # mirrored inputs awaiting their results
Sample = tuple[str, Mapping[str, str], float]  # one sample of a scrape: name, labels, value


@dataclass
class _Stream:
    path: str | None = None
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_seen: float = 0.0
    first_seen: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=STREAM_LATENCIES))
    seconds: deque[list[int]] = field(default_factory=lambda: deque(maxlen=RATE_S + 1))
    figures: tuple[int, float | None, float | None] = (0, None, None)  # results, p50, p99
    # From the service's counts: the latency histogram counts added at each of the last reads.
    buckets: deque[tuple[int, np.ndarray]] = field(default_factory=lambda: deque(maxlen=RATE_S))


@dataclass
class _Panel:
    """What the chosen stream's panel holds."""

    spec: ViewSpec
    inputs: dict[int, Any] = field(default_factory=dict)  # seq -> values (trace, slices)
    latest: dict[str, Any] | None = None
    last_digest: float = 0.0
    waterfall: deque[tuple[float, list[float]]] = field(
        default_factory=lambda: deque(maxlen=WATERFALL_ROWS))
    samples: deque[tuple[int, float, Any]] = field(default_factory=deque)  # t0_ns, fs, values
    held: int = 0  # samples in ``samples``
    mirrored: bool = False  # the mirror has sent this panel an input
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=512))


class _Seconds:
    """Results per second and their latency p50 / p99 over the last :data:`HISTORY_S` seconds:
    the second being filled holds its latencies, a finished one only its three figures."""

    def __init__(self) -> None:
        self.done: deque[tuple[int, int, float | None, float | None]] = deque(maxlen=HISTORY_S)
        self.second: int | None = None
        self.count = 0
        self.latencies: list[float] = []

    def add(self, second: int, latency_ms: float) -> None:
        if second != self.second:
            self._close()
            self.second, self.count, self.latencies = second, 0, []
        self.count += 1
        if latency_ms >= 0 and len(self.latencies) < 20_000:
            self.latencies.append(latency_ms)

    def add_counts(self, second: int, count: int, p50: float | None, p99: float | None) -> None:
        """A second's figures as the service counted them (no latencies held here)."""
        self._close()
        self.second, self.count, self.latencies = None, 0, []
        self.done.append((second, count, p50, p99))

    def _close(self) -> None:
        if self.second is None:
            return
        lat = np.asarray(self.latencies)
        p50, p99 = (np.percentile(lat, (50, 99)).tolist() if lat.size else (None, None))
        self.done.append((self.second, self.count, p50, p99))

    def series(self, now_s: int) -> dict[str, list[Any]]:
        if self.second is not None and self.second < now_s:
            self._close()
            self.second, self.count, self.latencies = None, 0, []
        rows = [row for row in self.done if now_s - HISTORY_S < row[0] < now_s]
        return {"t": [r[0] for r in rows], "rate": [r[1] for r in rows],
                "p50_ms": [r[2] for r in rows], "p99_ms": [r[3] for r in rows]}


class ViewState:
    """Everything the view shows (see the module docstring). Not thread-safe: one thread
    feeds it and takes its snapshots."""

    def __init__(self, *, max_streams: int = 4096, clock: Callable[[], float] = time.time,
                 specs: Iterable[PathSpec] | None = None) -> None:
        self.max_streams = max_streams
        self.clock = clock
        self._specs = {spec.name: spec for spec in (specs if specs is not None
                                                      else path_specs())}
        self._streams: dict[str, _Stream] = {}
        self._panels: dict[str, _Panel] = {}
        self._latency = _Seconds()
        self._functions: dict[str, Callable[..., Any]] = {}
        self.health: dict[str, Any] | None = None
        self.queues: dict[str, dict[str, float | None]] = {}
        self.meters: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()  # results, errors, inputs, invalid, undrawable
        # Once the service's own counts come (``counted``), results are only drawn.
        self.service_counts = False
        self._counted: dict[str, tuple[int, np.ndarray | None]] = {}
        self._bounds_ms: list[float] = []

    # -- what it is fed ----------------------------------------------------------------------

    def result(self, header: Mapping[str, Any], body: Any) -> None:
        """One result or error from the results socket (a decoded wire v1 message)."""
        now = self.clock()
        kind, name = str(header.get("kind")), str(header.get("stream"))
        s = self._stream(name, now)
        s.last_seen = now
        if kind == ERROR_KIND:
            body = body if isinstance(body, Mapping) else {}
            code = str(body.get("code", "error"))[:64]
            self.counts["errors"] += 1
            if not self.service_counts:
                _count(s.drops if code in DROP_CODES else s.errors, code, 1)
            s.last_error = f"{code}: {str(body.get('reason', ''))[:200]}"
            return
        self.counts["results"] += 1
        if kind.startswith(RESULT_PREFIX):
            s.path = kind[len(RESULT_PREFIX):]
        if not self.service_counts:  # else the service's counts feed the overview
            s.results += 1
            _add_second(s.seconds, int(now), 1)
            t_ns = header.get("t_ns")
            latency_ms = (now * 1e9 - t_ns) / 1e6 if isinstance(t_ns, int) else -1.0
            if latency_ms >= 0:
                s.latencies.append(latency_ms)
            self._latency.add(int(now), latency_ms)
        panel = self._panels.get(name)
        if panel is not None and isinstance(body, Mapping) and s.path is not None:
            self._draw(panel, header, body, now)

    def counted(self, doc: Mapping[str, Any]) -> None:
        """One read of the service's own per-stream counts (its ``/streams``, see
        :meth:`stream.service.Service.stream_counts`). From then on the overview's counts,
        rates and latencies come from these reads, a second apart, and results are read only
        for the streams drawn and for errors' reasons: the view's cost no longer grows with
        the rate of results."""
        streams, bounds = doc.get("streams"), doc.get("latency_bounds_s")
        if not (isinstance(streams, Mapping) and isinstance(bounds, list) and len(bounds) <= 64
                and all(finite(b) is not None for b in bounds)):
            self.counts["invalid"] += 1
            return
        now = self.clock()
        first, self.service_counts = not self.service_counts, True
        path = doc.get("path") if isinstance(doc.get("path"), str) else None
        total, total_new = np.zeros(len(bounds) + 1), 0
        counted: dict[str, tuple[int, np.ndarray | None]] = {}  # this read's, the next baseline
        for name, c in list(streams.items())[:self.max_streams]:
            delivered = c.get("delivered") if isinstance(c, Mapping) else None
            if not isinstance(delivered, int) or delivered < 0:
                continue
            name = str(name)[:256]
            try:
                latency: np.ndarray | None = np.asarray(c.get("latency"), dtype=np.float64)
            except (TypeError, ValueError):
                latency = None
            if latency is None or latency.shape != total.shape:
                latency = None
            before, before_latency = self._counted.get(name, (0, None))
            counted[name] = (delivered, latency)
            s = self._stream(name, now)
            s.path = path or s.path
            for key in ("errors", "dropped"):
                codes, counter = c.get(key), Counter[str]()
                for code, n in (codes.items() if isinstance(codes, Mapping) else ()):
                    if isinstance(n, int) and n > 0:
                        _count(counter, str(code)[:64], n)
                if counter.total() > (s.errors if key == "errors" else s.drops).total():
                    s.last_seen = now
                if key == "errors":
                    s.errors = counter
                else:
                    s.drops = counter
            new, s.results = delivered - before, delivered
            if first or new <= 0:
                continue  # the first read sets the baselines: what came before is history
            s.last_seen = now
            _add_second(s.seconds, int(now), new)
            if latency is not None:
                added = latency - (before_latency if before_latency is not None else 0.0)
                s.buckets.append((int(now), added))
                total += added
            total_new += new
        self._counted = counted
        self._bounds_ms = [float(b) * 1e3 for b in bounds]
        if total_new:
            self._latency.add_counts(int(now) - 1, total_new,
                                     *_bucket_quantiles(self._bounds_ms, total, (0.5, 0.99)))

    def path_of(self, stream: str) -> str | None:
        """The path whose results ``stream`` carries, once known."""
        s = self._streams.get(stream)
        return None if s is None else s.path

    def mirrored(self, header: Mapping[str, Any], array: Any) -> None:
        """One input of a chosen stream, from the service's mirror."""
        panel = self._panels.get(str(header.get("stream")))
        if panel is None or panel.spec.values is None:
            return
        self.counts["inputs"] += 1
        panel.mirrored = True
        try:
            values = self._function(panel.spec.values)(header, array)
        except Exception:
            self.counts["undrawable"] += 1
            return
        if panel.spec.panel == "strip":
            fs, t_ns = header.get("fs"), header.get("t_ns")
            if isinstance(t_ns, int) and isinstance(fs, (int, float)) and fs > 0:
                chunk = np.asarray(values, np.float64).ravel()[:STRIP_SAMPLES]
                panel.samples.append((t_ns, float(fs), chunk))
                panel.held += chunk.size
                # The last STRIP_S seconds, and never more than STRIP_SAMPLES (a sender's
                # clock may be anywhere).
                horizon = (self.clock() - STRIP_S) * 1e9
                while panel.samples and (panel.held > STRIP_SAMPLES or panel.samples[0][0] + len(
                        panel.samples[0][2]) / panel.samples[0][1] * 1e9 < horizon):
                    panel.held -= panel.samples.popleft()[2].size
            return
        seq = header.get("seq")
        if isinstance(seq, int):
            panel.inputs[seq] = values
            # Inputs wait for their results (seconds, for a volume): bounded in count and size.
            while len(panel.inputs) > 1 and (len(panel.inputs) > PENDING_INPUTS or sum(
                    getattr(v, "nbytes", 0) for v in panel.inputs.values()) > PENDING_BYTES):
                del panel.inputs[next(iter(panel.inputs))]

    def readiness(self, health: Mapping[str, Any]) -> None:
        """One read of the service's ``/readyz``: ``ready``, ``status`` and its ``detail``
        (the stages, and the queues' depth and capacity)."""
        detail = health.get("detail")
        queues = detail.get("queues") if isinstance(detail, Mapping) else None
        self.queues = {str(stage): {key: finite(q.get(key)) for key in ("depth", "capacity")}
                       for stage, q in list(queues.items())[:64] if isinstance(q, Mapping)
                       } if isinstance(queues, Mapping) else {}
        if isinstance(detail, Mapping):
            health = {**health, "detail": {k: v for k, v in detail.items() if k != "queues"}}
        self.health = dict(health)

    def scraped_meters(self, url: str, metrics: Mapping[str, Sequence[Sample]]) -> None:
        """One scrape of a process a path draws as meters (e.g. a codec link end)."""
        now = self.clock()
        for spec in self._specs.values():
            view = spec.view
            if view is None or view.metrics is None:
                continue
            if not any(name.startswith(view.metrics) for name in metrics):
                continue
            try:
                digest = self._function(view.digest)(metrics)
            except Exception:
                self.counts["undrawable"] += 1
                continue
            if digest is None:
                continue
            entry = self.meters.setdefault(url, {"path": spec.name, "history": deque()})
            history = entry["history"]
            history.append((now, digest.get("counters") or {}))
            while history and history[0][0] < now - HISTORY_S:
                history.popleft()
            entry["latest"] = digest
            return

    def drawing(self, stream: str) -> bool:
        """A page draws ``stream``: its results' bodies are wanted."""
        return stream in self._panels

    def choose(self, streams: Iterable[str]) -> set[str]:
        """The streams whose panels are drawn (those the viewers chose); returns the mirror
        topics to subscribe to."""
        wanted = set(streams)
        for name in list(self._panels):
            if name not in wanted:
                del self._panels[name]
        topics = set()
        for name in wanted:
            s = self._streams.get(name)
            spec = self._specs.get(s.path) if s is not None and s.path is not None else None
            if spec is None or spec.view is None or spec.view.metrics is not None:
                continue
            if name not in self._panels:
                self._panels[name] = _Panel(spec.view)
            if spec.view.input_kind is not None:
                topics.add(f"{spec.view.input_kind}/{name}")
        return topics

    # -- what it shows -----------------------------------------------------------------------

    def snapshot(self, chosen: str | None = None) -> dict[str, Any]:
        now = self.clock()
        streams = sorted(self._streams.items())
        rows = [self._row(name, s, now) for name, s in streams[:TABLE_ROWS]]
        return {
            "t": now,
            "health": self.health,
            "queues": self.queues,
            "latency": self._latency.series(int(now)),
            "streams": rows,
            "streams_more": max(0, len(streams) - TABLE_ROWS),
            "meters": [self._meter(url, entry) for url, entry in sorted(self.meters.items())],
            "panel": None if chosen is None else self._panel(chosen, now),
            "view": dict(self.counts),
        }

    def snapshot_json(self, chosen: str | None = None) -> str:
        """:meth:`snapshot` as JSON; a value JSON cannot carry (NaN, infinity, bytes: from a
        scrape or a path's digest) becomes null."""
        snapshot = self.snapshot(chosen)
        try:
            return json.dumps(snapshot, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return json.dumps(_plain(snapshot), separators=(",", ":"), allow_nan=False)

    def _row(self, name: str, s: _Stream, now: float) -> dict[str, Any]:
        # Results per second over the last RATE_S seconds (the current one included).
        recent = sum(n for second, n in s.seconds if second > now - RATE_S)
        window = min(float(RATE_S), max(1e-3, now - s.first_seen))
        if s.figures[0] != s.results:  # percentiles only when something new came
            if self.service_counts:
                recent_counts = [c for second, c in s.buckets if second > now - RATE_S]
                p50, p99 = _bucket_quantiles(self._bounds_ms, sum(recent_counts, np.zeros(
                    len(self._bounds_ms) + 1)), (0.5, 0.99))
            else:
                lat = np.asarray(s.latencies)
                p50, p99 = np.percentile(lat, (50, 99)).round(2).tolist() if lat.size else (
                    None, None)
            s.figures = (s.results, p50, p99)
        return {
            "stream": name, "path": s.path, "results": s.results,
            "rate": round(recent / window, 2),
            "p50_ms": s.figures[1], "p99_ms": s.figures[2],
            "errors": dict(s.errors), "drops": dict(s.drops), "last_error": s.last_error,
            "age_s": round(now - s.last_seen, 2), "stale": now - s.last_seen > STALE_S,
            "drawn": s.path in self._specs and self._specs[s.path].view is not None,
        }

    def _meter(self, url: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        history = list(entry["history"])
        t: list[float] = []
        rates: dict[str, list[float | None]] = {}
        for (t0, before), (t1, after) in zip(history, history[1:], strict=False):
            t.append(t1)
            for name, value in after.items():
                prior = before.get(name)
                rate = None if value is None or prior is None else max(0.0, value - prior) / max(
                    1e-3, t1 - t0)
                rates.setdefault(name, []).append(rate)
        return {"url": url, "path": entry["path"], **entry["latest"],
                "history": {"t": t, "rates": rates}}

    def _panel(self, name: str, now: float) -> dict[str, Any] | None:
        panel = self._panels.get(name)
        s = self._streams.get(name)
        if panel is None or s is None:
            return None
        out: dict[str, Any] = {"stream": name, "path": s.path, "panel": panel.spec.panel,
                               "unit": panel.spec.unit, "data": panel.latest}
        if panel.spec.panel == "trace":
            out["waterfall"] = [[t - now, xs] for t, xs in panel.waterfall]
        elif panel.spec.panel == "strip":
            out["strip"] = self._strip(panel, now)
            out["events"] = [{**e, "t": (e["t_ns"] / 1e9) - now} for e in panel.events
                             if e["t_ns"] / 1e9 > now - STRIP_S]
        return out

    def _strip(self, panel: _Panel, now: float) -> dict[str, list[float]]:
        if not panel.samples:
            return {"t": [], "y": []}
        t = np.concatenate([t0 / 1e9 - now + np.arange(len(v)) / fs
                            for t0, fs, v in panel.samples])
        y = np.concatenate([v for _, _, v in panel.samples])
        keep = t > -STRIP_S
        t, y = t[keep], y[keep]
        if t.size == 0:
            return {"t": [], "y": []}
        curve = envelope(y)
        index = np.asarray(curve["x"], dtype=np.int64)
        return {"t": t[index].round(4).tolist(), "y": curve["y"]}

    # -- helpers -----------------------------------------------------------------------------

    def _stream(self, name: str, now: float) -> _Stream:
        s = self._streams.get(name)
        if s is None:
            if len(self._streams) >= self.max_streams:
                name = "*"
                s = self._streams.get(name)
            if s is None:
                s = self._streams[name] = _Stream(first_seen=now)
        return s

    def _draw(self, panel: _Panel, header: Mapping[str, Any], body: Mapping[str, Any],
              now: float) -> None:
        spec = panel.spec
        seq = header.get("seq")
        strip = spec.panel == "strip"
        values = None if strip or not isinstance(seq, int) else panel.inputs.pop(seq, None)
        # A trace or a slice is drawn at most TRACE_HZ times a second; its waterfall keeps
        # every drawn result. A strip keeps every event. A result whose input the mirror has
        # not delivered (yet: the two sockets are read apart) waits for the next one, rather
        # than replacing a drawn curve with none.
        if not strip and (now - panel.last_digest < 1.0 / TRACE_HZ
                          or (values is None and panel.mirrored)):
            return
        try:
            digest = self._function(spec.digest)(body, values)
        except Exception:
            self.counts["undrawable"] += 1
            return
        if digest is None:
            return
        panel.last_digest = now
        if strip:
            if not isinstance(digest.get("t_ns"), int):
                t_ns = header.get("t_ns")
                digest["t_ns"] = t_ns if isinstance(t_ns, int) else int(now * 1e9)
            panel.events.append(digest)
            return
        panel.latest = digest
        if spec.panel == "trace":
            xs = [m["x"] for m in digest.get("markers", ()) if isinstance(m.get("x"), float)]
            panel.waterfall.append((now, xs))

    def _function(self, reference: str) -> Callable[..., Any]:
        function = self._functions.get(reference)
        if function is None:
            function = self._functions[reference] = load_attribute(reference)
        return function


def _count(counter: Counter[str], code: str, n: int) -> None:
    if code not in counter and len(counter) >= CODES_PER_STREAM:
        code = "other"  # a publisher inventing codes cannot grow the view
    counter[code] += n


def _add_second(seconds: deque[list[int]], second: int, n: int) -> None:
    if seconds and seconds[-1][0] == second:
        seconds[-1][1] += n
    else:
        seconds.append([second, n])


def _bucket_quantiles(bounds: Sequence[float], counts: np.ndarray, quantiles: Sequence[float]
                      ) -> list[float | None]:
    """Quantiles of a histogram (``counts`` per bucket of ``bounds``, the last one beyond
    them), interpolated within a bucket as Prometheus' ``histogram_quantile()`` does; beyond
    the last bound, that bound. ``None`` while it has counted nothing."""
    total = float(counts.sum())
    if total <= 0:
        return [None for _ in quantiles]
    cumulative = np.cumsum(counts)
    out: list[float | None] = []
    for q in quantiles:
        i = int(np.searchsorted(cumulative, q * total))
        if i >= len(bounds):
            out.append(round(bounds[-1], 2))
            continue
        lower = bounds[i - 1] if i else 0.0
        below = cumulative[i - 1] if i else 0.0
        share = (q * total - below) / counts[i] if counts[i] else 1.0
        out.append(round(lower + (bounds[i] - lower) * float(share), 2))
    return out


def _plain(value: Any) -> Any:
    """``value`` with every non-finite float and every non-JSON value as ``None``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return None
