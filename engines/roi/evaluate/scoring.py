"""Running detectors (the neural models, the baselines, the read-out fed true ROIs) on a
spectra set, and scoring what they found against the truth."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engines.report import json_number
from engines.roi.detector import RoiDetector
from engines.roi.evaluate.protocol import TOLERANCE_SAMPLES, EvalData
from engines.roi.metrics import (
    BAND_NAMES,
    bce_with_logits,
    match_peaks,
    peak_summary,
    roi_loss,
    score_peaks,
)
from engines.roi.peak_decode import N_HEADS
from engines.roi.peaks import intervals_to_mask, mask_to_intervals
from engines.roi.windowing import WindowPlan

__all__ = [
    "DetectorRun",
    "Scored",
    "by_band",
    "false_peaks",
    "mean_or_none",
    "rerun_heads",
    "rerun_post",
    "resolvable_fraction",
    "run_baseline",
    "run_model",
    "run_oracle",
    "score",
    "summary",
]


@dataclass
class DetectorRun:
    """Outputs of one detector on one set. ``outputs``: per spectrum, the model's raw window
    outputs, kept for the peak-head models so their read-out can be re-run without a second
    inference."""

    intervals: list[np.ndarray]
    tables: list[np.ndarray]
    logits: list[np.ndarray] | None
    seconds: float
    outputs: list[np.ndarray] | None = None


def _infer(module: torch.nn.Module, windows: np.ndarray, batch: int) -> np.ndarray:
    parts = []
    with torch.inference_mode():
        for i in range(0, windows.shape[0], batch):
            parts.append(module(torch.from_numpy(windows[i : i + batch])).numpy())
    if not parts:
        return np.zeros((0, 1, windows.shape[-1]), np.float32)
    return np.concatenate(parts)


def _read(
    detector: RoiDetector,
    data: EvalData,
    outputs: list[np.ndarray],
    plans: list[WindowPlan] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``(logits, intervals, tables)`` of every spectrum from its window outputs: ROI logits,
    or peak heads (whose channel 0 is the ROI logit)."""
    if plans is None:
        plans = [detector.windows(x)[1] for x in data.spectra]
    logits, intervals, tables = [], [], []
    for x, z, plan in zip(data.spectra, outputs, plans, strict=True):
        sample_logits = detector.logits(z[:, :1], plan)
        iv = detector.intervals(sample_logits)
        logits.append(sample_logits)
        intervals.append(iv)
        heads = z.shape[1] == N_HEADS
        tables.append(detector.head_peaks(x, z, plan) if heads else detector.peaks(x, iv))
    return logits, intervals, tables


def run_model(
    module: torch.nn.Module, detector: RoiDetector, data: EvalData, batch: int
) -> DetectorRun:
    t0 = time.perf_counter()
    prepared = [detector.prepare(x) for x in data.spectra]
    counts = [w.shape[0] for w, _ in prepared]
    windows = np.concatenate([w for w, _ in prepared]) if prepared else np.zeros((0, 1, 512))
    out = np.split(_infer(module, windows.astype(np.float32), batch), np.cumsum(counts)[:-1])
    logits, intervals, tables = _read(detector, data, out, [plan for _, plan in prepared])
    keep = out if out and out[0].shape[1] == N_HEADS else None
    return DetectorRun(intervals, tables, logits, time.perf_counter() - t0, keep)


def rerun_heads(detector: RoiDetector, data: EvalData, run: DetectorRun) -> DetectorRun:
    """Same peak-head outputs, another read-out (no second inference)."""
    assert run.outputs is not None
    t0 = time.perf_counter()
    logits, intervals, tables = _read(detector, data, run.outputs)
    return DetectorRun(intervals, tables, logits, time.perf_counter() - t0, run.outputs)


def rerun_post(detector: RoiDetector, data: EvalData, run: DetectorRun) -> DetectorRun:
    """Same logits, other post-processing (ablations need no second inference)."""
    assert run.logits is not None
    t0 = time.perf_counter()
    intervals = [detector.intervals(z) for z in run.logits]
    tables = [detector.peaks(x, iv) for x, iv in zip(data.spectra, intervals, strict=True)]
    return DetectorRun(intervals, tables, run.logits, time.perf_counter() - t0)


