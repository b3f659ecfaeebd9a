"""Tests of the ECG figures of merit (engines.ecg.metrics), on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.ecg.metrics import (
    classification_report,
    eer,
    far_frr_at,
    frr_at_far,
    match_peak_pairs,
    match_peaks,
    sensitivity_ppv,
    split_scores,
)

# --- verification --------------------------------------------------------------------------


def test_far_frr_at_counts_ties_as_accepted() -> None:
    g = [0.3, 0.6, 0.8, 0.9]
    i = [0.1, 0.2, 0.4, 0.7]
    assert far_frr_at(g, i, 0.6) == (0.25, 0.25)
    assert far_frr_at(g, i, 0.7) == (0.25, 0.5)  # impostor 0.7 accepted, genuine 0.6 rejected
    assert far_frr_at(g, i, -1.0) == (1.0, 0.0)
    assert far_frr_at(g, i, 2.0) == (0.0, 1.0)


def test_eer_separated_sets_is_zero_at_lowest_genuine() -> None:
    assert eer([0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]) == (0.0, 0.6)


def test_eer_exact_crossing_on_the_grid() -> None:
    # FAR at 0.1 0.2 0.3 0.4 0.6 ...: 1 .75 .5 .5 .25; FRR: 0 0 0 .25 .25 -> equal at 0.6
    rate, t = eer([0.3, 0.6, 0.8, 0.9], [0.1, 0.2, 0.4, 0.7])
    assert rate == 0.25
    assert t == 0.6


def test_eer_interpolated_between_grid_points() -> None:
    # grid .1 .4 .5 .6: FAR 1 .5 .5 0, FRR 0 0 1/3 1/3; FAR-FRR 1/6 at .5, -1/3 at .6,
    # weight 1/3: EER = .5 - .5/3 = 1/3, threshold = .5 + .1/3
    rate, t = eer([0.6, 0.9, 0.4], [0.5, 0.1])
    assert rate == pytest.approx(1 / 3)
    assert t == pytest.approx(0.5 + 0.1 / 3)


def test_eer_with_ties_between_genuine_and_impostor() -> None:
    # grid .1 .5 .9: FAR 1 .5 0, FRR 0 0 2/3 -> weight .5 / (.5 + 2/3) = 3/7, EER 2/7
    rate, t = eer([0.5, 0.5, 0.9], [0.5, 0.1])
    assert rate == pytest.approx(2 / 7)
    assert t == pytest.approx(0.5 + 3 / 7 * 0.4)


def test_eer_all_scores_equal_is_one_half() -> None:
    rate, t = eer([0.5, 0.5], [0.5, 0.5, 0.5])
    assert rate == pytest.approx(0.5)
    assert t == pytest.approx(0.5)


def test_eer_inverted_sets_is_one() -> None:
    rate, _ = eer([0.1, 0.2], [0.8, 0.9])
    assert rate == pytest.approx(1.0)


def test_eer_is_bracketed_by_the_grid_operating_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        g = np.round(rng.normal(1.0, 1.0, rng.integers(1, 40)), 1)  # rounding makes ties
        i = np.round(rng.normal(0.0, 1.0, rng.integers(1, 40)), 1)
        rate, t = eer(g, i)
        grid = np.append(np.unique(np.concatenate([g, i])), math.inf)
        pts = np.array([far_frr_at(g, i, x) for x in grid])
        assert rate <= pts.max(axis=1).min() + 1e-12
        assert rate >= pts.mean(axis=1).min() - 1e-12
        assert 0.0 <= rate <= 1.0
        assert g.min() - 1e-9 <= t or i.min() - 1e-9 <= t


def test_eer_invariant_to_a_shift_of_all_scores() -> None:
    rng = np.random.default_rng(1)
    g, i = rng.normal(1, 1, 30), rng.normal(0, 1, 50)
    r0, t0 = eer(g, i)
    r1, t1 = eer(g + 3.0, i + 3.0)
    assert r1 == pytest.approx(r0)
    assert t1 == pytest.approx(t0 + 3.0)


@pytest.mark.parametrize("g, i", [([], [0.1]), ([0.1], []), ([np.nan], [0.1]), ([0.1], [np.inf])])
def test_eer_rejects_empty_or_non_finite(g: list[float], i: list[float]) -> None:
    with pytest.raises(ValueError):
        eer(g, i)
    with pytest.raises(ValueError):
        frr_at_far(g, i, 0.01)


def test_frr_at_far_hand_cases() -> None:
    g = [0.3, 0.6, 0.8, 0.9]
    i = [0.1, 0.2, 0.4, 0.7]
    frr, t = frr_at_far(g, i, 0.25)  # one false accept allowed: threshold just above 0.4
    assert frr == 0.25
    assert 0.4 < t < 0.4 + 1e-12
    assert frr_at_far(g, i, 0.0)[0] == 0.5  # just above 0.7
    assert frr_at_far(g, i, 0.5)[0] == 0.0  # just above 0.2
    assert frr_at_far(g, i, 0.49)[0] == 0.25  # floor(0.49 * 4) = 1
    assert frr_at_far(g, i, 1.0) == (0.0, 0.1)  # everything accepted


def test_frr_at_far_ties_make_the_realised_far_lower() -> None:
    g = [0.5, 0.6]
    i = [0.5, 0.5, 0.1, 0.1]
    frr, t = frr_at_far(g, i, 0.25)  # the tie at 0.5 cannot be split: threshold above it
    assert frr == 0.5
    assert far_frr_at(g, i, t) == (0.0, 0.5)


def test_frr_at_far_floating_point_budget() -> None:
    i = np.arange(100, dtype=float)
    # 0.29 * 100 = 28.999999999999996: 29 false accepts are allowed, threshold above 70
    frr, t = frr_at_far([69.5, 71.5], i, 0.29)
    assert far_frr_at([69.5, 71.5], i, t)[0] == pytest.approx(0.29)
    assert frr == 0.5
    with pytest.raises(ValueError):
        frr_at_far([1.0], [0.0], 1.5)


def test_split_scores() -> None:
    s = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.4]])
    g, i = split_scores(s, [7, 8], [7, 8, 9])
    assert g.tolist() == [0.9, 0.8]
    assert i.tolist() == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError):
        split_scores(s, [7], [7, 8, 9])


# --- classification ------------------------------------------------------------------------


def test_classification_report_hand_case() -> None:
    r = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 3)
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    p = [c["precision"] for c in r["per_class"]]
    rc = [c["recall"] for c in r["per_class"]]
    f = [c["f1"] for c in r["per_class"]]
    assert p == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert rc == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert f == pytest.approx([1 / 2, 0.8, 2 / 3])
    assert r["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert r["macro_recall"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert [c["support"] for c in r["per_class"]] == [2, 2, 2]


def test_classification_report_unpredicted_and_absent_classes() -> None:
    r = classification_report([0, 1], [0, 0], 3)
    c0, c1, c2 = r["per_class"]
    assert c1["precision"] is None and c1["recall"] == 0.0 and c1["f1"] == 0.0
    assert c2["precision"] is None and c2["recall"] is None and c2["f1"] is None
    # class 2 occurs nowhere: left out of the macro means; class 1's precision counts as 0
    assert r["macro_precision"] == pytest.approx(0.25)
    assert r["macro_recall"] == pytest.approx(0.5)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_classification_report_empty() -> None:
    r = classification_report(np.zeros(0, int), np.zeros(0, int), 2)
    assert r["n"] == 0
    assert r["accuracy"] is None and r["macro_f1"] is None
    assert r["confusion"] == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    "yt, yp", [([0, 3], [0, 1]), ([0, 1], [0, -1]), ([0.5, 1], [0, 1]), ([0], [0, 1])]
)
def test_classification_report_rejects_bad_labels(yt: list[float], yp: list[int]) -> None:
    with pytest.raises(ValueError):
        classification_report(yt, yp, 3)


def test_classification_report_agrees_with_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    yt = rng.integers(0, 6, 300)
    yp = np.where(rng.random(300) < 0.7, yt, rng.integers(0, 6, 300))
    r = classification_report(yt, yp, 6)
    p, rc, f, _ = metrics.precision_recall_fscore_support(yt, yp, average="macro")
    assert r["macro_precision"] == pytest.approx(p)
    assert r["macro_recall"] == pytest.approx(rc)
    assert r["macro_f1"] == pytest.approx(f)
    assert r["confusion"] == metrics.confusion_matrix(yt, yp, labels=range(6)).tolist()


# --- R peaks -------------------------------------------------------------------------------


def test_match_peaks_hand_case() -> None:
    # 100-102 match; 250 is a false detection; 300 takes one of 299/301, the other is false
    assert match_peaks([100, 200, 300], [102, 250, 299, 301], 5) == (2, 2, 1)


def test_match_peaks_is_maximal_not_greedy() -> None:
    # nearest-first would pair 108 with 104 and leave 100 and 112 alone
    assert match_peaks([100, 108], [104, 112], 5) == (2, 0, 0)
    it, id_ = match_peak_pairs([100, 108], [104, 112], 5)
    assert it.tolist() == [0, 1] and id_.tolist() == [0, 1]


def test_match_peaks_prefers_the_nearer_detection() -> None:
    it, id_ = match_peak_pairs([100], [91, 100], 10)
    assert it.tolist() == [0] and id_.tolist() == [1]
    assert match_peaks([100], [91, 100], 10) == (1, 1, 0)


def test_match_peaks_tolerance_is_inclusive() -> None:
    assert match_peaks([10], [15], 5) == (1, 0, 0)
    assert match_peaks([10], [15], 4.99) == (0, 1, 1)
    assert match_peaks([10], [10], 0) == (1, 0, 0)


def test_match_peaks_empty() -> None:
    assert match_peaks([], [], 5) == (0, 0, 0)
    assert match_peaks([], [1, 2], 5) == (0, 2, 0)
    assert match_peaks([1, 2, 3], np.zeros(0, np.int64), 5) == (0, 0, 3)
    it, id_ = match_peak_pairs([], [1], 5)
    assert it.dtype == np.int64 and it.size == 0 and id_.size == 0


def test_match_peaks_unsorted_input_and_duplicates() -> None:
    it, id_ = match_peak_pairs([300, 100, 200], [201, 99, 99], 3)
    assert it.tolist() == [1, 2]  # sorted by true position
    assert id_[0] in (1, 2) and id_[1] == 0
    assert match_peaks([300, 100, 200], [201, 99, 99], 3) == (2, 1, 1)


def test_match_peaks_agrees_with_dense_assignment() -> None:
    from engines.roi.metrics import match_peaks as dense_match

    rng = np.random.default_rng(3)
    for _ in range(200):
        t = np.sort(rng.choice(400, rng.integers(0, 30), replace=False))
        d = rng.integers(0, 400, rng.integers(0, 30))
        tol = float(rng.integers(0, 12))
        it, id_ = match_peak_pairs(t, d, tol)
        dp, dt = dense_match(d, t, tol)
        assert it.size == dp.size
        assert np.abs(t[it] - d[id_]).sum() == pytest.approx(np.abs(t[dt] - d[dp]).sum())
        assert np.all(np.abs(t[it] - d[id_]) <= tol)
        assert np.unique(it).size == it.size and np.unique(id_).size == id_.size


def test_match_peaks_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        match_peaks([1.0], [np.nan], 5)
    with pytest.raises(ValueError):
        match_peaks([1], [1], -1)


def test_sensitivity_ppv() -> None:
    assert sensitivity_ppv(9, 1, 0) == (1.0, 0.9)
    assert sensitivity_ppv(3, 0, 1) == (0.75, 1.0)
    assert sensitivity_ppv(0, 0, 0) == (None, None)
    assert sensitivity_ppv(0, 2, 0) == (None, 0.0)
    with pytest.raises(ValueError):
        sensitivity_ppv(-1, 0, 0)
