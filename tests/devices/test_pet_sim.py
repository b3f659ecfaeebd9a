"""The NEMA IEC phantom slice and the PET 10-minute / 2-minute simulator: geometry, projector,
counts, determinism, quantitation, configuration; and (``-m slow``) the calibration figures."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, gaussian_filter, median_filter

from devices.errors import ConfigError, SigstreamError
from devices.pet_phantom import (
    BODY_AREA_MM2,
    BODY_HEIGHT_MM,
    BODY_WIDTH_MM,
    MU_LUNG_PER_MM,
    MU_WATER_PER_MM,
    SPHERE_DIAMETERS_MM,
    NemaSlice,
    nema_slice,
)
from devices.pet_sim import (
    DEFAULT_CONFIG,
    PetPair,
    PetScanConfig,
    PetScanner,
    scan_counts,
    scanned_activity,
    simulate_pair,
    simulate_pairs,
)
from engines.pet.metrics import psnr_db, ssim

BG = 2000.0


def _disc(phantom: NemaSlice, centre: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, cols = np.mgrid[: phantom.shape[0], : phantom.shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius_px**2


def _sphere_excess_mm2(phantom: NemaSlice, k: int) -> float:
    """The area of sphere ``k``'s section, from the excess activity around its centre."""
    radius_px = SPHERE_DIAMETERS_MM[k] / 2 / phantom.pixel_mm + 3
    near = _disc(phantom, phantom.sphere_centers_px[k], radius_px)
    excess = (phantom.activity_bq_ml[near] - phantom.background_bq_ml).sum(dtype=np.float64)
    return float(excess / (phantom.sphere_bq_ml - phantom.background_bq_ml)) * phantom.pixel_mm**2


def _background_region(phantom: NemaSlice) -> np.ndarray:
    """Body pixels more than 20 mm from its edge, the lung and every sphere."""
    hot = _disc(phantom, phantom.lung_center_px, phantom.lung_radius_px)
    for centre, diameter in zip(
        phantom.sphere_centers_px, phantom.sphere_diameters_mm, strict=True
    ):
        hot |= _disc(phantom, centre, diameter / 2 / phantom.pixel_mm)
    mm = phantom.pixel_mm
    inner = distance_transform_edt(phantom.body) * mm > 20
    return (distance_transform_edt(~hot) * mm > 20) & inner


# -- the phantom -----------------------------------------------------------------------------


def test_phantom_geometry_of_the_sphere_plane() -> None:
    phantom = nema_slice()
    assert phantom.activity_bq_ml.dtype == np.float32 and phantom.shape == (200, 200)
    mm2 = phantom.pixel_mm**2
    assert phantom.body.sum() * mm2 == pytest.approx(BODY_AREA_MM2, rel=0.01)
    cols = np.flatnonzero(phantom.body.any(axis=0))
    rows = np.flatnonzero(phantom.body.any(axis=1))
    assert (cols[-1] - cols[0] + 1) * phantom.pixel_mm == pytest.approx(BODY_WIDTH_MM, abs=4)
    assert (rows[-1] - rows[0] + 1) * phantom.pixel_mm == pytest.approx(BODY_HEIGHT_MM, abs=4)
    for k, diameter in enumerate(SPHERE_DIAMETERS_MM):
        assert _sphere_excess_mm2(phantom, k) == pytest.approx(math.pi * diameter**2 / 4, rel=0.02)
        row, col = (round(c) for c in phantom.sphere_centers_px[k])
        assert phantom.activity_bq_ml[row, col] == pytest.approx(10 * BG)
    # the curved side is anterior (up), the flat side posterior; the 37 mm sphere on the right
    assert phantom.sphere_centers_px[-1][1] > phantom.lung_center_px[1] + 25
    lung = _disc(phantom, phantom.lung_center_px, phantom.lung_radius_px - 1)
    assert phantom.activity_bq_ml[lung].max() == 0.0
    assert np.allclose(phantom.mu_per_mm[lung], MU_LUNG_PER_MM)
    background = _background_region(phantom)
    assert np.all(phantom.activity_bq_ml[background] == BG)
    assert np.allclose(phantom.mu_per_mm[background], MU_WATER_PER_MM)
    assert np.all(phantom.activity_bq_ml[~phantom.body] < BG / 2)


