"""The low-dose CT chain: noise model, determinism, dose scaling of noise, bias, resolution."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from devices.ct_dose import (
    MU_WATER_PER_MM,
    DosePair,
    line_integrals,
    low_and_reference,
    noisy_line_integrals,
    reconstruct_hu,
    simulate_scan,
)
from devices.ct_phantom import EdgeInsert, PhantomSlice, anatomical_slice
from devices.errors import ConfigError, SigstreamError, VolumeError

SIZE, VIEWS, SEED = 256, 360, 11  # 1.95 mm pixels over 500 mm, views in proportion to 720 at 512²


@dataclass(frozen=True)
class Scans:
    phantom: PhantomSlice
    clean: np.ndarray  # the noiseless chain
    pair: DosePair
    uniform: np.ndarray  # the largest uniform region


@pytest.fixture(scope="module")
def scans() -> Scans:
    phantom = anatomical_slice(SIZE, seed=2, region="thorax")
    width_mm = phantom.body.any(axis=0).sum() * phantom.pixel_mm
    assert width_mm < 350  # an average chest: photon counts well above the electronic noise
    clean = reconstruct_hu(
        line_integrals(phantom.hu, phantom.pixel_mm, views=VIEWS), phantom.pixel_mm
    )
    pair = low_and_reference(phantom.hu, phantom.pixel_mm, [0.5, 0.25], SEED, views=VIEWS)
    uniform = max(phantom.uniform_regions, key=lambda m: int(m.sum()))
    assert uniform.sum() >= 300
    return Scans(phantom=phantom, clean=clean, pair=pair, uniform=uniform)


def _noise_sd(image: np.ndarray, s: Scans) -> float:
    # Scan minus the noiseless chain: quantum noise only, no view-aliasing streaks.
    return float(np.std((image - s.clean)[s.uniform]))


def test_counts_follow_poisson_plus_electronic_noise() -> None:
    p = np.full((64, 400), 3.0)
    i0, dose = 2e5, 0.25
    lam = i0 * dose * np.exp(-3.0)  # about 2,500 counts
    quantum = noisy_line_integrals(p, dose=dose, seed=1, i0=i0, electronic_sd=0.0)
    assert np.mean(quantum) == pytest.approx(3.0, abs=0.002)
    assert np.var(quantum) == pytest.approx(1 / lam, rel=0.05)  # var(-ln N) = 1 / lambda
    both = noisy_line_integrals(p, dose=dose, seed=1, i0=i0, electronic_sd=30.0)
    assert np.var(both) == pytest.approx((lam + 30.0**2) / lam**2, rel=0.05)
    starved = noisy_line_integrals(np.full((8, 8), 40.0), dose=dose, seed=1, i0=i0)
    assert np.isfinite(starved).all() and starved.max() <= np.log(i0 * dose) + 1e-9  # N >= 1


def test_same_seed_same_images_and_the_pair_equals_single_scans(scans: Scans) -> None:
    ph = scans.phantom
    quarter = simulate_scan(ph.hu, ph.pixel_mm, dose=0.25, seed=SEED, views=VIEWS)
    np.testing.assert_array_equal(quarter, scans.pair.at(0.25))
    reference = simulate_scan(ph.hu, ph.pixel_mm, dose=1.0, seed=SEED, views=VIEWS)
    np.testing.assert_array_equal(reference, scans.pair.reference)
    other = simulate_scan(ph.hu, ph.pixel_mm, dose=0.25, seed=SEED + 1, views=VIEWS)
    assert not np.array_equal(other, quarter)
    assert quarter.dtype == np.float32 and quarter.shape == (SIZE, SIZE)
    assert scans.pair.doses == (0.5, 0.25)
    with pytest.raises(KeyError):
        scans.pair.at(0.1)


def test_quarter_dose_noise_is_twice_full_dose_noise(scans: Scans) -> None:
    full = _noise_sd(scans.pair.reference, scans)
    half = _noise_sd(scans.pair.at(0.5), scans)
    quarter = _noise_sd(scans.pair.at(0.25), scans)
    assert 5.0 < full < half < quarter < 200.0
    assert 1.6 <= quarter / full <= 2.5, f"quarter/full noise {quarter / full:.2f}"
    assert 1.2 <= half / full <= 1.7, f"half/full noise {half / full:.2f}"


def test_noise_free_chain_and_reference_keep_the_mean_hu(scans: Scans) -> None:
    truth = float(scans.phantom.hu[scans.uniform].mean())
    assert float(scans.clean[scans.uniform].mean()) == pytest.approx(truth, abs=2.0)
    assert float(scans.pair.reference[scans.uniform].mean()) == pytest.approx(truth, abs=5.0)
    assert float(scans.pair.at(0.25)[scans.uniform].mean()) == pytest.approx(truth, abs=8.0)
    body = scans.phantom.body
    assert float(np.mean(np.abs(scans.clean - scans.phantom.hu)[body])) < 40.0


def _edge(image: np.ndarray, e: EdgeInsert) -> tuple[float, float]:
    """10-90 % width and 50 % radius (px) of the rod's radial edge-spread function."""
    n = image.shape[0]
    rows, cols = np.ogrid[:n, :n]
    r = np.hypot(rows - e.center_px[0], cols - e.center_px[1])
    step = 0.25
    edges = np.arange(0.0, e.clear_radius_px, step)
    index = np.digitize(r, edges)
    profile, radii = [], []
    for k in range(1, len(edges)):
        ring = index == k
        if ring.any():
            profile.append(float(image[ring].mean()))
            radii.append(edges[k - 1] + step / 2)
    esf = (np.array(profile) - e.hu_outside) / (e.hu_inside - e.hu_outside)
    x = np.array(radii)

    def crossing(level: float) -> float:
        k = int(np.flatnonzero(esf < level)[0])
        return float(np.interp(level, [esf[k], esf[k - 1]], [x[k], x[k - 1]]))

    return crossing(0.1) - crossing(0.9), crossing(0.5)


