"""Figures of merit for the ECG path: verification error rates, closed-set classification,
R-peak detection.

Verification (scores: higher = more alike, e.g. cosine similarity; a probe is *accepted*
when ``score >= threshold``)::

    FAR(t) = #{impostor >= t} / #impostor        (false accepts)
    FRR(t) = #{genuine  <  t} / #genuine         (false rejects)

Both are step functions of ``t``; they are evaluated on the grid of the distinct observed
scores plus one threshold above them all (``FAR = 0, FRR = 1``); the lowest grid point accepts
everything (``FAR = 1, FRR = 0``). The equal error rate is where the ROC polyline through the
grid's ``(FAR, FRR)`` points crosses ``FAR = FRR``: between the last grid point with
``FAR > FRR`` and the first with ``FAR <= FRR`` the points are joined by a straight line, and
the threshold reported is interpolated between the two grid thresholds with the same weight.
A perfectly separated set gives ``EER = 0`` at the lowest genuine score.

``frr_at_far`` is not interpolated: it is the operating point a system calibrated to "FAR at
most ``far``" would actually use, the lowest threshold whose FAR does not exceed ``far``
(ties among impostor scores can make the realised FAR lower than ``far``).

Closed-set classification: accuracy = correct / all; per class precision = TP / predicted,
recall = TP / support (the per-subject accuracy), F1 = 2PR / (P + R). Macro averages are
unweighted means over the classes that occur in ``y_true`` or ``y_pred`` (an undefined
precision, for a class never predicted, counts as 0 there, as scikit-learn does); macro F1
is the mean of the per-class F1 (not the F1 of the macro precision and recall).

R-peak detection: detected and true R indices (samples) are matched one-to-one; a pair
matches when ``|detected - true| <= tolerance_samples`` (inclusive). The matching maximises
the number of pairs and, among maximal matchings, minimises the summed distance (solved per
cluster of mutually reachable peaks, so cost is linear in the record length). TP = pairs,
FP = unmatched detections, FN = unmatched true peaks; sensitivity = TP / (TP + FN), positive
predictive value = TP / (TP + FP) (the Physionet/AAMI names for recall and precision).

Pure numpy/scipy; no state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "classification_report",
    "eer",
    "far_frr_at",
    "frr_at_far",
    "match_peak_pairs",
    "match_peaks",
    "sensitivity_ppv",
    "split_scores",
]


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name}: no scores")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: scores must be finite")
    return a


def far_frr_at(genuine: Any, impostor: Any, threshold: float) -> tuple[float, float]:
    """``(FAR, FRR)`` of accepting ``score >= threshold`` (fractions in [0, 1]).

    ``genuine``/``impostor``: 1-D float scores (any length >= 1, finite).
    """
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    t = float(threshold)
    return float(np.count_nonzero(i >= t) / i.size), float(np.count_nonzero(g < t) / g.size)


def _error_curves(g: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid thresholds (ascending) with FAR (descending) and FRR (ascending) at each."""
    grid = np.unique(np.concatenate([g, i]))
    grid = np.append(grid, np.nextafter(grid[-1], math.inf))
    gs = np.sort(g)
    imps = np.sort(i)
    frr = np.searchsorted(gs, grid, side="left") / g.size  # genuine strictly below t
    far = (i.size - np.searchsorted(imps, grid, side="left")) / i.size  # impostor >= t
    return grid, far, frr


def eer(genuine: Any, impostor: Any) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``, eer a fraction in [0, 1].

    Interpolated crossing of the ROC with ``FAR = FRR`` (module docstring). Raises
    ``ValueError`` when either set is empty or holds a non-finite score.
    """
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    grid, far, frr = _error_curves(g, i)
    d = far - frr  # > 0 at the lowest grid point, < 0 at the top one: there is a crossing
    k = int(np.argmax(d <= 0))
    if d[k] == 0 or k == 0:
        return float(far[k]), float(grid[k])
    d0, d1 = d[k - 1], d[k]
    a = d0 / (d0 - d1)
    rate = far[k - 1] + a * (far[k] - far[k - 1])
    threshold = grid[k - 1] + a * (grid[k] - grid[k - 1])
    return float(rate), float(threshold)


def frr_at_far(genuine: Any, impostor: Any, far: float) -> tuple[float, float]:
    """``(FRR, threshold)`` at the lowest threshold whose FAR is at most ``far`` (a fraction).

    With impostor scores sorted in descending order ``s_1 >= s_2 >= ...`` and
    ``k = floor(far * n_impostor)`` false accepts allowed, the threshold is the float just
    above ``s_{k+1}`` (``-inf``-like: the lowest score, when ``k >= n_impostor``).
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    # the epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 at 29 allowed false accepts
    k = int(math.floor(far * i.size + 1e-9))
    if k >= i.size:
        threshold = float(min(g.min(), i.min()))
    else:
        s = np.sort(i)[::-1]
        threshold = float(np.nextafter(s[k], math.inf))
    return float(np.count_nonzero(g < threshold) / g.size), threshold


