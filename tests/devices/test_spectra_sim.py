"""Tests of the paper's spectrum simulator (devices.spectra_sim)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from checks import assert_frozen_kw_only
from scipy.signal.windows import hann

from devices.spectra_sim import PEAK_DTYPE, SpectrumSimConfig, simulate


def _union(peaks: np.ndarray, length: int) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    for p in peaks:
        mask[p["start"] : p["end"]] = True
    return mask


def test_default_batch_shapes_dtypes_range() -> None:
    b = simulate(64, config=SpectrumSimConfig(), rng=np.random.default_rng(1))
    assert b.spectra.shape == (64, 512) and b.spectra.dtype == np.float32
    assert b.roi.shape == (64, 512) and b.roi.dtype == np.bool_
    assert b.snr_db.shape == (64,) and b.noise_sigma.shape == (64,)
    assert np.all(b.spectra.min(axis=1) == 0.0) and np.all(b.spectra.max(axis=1) == 1.0)
    assert len(b.peaks) == 64 and all(p.dtype == PEAK_DTYPE for p in b.peaks)
    assert all(s.size == 0 for s in b.spikes)


def test_paper_ranges_and_roi_is_union_of_supports() -> None:
    b = simulate(200, config=SpectrumSimConfig(), rng=np.random.default_rng(2))
    for i, peaks in enumerate(b.peaks):
        assert 8 <= len(peaks) <= 16
        assert np.all((peaks["width"] >= 5) & (peaks["width"] <= 31))
        assert np.all(peaks["end"] - peaks["start"] == peaks["width"])
        assert np.all((peaks["start"] >= 0) & (peaks["end"] <= 512))
        assert np.all(np.diff(peaks["start"]) >= 0)
        np.testing.assert_allclose(peaks["center"], peaks["start"] + (peaks["width"] - 1) / 2)
        np.testing.assert_array_equal(b.roi[i], _union(peaks, 512))
        # per-peak SNR consistent with heights in normalised units; strongest defines spectrum SNR
        np.testing.assert_allclose(
            peaks["snr_db"], 20 * np.log10(peaks["height"] / b.noise_sigma[i]), rtol=1e-9
        )
        # the strongest peak defines the spectrum's SNR (its sampled apex may sit <= 0.44 dB lower)
        assert b.snr_db[i] - 0.45 <= peaks["snr_db"].max() <= b.snr_db[i] + 1e-9
        assert peaks["snr_db"].min() >= b.snr_db[i] - 20.0 - 0.45  # heights >= 10 % of strongest
    assert np.all((b.snr_db >= 30) & (b.snr_db <= 50))
    counts = np.array([len(p) for p in b.peaks])
    assert len(np.unique(counts)) > 4  # counts really vary


def test_single_hann_peak_is_scipy_hann_over_its_support() -> None:
    cfg = SpectrumSimConfig(n_peaks=(1, 1), snr_db=(200.0, 200.0), background_rel=(0.0, 0.0))
    b = simulate(20, config=cfg, rng=np.random.default_rng(3))
    for i, (peak,) in enumerate(b.peaks):
        s, e, w = int(peak["start"]), int(peak["end"]), int(peak["width"])
        window = hann(w + 2)[1:-1]
        # min-max normalisation maps the sampled apex to 1
        np.testing.assert_allclose(b.spectra[i, s:e], window / window.max(), atol=1e-5)
        assert np.all(b.spectra[i, s:e] > 0.0)  # every support sample observable
        assert np.abs(np.delete(b.spectra[i], np.arange(s, e))).max() < 1e-5
        assert peak["height"] == pytest.approx(1.0, abs=1e-5)
        assert peak["area"] == pytest.approx(window.sum() / window.max(), rel=1e-5)


def test_determinism_by_rng() -> None:
    cfg = SpectrumSimConfig(spikes=(1, 3))
    a = simulate(16, config=cfg, rng=np.random.default_rng(7))
    b = simulate(16, config=cfg, rng=np.random.default_rng(7))
    c = simulate(16, config=cfg, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.spectra, b.spectra)
    np.testing.assert_array_equal(a.roi, b.roi)
    for pa, pb in zip(a.peaks, b.peaks, strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a.spectra, c.spectra)


def test_peak_free_spectra() -> None:
    b = simulate(8, config=SpectrumSimConfig(n_peaks=(0, 0)), rng=np.random.default_rng(4))
    assert not b.roi.any()
    assert all(len(p) == 0 for p in b.peaks)
    assert np.all(np.isnan(b.snr_db))
    assert np.all((b.spectra >= 0) & (b.spectra <= 1))


@pytest.mark.parametrize("shape", ["gauss", "lorentz", "voigt"])
def test_ood_shapes_support_is_one_percent_level(
    shape: Literal["gauss", "lorentz", "voigt"],
) -> None:
    cfg = SpectrumSimConfig(
        shape=shape,
        n_peaks=(1, 1),
        width=(3, 61),
        snr_db=(200.0, 200.0),
        background_rel=(0.0, 0.0),
    )
    b = simulate(30, config=cfg, rng=np.random.default_rng(5))
    widths = set()
    for i, (peak,) in enumerate(b.peaks):
        s, e = int(peak["start"]), int(peak["end"])
        widths.add(int(peak["width"]))
        inside = b.spectra[i, s:e]
        assert inside.min() >= 0.01 - 1e-6  # support = where profile >= 1 % of height
        assert np.abs(np.delete(b.spectra[i], np.arange(s, e))).max() < 1e-5
        np.testing.assert_array_equal(b.roi[i], _union(b.peaks[i], 512))
        assert inside.max() == pytest.approx(1.0, abs=0.02)
    assert max(widths) > 31  # the wider OOD range is used


@pytest.mark.parametrize("length", [256, 1000, 4096])
def test_other_lengths_keep_peak_density(length: int) -> None:
    cfg = SpectrumSimConfig(length=length)
    lo, hi = cfg.peak_count_range()
    assert (lo, hi) == (round(8 * length / 512), round(16 * length / 512))
    b = simulate(6, config=cfg, rng=np.random.default_rng(6))
    assert b.spectra.shape == (6, length)
    for i, peaks in enumerate(b.peaks):
        assert lo <= len(peaks) <= hi
        np.testing.assert_array_equal(b.roi[i], _union(peaks, length))


def test_overlap_avoid_and_force() -> None:
    rng = np.random.default_rng(9)
    b = simulate(30, config=SpectrumSimConfig(overlap="avoid"), rng=rng)
    for peaks in b.peaks:
        assert np.all(peaks["start"][1:] > peaks["end"][:-1])  # disjoint, never touching
    f = simulate(30, config=SpectrumSimConfig(overlap="force"), rng=rng)
    for i, peaks in enumerate(f.peaks):
        cover = np.zeros(512, dtype=int)
        for p in peaks:
            cover[p["start"] : p["end"]] += 1
        # each forced pair overlaps, so some samples are covered at least twice
        assert (cover >= 2).any()
        np.testing.assert_array_equal(f.roi[i], cover > 0)


def test_spikes_are_not_roi() -> None:
    cfg = SpectrumSimConfig(spikes=(2, 4), n_peaks=(0, 0))
    b = simulate(20, config=cfg, rng=np.random.default_rng(10))
    assert not b.roi.any()
    for i, idx in enumerate(b.spikes):
        assert 2 <= idx.size <= 4
        # a spike stands out from its neighbours by much more than the noise
        spec = b.spectra[i].astype(np.float64)
        nb = np.clip(idx - 2, 0, 511)
        assert np.all(np.abs(spec[idx] - spec[nb]) > 10 * b.noise_sigma[i])


def test_config_is_frozen_kw_only_and_validated() -> None:
    assert_frozen_kw_only(SpectrumSimConfig)
    with pytest.raises(ValueError):
        SpectrumSimConfig(shape="square")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SpectrumSimConfig(width=(10, 5))
