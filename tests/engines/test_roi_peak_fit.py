"""Tests of the joint peak fit (engines.roi.peak_fit)."""

from __future__ import annotations

import numpy as np
import pytest
from checks import assert_frozen_kw_only

from engines.roi.peak_fit import FIT_PEAK_DTYPE, PeakFitConfig, fit_peaks, spline_basis

LENGTH = 512


def _hann(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    a = np.pi * (x - centre) / (width + 1.0)
    return np.where(np.abs(a) < np.pi / 2, np.cos(a) ** 2, 0.0)


def _pvoigt(x: np.ndarray, centre: float, fwhm: float, eta: float) -> np.ndarray:
    z = (x - centre) / fwhm
    return eta / (1 + 4 * z * z) + (1 - eta) * np.exp(-4 * np.log(2) * z * z)


def _starts(centres: list[float], widths: list[float]) -> np.ndarray:
    s = np.zeros(len(centres), [("index", np.float64), ("width", np.float64)])
    s["index"] = centres
    s["width"] = widths
    return s


# (centre, support width, height): the first two overlap, the third stands alone
PEAKS = [(200.3, 21.0, 0.5), (209.8, 15.0, 0.3), (380.6, 11.0, 0.8)]


def _spectrum(noise: float, rng: np.random.Generator) -> np.ndarray:
    x = np.arange(LENGTH, dtype=np.float64)
    y = spline_basis(LENGTH, 7) @ np.array([0.1, 0.3, 0.2, 0.25, 0.1, 0.05, 0.2])
    for c, w, h in PEAKS:
        y = y + h * _hann(x, c, w)
    return y + rng.normal(0.0, noise, LENGTH)


def test_config_is_frozen_and_checked() -> None:
    assert_frozen_kw_only(PeakFitConfig)
    with pytest.raises(ValueError):
        PeakFitConfig(shape="triangle")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PeakFitConfig(iterations=-1)


def test_noiseless_overlapping_peaks_are_recovered_from_rough_starts() -> None:
    """Free to move further than the detector-refining default, the fit finds the truth."""
    y = _spectrum(0.0, np.random.default_rng(0))
    starts = _starts([201.5, 208.6, 381.6], [18.0, 18.0, 13.0])
    free = PeakFitConfig(iterations=30, max_shift_samples=3.0)
    (t,) = fit_peaks(y[None, :], [starts], free)
    assert t.dtype == FIT_PEAK_DTYPE
    assert len(t) == 3
    for row, (c, w, h) in zip(t, PEAKS, strict=True):
        assert row["index"] == pytest.approx(c, abs=1e-3)
        assert row["height"] == pytest.approx(h, abs=1e-3)
        assert row["width"] == pytest.approx((w + 1) / 2, abs=1e-2)  # FWHM of a Hann window
        assert row["area"] == pytest.approx(h * (w + 1) / 2, rel=1e-3)
    assert t["overlaps"].tolist() == [True, True, False]


def test_uncertainties_match_the_scatter_over_noisy_realisations() -> None:
    rng = np.random.default_rng(1)
    noise = 0.01
    spectra = np.stack([_spectrum(noise, rng) for _ in range(120)])
    starts = [_starts([200.0, 210.0, 380.0], [20.0, 16.0, 12.0])] * len(spectra)
    tables = fit_peaks(spectra, starts, PeakFitConfig(iterations=12, max_shift_samples=2.0))
    assert all(len(t) == 3 for t in tables)
    lone = np.array([t[2] for t in tables])
    # the reported standard error describes the spread of the fitted values
    assert np.std(lone["index"]) == pytest.approx(np.mean(lone["index_sd"]), rel=0.35)
    assert np.std(lone["height"]) == pytest.approx(np.mean(lone["height_sd"]), rel=0.35)
    assert abs(np.mean(lone["index"]) - PEAKS[2][0]) < 0.05


def test_duplicate_and_empty_starts() -> None:
    y = _spectrum(0.005, np.random.default_rng(2))
    # the lone peak started twice from the same place, and a start where there is no peak
    starts = _starts([200.0, 210.0, 380.6, 380.6, 100.0], [20.0, 16.0, 11.0, 11.0, 11.0])
    (t,) = fit_peaks(y[None, :], [starts], PeakFitConfig(iterations=12, min_height_sigma=2.0))
    assert t["index"] == pytest.approx([c for c, _, _ in PEAKS], abs=0.3)
    assert t["height"] == pytest.approx([h for _, _, h in PEAKS], abs=0.02)
    (empty,) = fit_peaks(y[None, :], [_starts([], [])])
    assert empty.size == 0


def test_pseudo_voigt_fits_gaussian_and_lorentzian_peaks() -> None:
    x = np.arange(LENGTH, dtype=np.float64)
    y = 0.05 + 0.7 * _pvoigt(x, 150.2, 8.0, 0.0) + 0.4 * _pvoigt(x, 320.7, 6.0, 1.0)
    starts = _starts([151.0, 320.0], [13.0, 13.0])
    fit = PeakFitConfig(shape="pvoigt", iterations=30, max_shift_samples=2.0)
    (t,) = fit_peaks(y[None, :], [starts], fit)
    assert t["index"] == pytest.approx([150.2, 320.7], abs=0.02)
    assert t["height"] == pytest.approx([0.7, 0.4], abs=0.01)
    assert t["width"] == pytest.approx([8.0, 6.0], rel=0.02)


def test_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        fit_peaks(np.zeros(LENGTH), [_starts([], [])])
    with pytest.raises(ValueError):
        fit_peaks(np.zeros((2, LENGTH)), [_starts([], [])])


def test_centres_stay_near_their_starts_by_default() -> None:
    y = _spectrum(0.0, np.random.default_rng(0))
    starts = _starts([201.5, 208.6, 381.6], [18.0, 18.0, 13.0])
    (t,) = fit_peaks(y[None, :], [starts])
    assert np.all(np.abs(t["index"] - starts["index"]) <= PeakFitConfig().max_shift_samples + 1e-9)
