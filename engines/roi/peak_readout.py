"""Peak list of a spectrum from the peak heads of its model windows, refined by a joint fit.

The read-out of the peak-head models (:mod:`engines.roi.peak_heads`):

1. per window, non-maximum suppression on the centre heatmap gives the peaks, their
   sub-sample centres and support widths (:func:`~engines.roi.peak_decode.decode_peaks`);
2. with a fit configured, the raw samples of every window (or of the whole spectrum when it was
   stretched to one window, its peaks scaled back to its samples) are fitted by a sum of peaks
   plus a smooth background started from that window's peaks
   (:func:`~engines.roi.peak_fit.fit_peaks`, all windows in one batch); height, area, FWHM and
   their uncertainties come from the fit, in the spectrum's own units. Without a fit they come
   from the heads: height times the window's min-max span, FWHM ``(w + 1) / 2`` and area
   ``height x FWHM`` (a Hann peak of support ``w``), no uncertainty;
3. each peak is reported by the one window that owns its centre (the centre-crop rule of the
   ROI stitching: the cut between two overlapping windows is the middle of their overlap).

Pure numpy; no state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.roi.peak_decode import decode_peaks
from engines.roi.peak_fit import FIT_PEAK_DTYPE, PeakFitConfig, fit_peaks, mark_overlaps
from engines.roi.windowing import WindowPlan

__all__ = ["HEADS_PEAK_DTYPE", "heads_peak_dicts", "read_heads"]

_MIN_FIT_SAMPLES = 16  # a shorter spectrum cannot hold a peak and a 7-knot background

HEADS_PEAK_DTYPE = np.dtype(
    # start/end: the samples within a FWHM of the centre (a Hann peak's whole support), end
    # exclusive
    FIT_PEAK_DTYPE.descr + [("start", np.int64), ("end", np.int64)]
)


def _segments(x: np.ndarray, plan: WindowPlan) -> tuple[np.ndarray, np.ndarray, float]:
    """The raw samples fitted for each window ``(n, S)``, the spectrum sample of each segment's
    first sample ``(n,)``, and the window-to-spectrum sample scale."""
    if plan.strategy == "resample":
        return x[None, :], np.zeros(1, np.int64), plan.length / plan.window
    padded = x
    if plan.pad_left:
        widths = (plan.pad_left, int(plan.cuts[-1]) - plan.length - plan.pad_left)
        padded = np.pad(x, widths, mode="reflect" if x.size > 1 else "edge")
    idx = plan.starts[:, None] + np.arange(plan.window)[None, :]
    return padded[idx], plan.starts - plan.pad_left, 1.0


def read_heads(
    x: np.ndarray,
    heads: np.ndarray,
    plan: WindowPlan,
    *,
    threshold: float,
    fit: PeakFitConfig | None,
) -> np.ndarray:
    """Peaks of spectrum ``x`` (L,) float64 from its windows' heads ``(n, 5, window)``.

    Returns a table of dtype :data:`HEADS_PEAK_DTYPE` in spectrum samples and units, sorted by
    centre.
    """
    segments, offsets, scale = _segments(x, plan)
    found = [decode_peaks(h, threshold=threshold) for h in heads]
    if plan.strategy == "resample":
        for p in found:
            p["index"] = (p["index"] + 0.5) * scale - 0.5
            p["width"] *= scale
    if fit is not None and segments.shape[1] >= _MIN_FIT_SAMPLES:
        # every peak of a window takes part in its fit (one left out would be fitted as
        # background); the window that owns a peak's centre reports it
        tables = fit_peaks(segments, found, fit)
    else:
        tables = [_from_heads(p, seg) for p, seg in zip(found, segments, strict=True)]
    if plan.strategy == "window":
        tables = [
            t[(at >= plan.cuts[k]) & (at < plan.cuts[k + 1])]
            for k, t in enumerate(tables)
            for at in (plan.starts[k] + t["index"],)
        ]
    parts = []
    for t, offset in zip(tables, offsets, strict=True):
        out = np.zeros(t.size, HEADS_PEAK_DTYPE)
        for name in FIT_PEAK_DTYPE.names or ():
            out[name] = t[name]
        out["index"] += offset
        out["start"] = np.floor(out["index"] - t["width"] + 1.0)
        out["end"] = np.ceil(out["index"] + t["width"])
        parts.append(out)
    table = np.concatenate(parts) if parts else np.zeros(0, HEADS_PEAK_DTYPE)
    table = table[(table["index"] >= 0.0) & (table["index"] <= x.size - 1.0)]
    table["start"] = np.clip(table["start"], 0, x.size)
    table["end"] = np.clip(table["end"], 0, x.size)
    return np.sort(table, order="index")


def _from_heads(p: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Heads-only measurements (no fit) in the segment's units."""
    t = np.zeros(p.size, FIT_PEAK_DTYPE)
    t["index"] = p["index"]
    span = float(np.ptp(segment))  # the heads measure in min-max normalised units
    t["height"] = p["height"] * span
    t["area"] = p["area"] * span
    t["width"] = (p["width"] + 1.0) / 2.0
    t["index_sd"] = np.nan
    t["height_sd"] = np.nan
    return mark_overlaps(t)


def heads_peak_dicts(table: np.ndarray) -> list[dict[str, Any]]:
    """Rows of a :data:`HEADS_PEAK_DTYPE` table as plain-Python dicts (msgpack-encodable)."""
    names = HEADS_PEAK_DTYPE.names or ()
    cols = [table[f].tolist() for f in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]
