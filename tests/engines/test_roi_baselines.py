"""Tests of the classical ROI/peak baselines (engines.roi.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from devices.spectra_sim import simulate
from engines.roi.baselines import (
    ArplsFindPeaks,
    CwtFindPeaks,
    tune_arpls_find_peaks,
    tune_find_peaks_cwt,
)
from engines.roi.metrics import match_peaks

CENTRES = np.array([60.0, 150.0, 260.0, 400.0])


def _spectrum() -> np.ndarray:
    x = np.arange(512, dtype=np.float64)
    y = 0.5 + 0.3 * np.sin(x / 150.0)  # smooth curved background
    for c, h in zip(CENTRES, (1.0, 0.6, 0.8, 0.4), strict=True):
        y += h * np.exp(-0.5 * ((x - c) / 3.0) ** 2)
    y += np.random.default_rng(0).normal(0, 0.005, x.size)
    return ((y - y.min()) / np.ptp(y)).astype(np.float32)


@pytest.mark.parametrize("det", [ArplsFindPeaks(), CwtFindPeaks()], ids=["arpls", "cwt"])
def test_baselines_find_separated_peaks(det: ArplsFindPeaks | CwtFindPeaks) -> None:
    y = _spectrum()
    intervals, table = det(y)
    ip, it = match_peaks(table["index"], CENTRES)
    assert ip.size == CENTRES.size and table.size == CENTRES.size
    # every true apex lies inside a reported ROI, and ROIs are disjoint and sorted
    assert all(any(s <= c < e for s, e in intervals) for c in CENTRES)
    assert np.all(intervals[1:, 0] > intervals[:-1, 1])
    out = det.detect(y)
    assert set(out) == {"roi", "peaks"} and len(out["peaks"]) == CENTRES.size
    assert all(type(p["index"]) is float for p in out["peaks"])


def test_baselines_on_flat_noise_find_little() -> None:
    y = np.random.default_rng(1).normal(0, 1, 512)
    for det in (ArplsFindPeaks(), CwtFindPeaks()):
        _, table = det(y)
        assert table.size <= 3


def test_tuning_on_a_tiny_validation_set() -> None:
    b = simulate(6, rng=np.random.default_rng(5))
    arpls, log = tune_arpls_find_peaks(b.spectra, b.roi, b.peaks)
    assert isinstance(arpls, ArplsFindPeaks) and log["n_validation"] == 6
    best = max(t["peak_f1"] for t in log["trials"] if t["rel_height"] == 0.85)
    assert best > 0.5
    cwt, log = tune_find_peaks_cwt(b.spectra, b.roi, b.peaks)
    assert isinstance(cwt, CwtFindPeaks)
    assert {t["min_prominence_sigma"] for t in log["trials"]} >= {0.0, 6.0}
