"""What each panel of ``sigstream view`` draws, and the helpers a path's digest uses to say it.

A path's :class:`~stream.paths.ViewSpec` names a panel and turns one result (and the input
it answers) into the panel's JSON; everything here bounds that JSON, so the browser never
receives more than it can draw:

``"trace"`` — ``{"curve": {"x": [...], "y": [...]} | null, "length": n | null,
"spans": [[start, end], ...], "markers": [{"x", "y", "label", ...}, ...]}``: the input as a
curve (min/max envelope of at most :data:`CURVE_POINTS` points), shaded spans, markers whose
other keys show on hover. The view adds ``"waterfall"``: the markers' ``x`` of the latest
results, one row per result.

``"strip"`` — each result's digest is an event ``{"t_ns", "class", "label", ...}``
(``class`` colours it: ``accept``, ``reject``, ``uncertain``, ``status``); the view adds
the input's last seconds as ``{"t": [...], "y": [...]}`` (seconds before now).

``"slices"`` — ``{"before": image | null, "after": image}`` with
``image = {"shape": [rows, cols], "data": base64 float32, "min", "max"}``, at most
:data:`IMAGE_SIDE` a side.

``"meters"`` — from one scrape of a process's ``/metrics``: ``{"role", "level", "counters":
{name: total}, "errors": {code: total}, "latency_ms": [p50, p99] | null}``; the view adds
the counters' rates over time.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CURVE_POINTS", "IMAGE_SIDE", "MAX_MARKERS", "envelope", "finite", "histogram_quantiles",
    "image", "mapping", "spans",
]

CURVE_POINTS = 2048
IMAGE_SIDE = 256
MAX_MARKERS = 256


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def envelope(values: Any, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """A 1-D array as at most ``points`` points that keep its extremes: unchanged if short
    enough, else the minimum and the maximum of each of ``points // 2`` equal bins."""
    y = np.asarray(values, dtype=np.float64).ravel()
    y = np.where(np.isfinite(y), y, 0.0)
    if y.size <= points:
        return {"x": np.arange(y.size, dtype=np.float64).tolist(), "y": y.tolist()}
    bins = points // 2
    edges = np.linspace(0, y.size, bins + 1).astype(np.int64)
    lo = np.minimum.reduceat(y, edges[:-1])
    hi = np.maximum.reduceat(y, edges[:-1])
    where_lo = edges[:-1].astype(np.float64)
    where_hi = (edges[1:] - 1).astype(np.float64)
    return {"x": np.column_stack([where_lo, where_hi]).ravel().tolist(),
            "y": np.column_stack([lo, hi]).ravel().tolist()}


def spans(raw: Any, limit: int = MAX_MARKERS) -> list[list[float]]:
    """``[[start, end], ...]`` pairs of finite numbers out of whatever a result holds."""
    out: list[list[float]] = []
    for item in raw if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) else ():
        if isinstance(item, Sequence) and len(item) == 2:
            start, end = finite(item[0]), finite(item[1])
            if start is not None and end is not None:
                out.append([start, end])
        if len(out) >= limit:
            break
    return out


def image(values: Any) -> dict[str, Any]:
    """A 2-D array as the panel's image: strided down to at most :data:`IMAGE_SIDE` a side,
    float32, base64."""
    a = np.asarray(values, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"an image is 2-D and not empty, got shape {a.shape}")
    step = max(1, -(-max(a.shape) // IMAGE_SIDE))
    a = np.ascontiguousarray(a[::step, ::step])
    a = np.where(np.isfinite(a), a, 0.0).astype("<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": float(a.min()), "max": float(a.max())}


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (result bodies come from the network)."""
    return value if isinstance(value, Mapping) else {}


def histogram_quantiles(samples: Sequence[tuple[str, Mapping[str, str], float]],
                        quantiles: Sequence[float]) -> list[float] | None:
    """Quantiles of a Prometheus histogram from its ``_bucket`` samples, interpolated within a
    bucket as ``histogram_quantile()`` does; ``None`` while it has counted nothing."""
    buckets = sorted((float(labels["le"]), value) for name, labels, value in samples
                     if name.endswith("_bucket") and "le" in labels)
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    out = []
    for q in quantiles:
        rank = q * total
        lower, below = 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                if math.isinf(upper):
                    out.append(lower)
                else:
                    share = (rank - below) / (count - below) if count > below else 1.0
                    out.append(lower + (upper - lower) * share)
                break
            lower, below = upper, count
    return out