def test_phantom_sections_rotation_shift_and_ratio() -> None:
    phantom = nema_slice(z_mm=6.0, sphere_ratio=4.0, rotation_deg=25.0, shift_mm=(7.0, -9.0))
    assert phantom.sphere_bq_ml == 4 * BG
    assert phantom.section_diameters_mm[0] == 0.0  # the 10 mm sphere is missed at z = 6 mm
    assert abs(_sphere_excess_mm2(phantom, 0)) < 1.0
    for k in range(1, 6):
        radius = SPHERE_DIAMETERS_MM[k] / 2
        section = math.pi * (radius**2 - 36.0)
        assert phantom.section_diameters_mm[k] == pytest.approx(2 * math.sqrt(radius**2 - 36))
        assert _sphere_excess_mm2(phantom, k) == pytest.approx(section, rel=0.03)
        # the excess activity is centred where the slice says the sphere is
        near = _disc(phantom, phantom.sphere_centers_px[k], radius / phantom.pixel_mm + 3)
        excess = np.where(near, phantom.activity_bq_ml - BG, 0.0)
        rows, cols = np.mgrid[:200, :200]
        centroid = (
            float((rows * excess).sum() / excess.sum()),
            float((cols * excess).sum() / excess.sum()),
        )
        assert centroid == pytest.approx(phantom.sphere_centers_px[k], abs=0.1)
    # 25 deg counter-clockwise: the 37 mm sphere (on the right at 0 deg) moves up
    r, c = phantom.lung_center_px
    sr, sc = phantom.sphere_centers_px[-1]
    assert math.degrees(math.atan2(r - sr, sc - c)) == pytest.approx(25.0, abs=0.01)
    assert (r, c) == pytest.approx((99.5 + 3.5, 99.5 - 4.5))


def test_axial_resolution_fades_small_spheres() -> None:
    sharp = nema_slice(z_mm=4.0)
    seen = nema_slice(z_mm=4.0, axial_fwhm_mm=6.5)
    assert np.array_equal(seen.body, sharp.body) and np.array_equal(seen.mu_per_mm, sharp.mu_per_mm)
    fill = [
        (float(seen.activity_bq_ml[tuple(round(v) for v in c)]) - BG) / (9 * BG)
        for c in seen.sphere_centers_px
    ]
    # on the 10 mm sphere's axis its chord is |z'| < 5 mm: seen from z = 4 mm through a
    # Gaussian of sigma 2.76 mm, 0.5 (erf(1 / 3.9) + erf(9 / 3.9)) = 0.64 of it is sphere
    assert fill[0] == pytest.approx(0.64, abs=0.03)
    assert fill[-1] > 0.99  # the 37 mm one barely changes
    assert fill == sorted(fill)


def test_phantom_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="pixel_mm"):
        nema_slice(pixel_mm=0.0)
    with pytest.raises(ConfigError, match="reaches"):
        nema_slice(size_px=150)  # 300 mm of field for a body reaching 182 mm from its axis
    with pytest.raises(ConfigError, match="finite"):
        nema_slice(z_mm=float("nan"))


# -- the scanner -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanner() -> PetScanner:
    return PetScanner(DEFAULT_CONFIG)