def run_baseline(
    det: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], data: EvalData
) -> DetectorRun:
    t0 = time.perf_counter()
    intervals, tables = [], []
    for x in data.spectra:
        iv, table = det(x)
        intervals.append(iv)
        tables.append(table)
    return DetectorRun(intervals, tables, None, time.perf_counter() - t0)


def run_oracle(detector: RoiDetector, data: EvalData) -> DetectorRun:
    """The detector's read-out fed the true ROIs."""
    t0 = time.perf_counter()
    intervals = [mask_to_intervals(m) for m in data.roi]
    tables = [detector.peaks(x, iv) for x, iv in zip(data.spectra, intervals, strict=True)]
    return DetectorRun(intervals, tables, None, time.perf_counter() - t0)


def mean_or_none(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if v.size else None


@dataclass
class Scored:
    forgiven: np.ndarray
    unforgiven: np.ndarray
    bce: np.ndarray | None
    peaks: Any  # metrics.PeakScores


def score(data: EvalData, run: DetectorRun) -> Scored:
    masks = [
        intervals_to_mask(iv, x.size) for iv, x in zip(run.intervals, data.spectra, strict=True)
    ]
    forgiven, unforgiven = roi_loss(masks, data.roi, data.peaks)
    bce = None
    if run.logits is not None:
        bce = np.array(
            [
                bce_with_logits(z[None, :], t[None, :])[0]
                for z, t in zip(run.logits, data.roi, strict=True)
            ]
        )
    return Scored(
        forgiven, unforgiven, bce, score_peaks(run.tables, data.peaks, tolerance=TOLERANCE_SAMPLES)
    )


def summary(s: Scored, select: np.ndarray | None = None) -> dict[str, Any]:
    n = s.forgiven.size
    sel = np.ones(n, bool) if select is None else select
    out: dict[str, Any] = {
        "roi_loss": mean_or_none(s.forgiven[sel]),
        "roi_loss_unforgiven": mean_or_none(s.unforgiven[sel]),
    }
    if s.bce is not None:
        out["bce"] = mean_or_none(s.bce[sel])
    out.update(peak_summary(s.peaks, sel))
    return {k: json_number(v) for k, v in out.items()}


def by_band(s: Scored, bands: np.ndarray) -> dict[str, Any]:
    return {name: summary(s, bands == b) for b, name in enumerate(BAND_NAMES)}


def false_peaks(tables: Sequence[np.ndarray], band: np.ndarray) -> dict[str, Any]:
    counts = np.array([len(t) for t in tables], dtype=np.float64)

    def one(sel: np.ndarray) -> dict[str, Any]:
        c = counts[sel]
        return {
            "n_spectra": int(sel.sum()),
            "false_peaks_per_spectrum": json_number(mean_or_none(c)),
            "fraction_with_false_peaks": json_number(mean_or_none((c > 0).astype(float))),
        }

    return {
        "overall": one(np.ones(counts.size, bool)),
        "by_snr": {name: one(band == b) for b, name in enumerate(BAND_NAMES)},
    }


def resolvable_fraction(data: EvalData) -> tuple[np.ndarray, np.ndarray]:
    """Per spectrum: true peaks that are separate local maxima of the noiseless peak sum
    (matched one-to-one within the tolerance), and the number of true peaks.

    Rebuilds the Hann profiles of the paper protocol (``sin^2(pi (j+1) / (w+1))``, see
    :mod:`devices.spectra_sim`); only meaningful for the Hann test set.
    """
    hits = np.zeros(len(data), np.int64)
    total = np.zeros(len(data), np.int64)
    for i, (x, pk) in enumerate(zip(data.spectra, data.peaks, strict=True)):
        clean = np.zeros(x.size + 2)
        for p in pk:
            j = np.arange(p["width"])
            clean[p["start"] + 1 : p["end"] + 1] += (
                p["height"] * np.sin(np.pi * (j + 1) / (p["width"] + 1)) ** 2
            )
        d = np.diff(clean)
        # maxima, plateaus included (rise then non-rise ... fall)
        maxima = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0)).astype(float)
        ip, _ = match_peaks(maxima, pk["center"], TOLERANCE_SAMPLES)
        hits[i] = ip.size
        total[i] = len(pk)
    return hits, total
