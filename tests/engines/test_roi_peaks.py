"""Tests of the ROI-to-peak read-out (engines.roi.peaks)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.roi.peaks import (
    PEAK_TABLE_DTYPE,
    _d2_coeffs,
    _median,
    estimate_noise_sigma,
    extract_peaks,
    intervals_to_mask,
    mask_to_intervals,
    peak_table,
    shoulder_noise_gain,
)


def _gauss(x: np.ndarray, centre: float, sigma: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((x - centre) / sigma) ** 2)


@pytest.mark.parametrize("position", ["centroid", "midpoint", "parabolic"])
def test_gaussian_on_sloped_line(position: str) -> None:
    x = np.arange(300, dtype=np.float64)
    centre, sigma, height = 140.3, 4.0, 2.0
    y = _gauss(x, centre, sigma, height) + 0.02 * x - 1.0
    (p,) = extract_peaks(y, np.array([[110, 171]]), position=position)  # type: ignore[arg-type]
    assert p["start"] == 110 and p["end"] == 171
    assert abs(p["index"] - centre) < (0.05 if position != "parabolic" else 0.1)
    # the apex sample lies 0.3 samples off the true apex: height is read at a sample
    assert p["height"] == pytest.approx(height, rel=0.01)
    assert p["area"] == pytest.approx(height * sigma * np.sqrt(2 * np.pi), rel=1e-3)
    assert p["width"] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * sigma, abs=0.1)


def test_hann_peak_outside_anchors_read_exact_height_and_area() -> None:
    w, start, h = 9, 40, 3.0
    j = np.arange(w)
    profile = h * np.sin(np.pi * (j + 1) / (w + 1)) ** 2  # the simulator's Hann peak
    y = np.full(100, 5.0)
    y[start : start + w] += profile
    iv = np.array([[start, start + w]])
    out = peak_table(y, iv)
    assert out.dtype == PEAK_TABLE_DTYPE and out.size == 1
    assert out["height"][0] == pytest.approx(profile.max())
    assert out["area"][0] == pytest.approx(profile.sum())
    assert out["index"][0] == pytest.approx(start + (w - 1) / 2)
    # anchoring on the ROI's own edge samples cuts the flanks off; for the narrowest training
    # peak (w = 5) its edge samples are a quarter of its height
    narrow = np.full(20, 1.0)
    narrow[5:10] += h * np.sin(np.pi * (np.arange(5) + 1) / 6) ** 2
    assert peak_table(narrow, np.array([[5, 10]]))["height"][0] == pytest.approx(h)
    assert peak_table(narrow, np.array([[5, 10]]), anchor="inside")["height"][0] == (
        pytest.approx(0.75 * h)
    )


def test_intervals_round_trip() -> None:
    rng = np.random.default_rng(0)
    cases = [
        np.zeros(7, bool),
        np.ones(7, bool),
        np.array([True]),
        np.array([False]),
        np.array([1, 0, 0, 1], bool),
    ]
    cases += [rng.random(200) < p for p in (0.1, 0.5, 0.9)]
    for m in cases:
        iv = mask_to_intervals(m)
        assert iv.dtype == np.int64 and iv.shape[1] == 2
        assert np.all(iv[:, 1] > iv[:, 0])
        assert np.array_equal(intervals_to_mask(iv, m.size), m)
    assert mask_to_intervals(np.array([1, 1, 0, 1], bool)).tolist() == [[0, 2], [3, 4]]
    with pytest.raises(ValueError):
        mask_to_intervals(np.zeros((2, 2), bool))


def test_tiny_and_edge_rois_do_not_crash() -> None:
    y = np.zeros(50)
    y[0], y[25], y[49] = 2.0, 3.0, 4.0
    iv = np.array([[0, 1], [25, 26], [30, 32], [49, 50]])
    peaks = extract_peaks(y, iv)
    assert [p["start"] for p in peaks] == [0, 25, 30, 49]
    for p in peaks:
        assert all(np.isfinite(v) for v in p.values())
    # a 1-sample spike is measured against its neighbours
    assert peaks[1]["height"] == pytest.approx(3.0) and peaks[1]["index"] == 25.0
    # whole spectrum, a single-sample spectrum, no intervals
    assert len(extract_peaks(y, np.array([[0, 50]]))) == 1
    (one,) = extract_peaks(np.array([7.0]), np.array([[0, 1]]))
    assert one["height"] == 0.0 and one["width"] == 0.0
    assert extract_peaks(y, np.zeros((0, 2), np.int64)) == []


def test_output_is_plain_python() -> None:
    x = np.arange(64, dtype=np.float32)
    (p,) = extract_peaks(_gauss(x, 30, 3, 1).astype(np.float32), np.array([[20, 41]]))
    assert set(p) == {"index", "height", "area", "width", "start", "end"}
    assert all(type(p[k]) is float for k in ("index", "height", "area", "width"))
    assert type(p["start"]) is int and type(p["end"]) is int


def test_overlapping_peaks_split_by_prominence() -> None:
    x = np.arange(200, dtype=np.float64)
    y = _gauss(x, 90, 3, 1.0) + _gauss(x, 104, 3, 0.6)
    iv = np.array([[75, 120]])
    two = peak_table(y, iv, prominence=0.1)
    assert np.allclose(two["index"], [90, 104], atol=0.3)
    assert np.all(two["start"] == 75) and np.all(two["end"] == 120)
    # the parts share the ROI's area
    assert two["area"].sum() == pytest.approx(peak_table(y, iv)["area"].sum(), rel=1e-9)
    one = peak_table(y, iv)  # prominence None: one peak per ROI, at its maximum
    assert one.size == 1 and abs(one["index"][0] - 90) < 0.5
    # a maximum less prominent than asked for is not a peak of its own
    assert peak_table(y, iv, prominence=10.0).size == 1


def test_given_apexes_and_bad_intervals() -> None:
    x = np.arange(100, dtype=np.float64)
    y = _gauss(x, 30, 2, 1.0) + _gauss(x, 60, 2, 1.0)
    out = peak_table(y, np.array([[20, 40], [50, 70], [80, 90]]), apexes=np.array([30, 60, 5]))
    # apex 5 is outside every ROI (dropped); ROI [80, 90) has none: its maximum stands in
    assert out.size == 3 and np.allclose(out["index"][:2], [30, 60], atol=0.05)
    for bad in ([[10, 20], [15, 30]], [[-1, 5]], [[90, 101]]):
        with pytest.raises(ValueError):
            peak_table(y, np.array(bad))


def test_noise_sigma_estimate() -> None:
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 4000)
    y = 5 * np.sin(3 * x) + rng.normal(0, 0.2, x.size)
    assert estimate_noise_sigma(y) == pytest.approx(0.2, rel=0.1)
    roi = np.zeros(x.size, bool)
    roi[1000:1100] = True
    y[1000:1100] += 50 * np.hanning(100)
    assert estimate_noise_sigma(y, roi) == pytest.approx(0.2, rel=0.1)
    assert estimate_noise_sigma(np.array([1.0, 2.0])) == 0.0


def _hann(n: int, centre: float, support: float) -> np.ndarray:
    t = (np.arange(n) - centre) / support
    return np.where(np.abs(t) < 0.5, np.cos(np.pi * t) ** 2, 0.0)


def test_shoulder_becomes_a_peak_and_noise_does_not() -> None:
    n = 200
    # a weaker peak 9 samples from a strong one: no local maximum of its own, a shoulder
    clean = _hann(n, 100.0, 30.0) + 0.25 * _hann(n, 109.0, 10.0)
    assert len(peak_table(clean, np.array([[80, 120]]), prominence=1e-6)) == 1
    sigma = 1e-3
    x = clean + np.random.default_rng(0).normal(0.0, sigma, n)
    iv = np.array([[80, 122]])
    gate = 10.0 * sigma * shoulder_noise_gain(7)  # 10 sigma of the second derivative

    def with_shoulders(y: np.ndarray, separation: int = 3) -> np.ndarray:
        return peak_table(y, iv, prominence=3 * sigma, shoulder_depth=gate,
                          shoulder_window=7, shoulder_separation=separation)

    table = with_shoulders(x, separation=4)
    assert len(table) == 2 and abs(table["index"][1] - 109) <= 2
    # one clean peak in noise: no shoulder; noise alone passes no 10-sigma gate
    single = _hann(n, 100.0, 30.0) + np.random.default_rng(1).normal(0.0, sigma, n)
    one = with_shoulders(single)
    assert len(one) == 1 and abs(one["index"][0] - 100) <= 1
    flat = np.random.default_rng(2).normal(0.0, sigma, n)
    assert len(with_shoulders(flat)) == 1  # just the ROI's maximum, reported anyway


def test_vectorised_helpers_match_references() -> None:
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 8, 101):
        v = rng.normal(size=size)
        assert _median(v) == float(np.median(v))
    mask = rng.random(300) < 0.4
    iv = mask_to_intervals(mask)
    assert np.array_equal(intervals_to_mask(iv, 300), mask)
    # several peaks per ROI: each neighbour pair is split at the first lowest sample between
    x = _hann(120, 30.0, 20.0) + _hann(120, 45.0, 20.0) + 0.8 * _hann(120, 60.0, 20.0)
    t = peak_table(x, np.array([[15, 75]]), prominence=1e-3)
    assert len(t) == 3
    assert np.allclose(t["index"], [30.0, 45.0, 60.0], atol=1.0)
    # the parts meet at the valleys and their areas add up to the ROI's (anchors are ~0 here)
    assert np.isclose(t["area"].sum(), x[15:75].sum(), rtol=1e-6)


def test_second_derivative_coefficients_are_savitzky_golay() -> None:
    from scipy.signal import savgol_coeffs

    for w in (3, 5, 7, 11, 21):
        assert np.allclose(_d2_coeffs(w), savgol_coeffs(w, 2, deriv=2), atol=1e-12)