def test_projector_line_integrals_and_adjoint(scanner: PetScanner) -> None:
    n, mm = DEFAULT_CONFIG.size_px, DEFAULT_CONFIG.pixel_mm
    fine = 8
    axis = ((np.arange(n * fine) + 0.5) / fine - 0.5 - (n - 1) / 2) * mm
    disc = ((axis[:, None] ** 2 + axis[None, :] ** 2) <= 150.0**2).astype(np.float32)
    disc = disc.reshape(n, fine, n, fine).mean(axis=(1, 3))
    sino = scanner.project(disc)
    assert sino.shape == (DEFAULT_CONFIG.n_views, DEFAULT_CONFIG.n_bins)
    t = (np.arange(DEFAULT_CONFIG.n_bins) - (DEFAULT_CONFIG.n_bins - 1) / 2) * mm
    chord = 2 * np.sqrt(np.clip(150.0**2 - t**2, 0, None))
    inner = np.abs(t) < 140
    assert np.sqrt(np.mean((sino[:, inner] - chord[inner]) ** 2)) < 0.5  # mm
    rng = np.random.default_rng(0)
    x = rng.random((n, n)).astype(np.float32)
    y = rng.random(sino.shape).astype(np.float32)
    lhs = float((scanner.project(x).astype(np.float64) * y).sum())
    rhs = float((x.astype(np.float64) * scanner.backproject(y)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_counts_thinning_and_model() -> None:
    phantom = nema_slice()
    counts = scan_counts(phantom, seed=3)
    model = counts.model
    trues = float(model.trues_per_min.sum())
    assert trues == pytest.approx(DEFAULT_CONFIG.counts_per_min, rel=1e-4)  # the calibration
    assert model.scatter_per_min.sum() == pytest.approx(0.3 * trues, rel=1e-4)
    assert model.randoms_per_min.sum() == pytest.approx(0.2 * trues, rel=1e-4)
    assert np.all((model.attenuation > 0) & (model.attenuation <= 1))
    assert np.all(counts.short <= counts.long) and np.all(counts.short >= 0)
    assert np.array_equal(counts.short_halves[0] + counts.short_halves[1], counts.short)
    assert counts.short.sum() == pytest.approx(0.2 * counts.long.sum(), rel=0.01)
    expected = model.expected(DEFAULT_CONFIG.long_min).sum()
    assert counts.long.sum() == pytest.approx(expected, rel=0.005)
    # a slice with twice the activity gives twice the counts: one sensitivity for all slices
    double = nema_slice(background_bq_ml=2 * BG)
    seen = scanned_activity(double)
    doubled = PetScanner().forward(seen, mu_per_mm=double.mu_per_mm)
    assert float(doubled.trues_per_min.sum()) == pytest.approx(2 * trues, rel=1e-4)


@pytest.fixture(scope="module")
def pair(scanner: PetScanner) -> PetPair:
    return simulate_pair(nema_slice(), seed=7)


def test_pair_is_deterministic_by_seed(pair: PetPair) -> None:
    again = simulate_pair(pair.phantom, seed=7)
    other = simulate_pair(pair.phantom, seed=8)
    for a, b in [
        (pair.long, again.long),
        (pair.short, again.short),
        (pair.short_halves[1], again.short_halves[1]),
    ]:
        assert np.array_equal(a, b)
    assert not np.array_equal(pair.long, other.long)
    assert not np.array_equal(pair.short, other.short)
    assert not np.array_equal(pair.short_halves[0], pair.short_halves[1])


def test_pair_is_quantitative_in_bq_per_ml(pair: PetPair) -> None:
    assert pair.long.dtype == np.float32 and pair.long.shape == (200, 200)
    assert pair.truth is pair.phantom.activity_bq_ml
    background = _background_region(pair.phantom)
    assert background.sum() > 3000
    for image in (pair.long, pair.short, *pair.short_halves):
        assert float(image[background].mean()) == pytest.approx(BG, rel=0.05)
        assert image.min() >= 0
    # the short image is the noisier one, and near the paper's 31 dB against the long one
    assert pair.short[background].std() > 1.8 * pair.long[background].std()
    assert 29.0 < psnr_db(pair.short, pair.long) < 33.0
    # the hot spheres come out hot: RCmax of the 37 mm sphere near 1
    big = _disc(pair.phantom, pair.phantom.sphere_centers_px[-1], 37 / 4 / pair.phantom.pixel_mm)
    assert 0.9 < pair.long[big].max() / pair.phantom.sphere_bq_ml < 1.5


def test_simulate_pairs_vary_and_repeat() -> None:
    pairs = simulate_pairs(2, seed=5)
    again = simulate_pairs(2, seed=5)
    assert len(pairs) == 2
    assert pairs[0].phantom.z_mm != pairs[1].phantom.z_mm
    for a, b in zip(pairs, again, strict=True):
        assert a.phantom.z_mm == b.phantom.z_mm and a.seed == b.seed
        assert np.array_equal(a.short, b.short)
    for p in pairs:
        assert -18 <= p.phantom.z_mm <= 18 and p.phantom.sphere_ratio in (4.0, 8.0, 10.0)
        assert abs(p.phantom.rotation_deg) <= 10
    standard = simulate_pairs(1, seed=5, vary=False)[0].phantom
    assert (standard.z_mm, standard.sphere_ratio, standard.rotation_deg) == (0.0, 10.0, 0.0)


def test_bad_config_raises() -> None:
    with pytest.raises(ConfigError, match="multiple of subsets"):
        PetScanConfig(n_views=100)
    with pytest.raises(ConfigError, match="fwhm_mm"):
        PetScanConfig(fwhm_mm=-1.0)
    with pytest.raises(ConfigError, match="short_fraction"):
        PetScanConfig(short_fraction=1.0)
    with pytest.raises(ConfigError, match="iterations"):
        PetScanConfig(iterations=0)
    with pytest.raises(SigstreamError, match="reconstructs"):
        simulate_pair(nema_slice(size_px=256, pixel_mm=1.6), seed=0)


# -- calibration (slow): prints the figures the module docstring quotes -----------------------


def _rc_max(image: np.ndarray, phantom: NemaSlice) -> list[float]:
    """Hottest voxel of each sphere (within its radius) over the true sphere activity."""
    return [
        float(image[_disc(phantom, c, d / 2 / phantom.pixel_mm)].max() / phantom.sphere_bq_ml)
        for c, d in zip(phantom.sphere_centers_px, phantom.sphere_diameters_mm, strict=True)
    ]


def _figures(config: PetScanConfig, seeds: int = 10) -> dict[str, object]:
    """Means over ``seeds`` pairs of the standard slice: the 2-minute image and its Gaussian
    (sigma 1 px) and 3 x 3 median filtrations against the 10-minute image, background noise,
    RCmax of the 10-minute image, and CPU seconds per pair."""
    phantom = nema_slice()
    background = _background_region(phantom)
    rows, seconds = [], []
    for seed in range(seeds):
        start = time.process_time()
        p = simulate_pair(phantom, seed=seed, config=config)
        seconds.append(time.process_time() - start)
        rows.append(
            [
                psnr_db(p.short, p.long),
                psnr_db(gaussian_filter(p.short, 1.0), p.long),
                psnr_db(median_filter(p.short, 3), p.long),
                ssim(p.short, p.long),
                100 * float(p.long[background].std() / p.long[background].mean()),
                100 * float(p.short[background].std() / p.short[background].mean()),
                *_rc_max(p.long, phantom),
            ]
        )
    mean = np.mean(rows, axis=0)
    return {
        "psnr_2min_db": round(float(mean[0]), 2),
        "psnr_2min_sd_db": round(float(np.std([r[0] for r in rows])), 2),
        "psnr_gauss_sigma1_db": round(float(mean[1]), 2),
        "psnr_median3_db": round(float(mean[2]), 2),
        "ssim_2min": round(float(mean[3]), 3),
        "background_cv_10min_percent": round(float(mean[4]), 1),
        "background_cv_2min_percent": round(float(mean[5]), 1),
        "rc_max_10min": [round(float(v), 2) for v in mean[6:]],
        "cpu_s_per_pair": round(float(np.median(seconds)), 3),
    }


@pytest.mark.slow
def test_calibration_figures() -> None:
    phantom = nema_slice()
    figures = _figures(DEFAULT_CONFIG)
    precise = PetScanConfig(counts_per_min=100 * DEFAULT_CONFIG.counts_per_min)
    figures["rc_max_100x_counts"] = [
        round(v, 2) for v in _rc_max(simulate_pair(phantom, seed=0, config=precise).long, phantom)
    ]
    print("default", json.dumps(figures))
    assert 30.5 < float(figures["psnr_2min_db"]) < 31.5  # type: ignore[arg-type]
    filtered = _figures(PetScanConfig(postfilter_fwhm_mm=4.0, counts_per_min=6.0e4))
    print("postfilter 4 mm, 6e4 counts/min", json.dumps(filtered))
    assert 30.5 < float(filtered["psnr_2min_db"]) < 31.5  # type: ignore[arg-type]