def split_scores(
    scores: Any, probe_labels: Any, template_labels: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores of a probe x template score matrix.

    ``scores``: (n_probes, n_templates) float; ``probe_labels`` (n_probes,) and
    ``template_labels`` (n_templates,) identities. Returns ``(genuine, impostor)``, 1-D
    float64: entries whose probe and template identities are equal, and all the others
    (row-major order).
    """
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(probe_labels).reshape(-1)
    t = np.asarray(template_labels).reshape(-1)
    if s.shape != (p.size, t.size):
        raise ValueError(f"scores {s.shape} do not fit {p.size} probes x {t.size} templates")
    same = p[:, None] == t[None, :]
    return s[same], s[~same]


def classification_report(y_true: Any, y_pred: Any, n_classes: int) -> dict[str, Any]:
    """Closed-set figures of integer labels in ``[0, n_classes)`` (module docstring).

    Returns a JSON-able dict: ``n``, ``accuracy``, ``macro_precision``, ``macro_recall``,
    ``macro_f1`` (fractions; None when there are no samples), ``per_class`` (a list of
    ``{"class", "support", "predicted", "precision", "recall", "f1"}``, None where undefined)
    and ``confusion`` (``n_classes`` lists of ints; row = true class, column = predicted).
    """
    yt = np.asarray(y_true).reshape(-1)
    yp = np.asarray(y_pred).reshape(-1)
    if yt.size != yp.size:
        raise ValueError(f"{yt.size} true labels for {yp.size} predictions")
    if n_classes < 1:
        raise ValueError("n_classes must be >= 1")
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if y.size and (
            not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes
        ):
            raise ValueError(f"{name} must hold integers in [0, {n_classes})")
    yt = yt.astype(np.int64)
    yp = yp.astype(np.int64)
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (yt, yp), 1)
    tp = np.diag(conf)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    per_class = []
    present = []
    ps, rs, fs = [], [], []
    for c in range(n_classes):
        p = float(tp[c] / predicted[c]) if predicted[c] else None
        r = float(tp[c] / support[c]) if support[c] else None
        p0, r0 = p or 0.0, r or 0.0
        f = 2 * p0 * r0 / (p0 + r0) if p0 + r0 > 0 else 0.0
        occurs = bool(support[c] or predicted[c])
        per_class.append(
            {
                "class": c,
                "support": int(support[c]),
                "predicted": int(predicted[c]),
                "precision": p,
                "recall": r,
                "f1": float(f) if occurs else None,
            }
        )
        if occurs:
            present.append(c)
            ps.append(p0)
            rs.append(r0)
            fs.append(f)
    n = int(yt.size)
    return {
        "n": n,
        "n_classes": int(n_classes),
        "accuracy": float(tp.sum() / n) if n else None,
        "macro_precision": float(np.mean(ps)) if present else None,
        "macro_recall": float(np.mean(rs)) if present else None,
        "macro_f1": float(np.mean(fs)) if present else None,
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def _positions(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: positions must be finite")
    return a


def match_peak_pairs(
    true_idx: Any, detected_idx: Any, tolerance_samples: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detected to true peak positions (module docstring).

    ``true_idx``, ``detected_idx``: 1-D sample positions (any order, int or float).
    Returns ``(i_true, i_detected)``: equal-length int64 index arrays into the inputs, sorted
    by true position.
    """
    if tolerance_samples < 0:
        raise ValueError("tolerance_samples must be >= 0")
    t = _positions(true_idx, "true_idx")
    d = _positions(detected_idx, "detected_idx")
    empty = np.zeros(0, np.int64)
    if t.size == 0 or d.size == 0:
        return empty, empty
    pos = np.concatenate([t, d])
    is_det = np.concatenate([np.zeros(t.size, bool), np.ones(d.size, bool)])
    src = np.concatenate([np.arange(t.size), np.arange(d.size)])
    order = np.argsort(pos, kind="stable")
    pos, is_det, src = pos[order], is_det[order], src[order]
    # two peaks within the tolerance are joined by a chain of gaps <= tolerance, so cutting
    # at larger gaps never separates a possible pair
    starts = np.flatnonzero(np.concatenate([[True], np.diff(pos) > tolerance_samples]))
    stops = np.append(starts[1:], pos.size)
    n_det = np.add.reduceat(is_det.astype(np.int64), starts)
    size = stops - starts
    mixed = (n_det > 0) & (n_det < size)
    out_t: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    # the common case, one true and one detected peak: they match
    pair = mixed & (size == 2)
    a = starts[pair]
    first_det = is_det[a]
    out_t.append(np.where(first_det, src[a + 1], src[a]))
    out_d.append(np.where(first_det, src[a], src[a + 1]))
    for s, e in zip(starts[mixed & (size > 2)], stops[mixed & (size > 2)], strict=True):
        cp, cd, cs = pos[s:e], is_det[s:e], src[s:e]
        tp_, dp_ = cp[~cd], cp[cd]
        dist = np.abs(tp_[:, None] - dp_[None, :])
        ok = dist <= tolerance_samples
        # a forbidden pair costs more than any full set of allowed ones, so the solver first
        # maximises the number of pairs, then minimises their summed distance
        big = (tolerance_samples + 1.0) * (min(tp_.size, dp_.size) + 1)
        r, c = linear_sum_assignment(np.where(ok, dist, big))
        keep = ok[r, c]
        out_t.append(cs[~cd][r[keep]])
        out_d.append(cs[cd][c[keep]])
    it = np.concatenate(out_t).astype(np.int64)
    id_ = np.concatenate(out_d).astype(np.int64)
    o = np.argsort(t[it], kind="stable")
    return it[o], id_[o]


def match_peaks(true_idx: Any, detected_idx: Any, tolerance_samples: float) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of the one-to-one matching of :func:`match_peak_pairs`."""
    it, _ = match_peak_pairs(true_idx, detected_idx, tolerance_samples)
    n_true = np.asarray(true_idx).size
    n_det = np.asarray(detected_idx).size
    tp = int(it.size)
    return tp, n_det - tp, n_true - tp


def sensitivity_ppv(tp: int, fp: int, fn: int) -> tuple[float | None, float | None]:
    """``(sensitivity, ppv)`` = ``(TP / (TP + FN), TP / (TP + FP))``; None when undefined."""
    if min(tp, fp, fn) < 0:
        raise ValueError("counts must be >= 0")
    sens = tp / (tp + fn) if tp + fn else None
    ppv = tp / (tp + fp) if tp + fp else None
    return sens, ppv