def test_reference_keeps_the_chain_resolution(scans: Scans) -> None:
    e = scans.phantom.edge_insert
    truth_width, truth_r50 = _edge(scans.phantom.hu, e)
    clean_width, clean_r50 = _edge(scans.clean, e)
    ref_width, ref_r50 = _edge(scans.pair.reference, e)
    assert truth_width < clean_width < truth_width + 1.5  # ramp filter, linear interpolation
    assert abs(ref_width - clean_width) < 0.4  # noise averages out round the ring
    for r50 in (truth_r50, clean_r50, ref_r50):
        assert r50 == pytest.approx(e.radius_px, abs=0.3)


def test_outside_the_scan_circle_is_air_and_not_scanned() -> None:
    n = 64
    hu = np.full((n, n), -1000.0)
    rows, cols = np.ogrid[:n, :n]
    r2 = (rows - n // 2) ** 2 + (cols - n // 2) ** 2
    hu[r2 <= 20**2] = 0.0  # a water cylinder, 40 px across
    hu[:3, :3] = 3000.0  # a corner outside the circle, as padded DICOM slices have
    pixel_mm = 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage warns when the outside is not zero
        p = line_integrals(hu, pixel_mm, views=96)
    assert p.max() == pytest.approx(40 * pixel_mm * MU_WATER_PER_MM, rel=0.03)
    image = reconstruct_hu(p, pixel_mm)
    assert (image[r2 > (n // 2) ** 2] == -1000.0).all()
    assert float(image[r2 <= 14**2].mean()) == pytest.approx(0.0, abs=5.0)


@pytest.mark.parametrize(
    ("hu", "words"),
    [
        (np.zeros((32, 32, 3)), "2-D"),
        (np.zeros((32, 48)), "square"),
        (np.zeros((8, 8)), "square, at least"),
        (np.full((32, 32), np.nan), "finite"),
        (np.zeros((32, 32), dtype=complex), "real numbers"),
        (np.zeros((32, 32), dtype=bool), "real numbers"),
    ],
)
def test_bad_images_raise_volume_error(hu: np.ndarray, words: str) -> None:
    with pytest.raises(VolumeError, match=words) as info:
        simulate_scan(hu, 1.0, dose=0.5, seed=0, views=8)
    assert isinstance(info.value, SigstreamError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dose": 0.0}, "dose must be in"),
        ({"dose": 1.5}, "dose must be in"),
        ({"dose": float("nan")}, "dose must be in"),
        ({"dose": True}, "dose must be in"),
        ({"i0": 0.0}, "i0 must be"),
        ({"i0": float("inf")}, "i0 must be"),
        ({"electronic_sd": -1.0}, "electronic_sd must be"),
        ({"seed": -1}, "seed must be"),
        ({"views": 0}, "views must be"),
        ({"pixel_mm": 0.0}, "pixel_mm must be"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"pixel_mm": 1.0, "dose": 0.5, "seed": 0, "views": 8, **kwargs}
    with pytest.raises(ConfigError, match=words):
        simulate_scan(np.zeros((32, 32)), **args)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        low_and_reference(np.zeros((32, 32)), 1.0, [0.5, 2.0], 0, views=8)
