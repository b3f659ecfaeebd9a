"""Tests of the ROI and peak metrics (engines.roi.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.roi.metrics import (
    bce_with_logits,
    match_peaks,
    peak_summary,
    roi_loss,
    roi_loss_one,
    score_peaks,
    snr_bands,
)

L = 200
PEAK = np.dtype(
    [
        ("start", np.int64),
        ("end", np.int64),
        ("width", np.int64),
        ("center", np.float64),
        ("height", np.float64),
        ("area", np.float64),
    ]
)


def _mask(*runs: tuple[int, int]) -> np.ndarray:
    m = np.zeros(L, bool)
    for s, e in runs:
        m[s:e] = True
    return m


def _peaks(*runs: tuple[int, int]) -> np.ndarray:
    p = np.zeros(len(runs), PEAK)
    for i, (s, e) in enumerate(runs):
        p[i] = (s, e, e - s, (s + e - 1) / 2, 1.0, 1.0)
    return p


def test_perfect_prediction_is_zero() -> None:
    t = _mask((10, 30), (50, 55))
    assert roi_loss_one(t, t, _peaks((10, 30), (50, 55))) == (0.0, 0.0)
    assert roi_loss_one(np.zeros(L, bool), np.zeros(L, bool)) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("width", "dev", "forgiven"),
    [
        (20, 2, True),
        (20, 3, False),
        (25, 2, True),
        (25, 3, False),
        (10, 1, True),
        (9, 1, False),
        (5, 0, True),
    ],
)
def test_forgiveness_at_the_ten_percent_boundary(width: int, dev: int, forgiven: bool) -> None:
    s, e = 50, 50 + width
    t = _mask((s, e))
    for pred in (
        _mask((s + dev, e)),
        _mask((s - dev, e)),
        _mask((s, e + dev)),
        _mask((s + dev, e - dev)),
    ):
        f, u = roi_loss_one(pred, t, _peaks((s, e)))
        assert u == pytest.approx(np.count_nonzero(pred ^ t) / L)
        assert f == (0.0 if forgiven else u)


def test_known_errors() -> None:
    t = _mask((10, 30), (100, 120))
    peaks = _peaks((10, 30), (100, 120))
    # run 1 within tolerance (2 of 20), run 2 missed entirely, one false run of 5
    pred = _mask((11, 31), (150, 155))
    f, u = roi_loss_one(pred, t, peaks)
    assert u == pytest.approx((1 + 1 + 20 + 5) / L)
    assert f == pytest.approx((20 + 5) / L)
    # a predicted run that spans two true runs matches neither
    pred2 = _mask((10, 120))
    f2, u2 = roi_loss_one(pred2, t, peaks)
    assert f2 == u2 == pytest.approx(70 / L)


def test_merged_run_uses_each_edge_peaks_width() -> None:
    # two peaks merged into one true run [40, 90): left edge from a 10-wide peak (tol 1),
    # right edge from a 40-wide peak (tol 4)
    peaks = _peaks((40, 50), (50, 90))
    t = _mask((40, 90))
    assert roi_loss_one(_mask((41, 86)), t, peaks)[0] == 0.0
    f, u = roi_loss_one(_mask((42, 86)), t, peaks)
    assert f == u == pytest.approx(6 / L)
    # without a peak list the run length (50, tol 5) is the width
    assert roi_loss_one(_mask((45, 85)), t)[0] == 0.0


def test_batch_is_mean_of_spectra() -> None:
    rng = np.random.default_rng(1)
    preds = [rng.random(L) < 0.3 for _ in range(5)]
    trues = [rng.random(L) < 0.3 for _ in range(5)]
    f, u = roi_loss(preds, trues)
    assert f.shape == u.shape == (5,)
    assert np.allclose(u, [np.mean(p ^ t) for p, t in zip(preds, trues, strict=True)])
    assert np.all(f <= u + 1e-12)
    with pytest.raises(ValueError):
        roi_loss(preds, trues[:4])
    with pytest.raises(ValueError):
        roi_loss_one(np.zeros(3, bool), np.zeros(4, bool))


def test_bce_with_logits() -> None:
    z = np.array([[0.0, 2.0, -3.0, 1000.0, -1000.0]])
    y = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]])
    expected = np.mean([np.log(2), np.log1p(np.exp(2)), np.log1p(np.exp(-3)), 0.0, 1000.0])
    out = bce_with_logits(z, y)
    assert out.shape == (1,) and out[0] == pytest.approx(expected)


def test_match_peaks_is_optimal_one_to_one() -> None:
    # greedy-by-distance takes (2.4, 2.0) first and then cannot match 0.5; optimal gets two
    ip, it = match_peaks(np.array([0.5, 2.4]), np.array([2.0, 4.1]))
    assert sorted(zip(ip.tolist(), it.tolist(), strict=True)) == [(0, 0), (1, 1)]
    # one-to-one: two detections near one true peak give one match
    ip, it = match_peaks(np.array([10.0, 10.5]), np.array([10.2]))
    assert ip.tolist() == [0] and it.tolist() == [0]
    # the tolerance is inclusive
    assert match_peaks(np.array([5.0]), np.array([7.0]))[0].size == 1
    assert match_peaks(np.array([5.0]), np.array([7.01]))[0].size == 0
    assert match_peaks(np.zeros(0), np.array([1.0]))[0].size == 0


def test_peak_summary_counts_and_errors() -> None:
    true = [_peaks((10, 21), (50, 61)), _peaks((100, 111))]
    det = np.zeros(3, dtype=[("index", float), ("height", float), ("area", float)])
    det[:] = [(15.5, 1.1, 1.0), (80.0, 1.0, 1.0), (105.0, 0.5, 2.0)]
    scores = score_peaks([det[:2], det[2:]], true)
    s = peak_summary(scores)
    assert (s["n_true"], s["n_detected"], s["n_matched"]) == (3, 3, 2)
    assert s["peak_precision"] == pytest.approx(2 / 3)
    assert s["peak_recall"] == pytest.approx(2 / 3)
    assert s["peak_f1"] == pytest.approx(2 / 3)
    assert s["position_mae_samples"] == pytest.approx(0.5 / 2)
    assert s["height_rel_err_median"] == pytest.approx((0.1 + 0.5) / 2)
    only_second = peak_summary(scores, np.array([False, True]))
    assert only_second["peak_f1"] == 1.0 and only_second["n_spectra"] == 1
    empty = peak_summary(score_peaks([det[:0]], [true[0][:0]]))
    assert empty["peak_f1"] is None and empty["position_mae_samples"] is None


def test_snr_bands_are_thirds() -> None:
    b = snr_bands(np.array([30.0, 36.6, 36.67, 43.4, 50.0, np.nan, 51.0]), (30.0, 50.0))
    assert b.tolist() == [0, 0, 1, 2, 2, -1, -1]
