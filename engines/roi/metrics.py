"""Figures of merit for ROI detection and peak read-out.

Custom ROI loss (the paper's comparison figure, PAPERS.md §1; its printed equation is not
legible, so the normalisation is defined here):

    For one spectrum of length L with true ROI mask T and predicted mask P, each a union of
    maximal runs ``[start, end)`` of True samples: a predicted run ``[ps, pe)`` *matches* a true
    run ``[s, e)`` when both of its edges lie within 10 % of the true peak's width of the true
    edges::

        10 * |ps - s| <= w_left   and   10 * |pe - e| <= w_right

    where ``w_left`` is the support width (samples) of the true peak whose support starts at
    ``s`` and ``w_right`` that of the peak whose support ends at ``e`` (one and the same peak
    unless overlapping peaks merged into one run; the widest if several share the edge; the
    run's length when no peak list is given). The boundary itself (exactly 10 %) is forgiven.
    A matched run counts as exact: P is corrected to hold ``[s, e)`` instead of
    ``[ps, pe)``. The loss of the spectrum is ``|P' xor T| / L``, the fraction of its samples
    in the symmetric difference (union minus intersection) of corrected prediction and truth.

    roi_loss = mean over spectra of that fraction (0 = perfect, 1 = every sample wrong).
    roi_loss_unforgiven = the same with no correction, ``mean(|P xor T| / L)``.

BCE is the per-sample binary cross-entropy of the logits (the training loss, sigmoid fused),
averaged per spectrum, then over spectra.

Peaks are matched one-to-one: a detected peak matches a true one when their positions differ
by at most ``tolerance`` samples (default 2); the assignment maximises the number of matches
and, among those, minimises the summed distance (``scipy.optimize.linear_sum_assignment``).
Precision = matched / detected, recall = matched / true, F1 their harmonic mean, all pooled
over the spectra (micro-averaged).

SNR bands are thirds of the SNR range in dB: low ``[lo, lo + d)``, mid ``[lo + d, lo + 2d)``,
high ``[lo + 2d, hi]`` with ``d = (hi - lo) / 3``.

Pure numpy/scipy; no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from engines.roi.peaks import mask_to_intervals

__all__ = [
    "BAND_NAMES",
    "PeakScores",
    "bce_with_logits",
    "match_peaks",
    "peak_summary",
    "roi_loss",
    "roi_loss_one",
    "score_peaks",
    "snr_band_edges",
    "snr_bands",
]

BAND_NAMES = ("low", "mid", "high")
_FORGIVE_DENOMINATOR = 10  # 10 * deviation <= width  <=>  deviation <= 10 % of the width


def roi_loss_one(
    pred: np.ndarray, true: np.ndarray, true_peaks: np.ndarray | None = None
) -> tuple[float, float]:
    """``(forgiven, unforgiven)`` ROI loss of one spectrum (see module docstring).

    ``pred``, ``true``: (L,) bool masks. ``true_peaks``: structured array with integer fields
    ``start``, ``end``, ``width`` (the simulator's peak list), or None.
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(true, dtype=bool)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(
            f"pred and true must be equal non-empty 1-D masks, got {p.shape}, {t.shape}"
        )
    length = p.size
    unforgiven = np.count_nonzero(p ^ t) / length
    truns = mask_to_intervals(t)
    pruns = mask_to_intervals(p)
    if truns.shape[0] == 0 or pruns.shape[0] == 0:
        return unforgiven, unforgiven
    s, e = truns[:, 0], truns[:, 1]
    w_left, w_right = _edge_widths(s, e, true_peaks)
    # a matching predicted run contains the true run's middle sample (its edges move by at most
    # 10 % of a width that is no longer than the run), so that is the only candidate
    mid = (s + e - 1) // 2
    k = np.searchsorted(pruns[:, 0], mid, side="right") - 1
    ok = k >= 0
    kk = np.maximum(k, 0)
    ps, pe = pruns[kk, 0], pruns[kk, 1]
    ok &= pe > mid
    ok &= _FORGIVE_DENOMINATOR * np.abs(ps - s) <= w_left
    ok &= _FORGIVE_DENOMINATOR * np.abs(pe - e) <= w_right
    if not ok.any():
        return unforgiven, unforgiven
    delta_clear = np.zeros(length + 1, dtype=np.int64)
    np.add.at(delta_clear, np.minimum(s, ps)[ok], 1)
    np.add.at(delta_clear, np.maximum(e, pe)[ok], -1)
    delta_set = np.zeros(length + 1, dtype=np.int64)
    np.add.at(delta_set, s[ok], 1)
    np.add.at(delta_set, e[ok], -1)
    corrected = (p & ~(np.cumsum(delta_clear[:-1]) > 0)) | (np.cumsum(delta_set[:-1]) > 0)
    return np.count_nonzero(corrected ^ t) / length, unforgiven


def _edge_widths(
    s: np.ndarray, e: np.ndarray, peaks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Width of the peak owning each run's left and right edge (the run length if unknown)."""
    w_left = (e - s).astype(np.int64)
    w_right = w_left.copy()
    if peaks is None or len(peaks) == 0:
        return w_left, w_right
    ps = np.asarray(peaks["start"], dtype=np.int64)
    pe = np.asarray(peaks["end"], dtype=np.int64)
    pw = np.asarray(peaks["width"], dtype=np.int64)
    for edges, own, out in ((s, ps, w_left), (e, pe, w_right)):
        order = np.lexsort((pw, own))  # by edge, widest last
        own_sorted = own[order]
        pos = np.searchsorted(own_sorted, edges, side="right") - 1
        hit = (pos >= 0) & (own_sorted[np.maximum(pos, 0)] == edges)
        out[hit] = pw[order][pos[hit]]
    return w_left, w_right


def roi_loss(
    pred: Sequence[np.ndarray] | np.ndarray,
    true: Sequence[np.ndarray] | np.ndarray,
    true_peaks: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-spectrum ``(forgiven, unforgiven)`` ROI losses, each (n,) float64.

    ``pred``/``true``: (n, L) bool arrays or sequences of (L_i,) masks. Average the arrays
    (over all spectra or a band) to get the reported figures.
    """
    n = len(pred)
    if len(true) != n:
        raise ValueError(f"{n} predictions for {len(true)} truths")
    forgiven = np.empty(n)
    unforgiven = np.empty(n)
    for i in range(n):
        peaks = None if true_peaks is None else true_peaks[i]
        forgiven[i], unforgiven[i] = roi_loss_one(pred[i], true[i], peaks)
    return forgiven, unforgiven


def bce_with_logits(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-spectrum mean binary cross-entropy of logits (n, L) against 0/1 targets (n, L).

    Numerically stable form ``max(x, 0) - x y + log(1 + exp(-|x|))``; returns (n,) float64.
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    per = np.maximum(x, 0.0) - x * y + np.log1p(np.exp(-np.abs(x)))
    return per.reshape(per.shape[0], -1).mean(axis=1)


def match_peaks(
    pred_pos: np.ndarray, true_pos: np.ndarray, tolerance: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detected to true positions within ``tolerance`` samples.

    Returns index arrays ``(i_pred, i_true)`` of equal length: maximum number of matches,
    then minimum summed distance.
    """
    a = np.asarray(pred_pos, dtype=np.float64).reshape(-1)
    b = np.asarray(true_pos, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dist = np.abs(a[:, None] - b[None, :])
    near = dist <= tolerance
    if not near.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # only rows/columns with a candidate take part; a forbidden pair costs more than any
    # full set of allowed ones, so the solver first maximises the number of matches
    rows = np.flatnonzero(near.any(axis=1))
    cols = np.flatnonzero(near.any(axis=0))
    sub = dist[np.ix_(rows, cols)]
    big = (tolerance + 1.0) * (min(rows.size, cols.size) + 1)
    cost = np.where(sub <= tolerance, sub, big)
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] <= tolerance
    return rows[r[keep]].astype(np.int64), cols[c[keep]].astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class PeakScores:
    """Per-spectrum counts and per-match errors of a detector on a set of spectra.

    ``tp``, ``n_pred``, ``n_true``: (n,) int64. Per matched pair (flat over spectra):
    ``match_spectrum`` (m,) int64, ``pos_err`` |detected - true| samples, ``height_err`` and
    ``area_err`` signed detected - true (spectrum units), ``height_true``, ``area_true``.
    """

    tp: np.ndarray
    n_pred: np.ndarray
    n_true: np.ndarray
    match_spectrum: np.ndarray
    pos_err: np.ndarray
    height_err: np.ndarray
    area_err: np.ndarray
    height_true: np.ndarray
    area_true: np.ndarray


def score_peaks(
    pred_tables: Sequence[np.ndarray],
    true_peaks: Sequence[np.ndarray],
    *,
    tolerance: float = 2.0,
    true_select: Sequence[np.ndarray] | None = None,
) -> PeakScores:
    """Match each spectrum's detected peaks (fields index, height, area) to its true peaks
    (fields center, height, area) and collect counts and errors.

    ``true_select``: optional per-spectrum bool masks restricting which true peaks count
    (the others are removed before matching).
    """
    n = len(pred_tables)
    tp = np.zeros(n, np.int64)
    n_pred = np.zeros(n, np.int64)
    n_true = np.zeros(n, np.int64)
    spec_ids, pos, dh, da, ht, at = [], [], [], [], [], []
    for i in range(n):
        d = pred_tables[i]
        t = true_peaks[i]
        if true_select is not None:
            t = t[true_select[i]]
        n_pred[i] = len(d)
        n_true[i] = len(t)
        ip, it = match_peaks(d["index"], t["center"], tolerance)
        tp[i] = ip.size
        if ip.size:
            spec_ids.append(np.full(ip.size, i, np.int64))
            pos.append(np.abs(d["index"][ip] - t["center"][it]))
            dh.append(d["height"][ip] - t["height"][it])
            da.append(d["area"][ip] - t["area"][it])
            ht.append(t["height"][it])
            at.append(t["area"][it])

    def cat(parts: list[np.ndarray], dtype: Any = np.float64) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return PeakScores(
        tp=tp,
        n_pred=n_pred,
        n_true=n_true,
        match_spectrum=cat(spec_ids, np.int64),
        pos_err=cat(pos),
        height_err=cat(dh),
        area_err=cat(da),
        height_true=cat(ht),
        area_true=cat(at),
    )


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def peak_summary(scores: PeakScores, select: np.ndarray | None = None) -> dict[str, Any]:
    """Pooled precision/recall/F1 and error statistics over the selected spectra.

    ``select``: (n,) bool over spectra, None = all. Relative errors are ``|err| / true``.
    Figures that have no data (no detections, no matches) are None.
    """
    n = scores.tp.size
    sel = np.ones(n, bool) if select is None else np.asarray(select, bool)
    tp = int(scores.tp[sel].sum())
    n_pred = int(scores.n_pred[sel].sum())
    n_true = int(scores.n_true[sel].sum())
    precision = _ratio(tp, n_pred)
    recall = _ratio(tp, n_true)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if n_pred or n_true else None)
    )
    m = sel[scores.match_spectrum] if scores.match_spectrum.size else np.zeros(0, bool)

    def stat(values: np.ndarray, fn: Any) -> float | None:
        return float(fn(values)) if values.size else None

    h_rel = np.abs(scores.height_err[m]) / np.maximum(scores.height_true[m], 1e-300)
    a_rel = np.abs(scores.area_err[m]) / np.maximum(scores.area_true[m], 1e-300)
    return {
        "n_spectra": int(sel.sum()),
        "n_true": n_true,
        "n_detected": n_pred,
        "n_matched": tp,
        "peak_precision": precision,
        "peak_recall": recall,
        "peak_f1": f1,
        "position_mae_samples": stat(scores.pos_err[m], np.mean),
        "position_rmse_samples": stat(scores.pos_err[m], lambda v: np.sqrt(np.mean(v**2))),
        "height_mae": stat(scores.height_err[m], lambda v: np.mean(np.abs(v))),
        "height_rel_err_median": stat(h_rel, np.median),
        "height_rel_err_mean": stat(h_rel, np.mean),
        "area_rel_err_median": stat(a_rel, np.median),
        "area_rel_err_mean": stat(a_rel, np.mean),
    }


def snr_band_edges(snr_range_db: tuple[float, float]) -> np.ndarray:
    """The four edges (dB) of the low/mid/high thirds of ``snr_range_db``."""
    lo, hi = float(snr_range_db[0]), float(snr_range_db[1])
    return np.linspace(lo, hi, 4)


def snr_bands(snr_db: np.ndarray, snr_range_db: tuple[float, float]) -> np.ndarray:
    """Band of each SNR: 0 low, 1 mid, 2 high third of the range; -1 for NaN or outside."""
    x = np.asarray(snr_db, dtype=np.float64)
    edges = snr_band_edges(snr_range_db)
    band = np.searchsorted(edges[1:3], x, side="right")
    out = np.where((x >= edges[0]) & (x <= edges[3]), band, -1)
    return out.astype(np.int64)
