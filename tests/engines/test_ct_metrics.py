"""CT image metrics on synthetic images with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erfc

from engines.ct import metrics

CENTRE = (47.3, 48.6)


def _edge(sigma_px: float, radius_px: float = 7.0, n: int = 96) -> np.ndarray:
    """A bright rod (1000 HU over 0) whose edge is blurred by a Gaussian of ``sigma_px``."""
    y, x = np.mgrid[0:n, 0:n]
    d = np.hypot(y - CENTRE[0], x - CENTRE[1]) - radius_px
    return 1000.0 * 0.5 * erfc(d / (sigma_px * math.sqrt(2)))


def _mtf50(image: np.ndarray, radius_px: float = 7.0, pixel_mm: float = 1.0) -> float:
    return metrics.mtf50_lp_per_cm(image, center_px=CENTRE, radius_px=radius_px,
                                   clear_radius_px=3 * radius_px, pixel_mm=pixel_mm)


def test_psnr_of_identical_images_is_infinite_and_known_otherwise() -> None:
    ref = np.zeros((32, 32))
    assert metrics.psnr_db(ref, ref) == math.inf
    # an error of 4 HU everywhere in a 400 HU window: 20 log10(400 / 4) = 40 dB
    assert metrics.psnr_db(ref + 4.0, ref) == pytest.approx(40.0)
    # outside the window both clip to its edge: no error
    assert metrics.psnr_db(ref - 900.0, ref - 500.0) == math.inf
    mask = np.zeros((32, 32), bool)
    mask[:4] = True
    other = ref.copy()
    other[10:] += 50.0  # outside the mask
    assert metrics.psnr_db(other, ref, mask=mask) == math.inf


def test_ssim_rmse_and_bias() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(40, 20, (64, 64))
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    assert metrics.ssim(ref + rng.normal(0, 30, ref.shape), ref) < 0.9
    assert metrics.rmse_hu(ref + 3.0, ref) == pytest.approx(3.0)
    mask = np.zeros(ref.shape, bool)
    mask[:10] = True
    assert metrics.mean_bias_hu(ref + 2.5, ref, mask) == pytest.approx(2.5)
    assert math.isnan(metrics.mean_bias_hu(ref, ref, np.zeros(ref.shape, bool)))


def test_noise_sd_pools_regions_about_their_own_means() -> None:
    rng = np.random.default_rng(1)
    image = np.zeros((200, 200))
    image[:100] = 50 + rng.normal(0, 10, (100, 200))
    image[100:] = -80 + rng.normal(0, 10, (100, 200))
    top, bottom = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    top[:100], bottom[100:] = True, True
    assert metrics.noise_sd_hu(image, [top, bottom]) == pytest.approx(10.0, rel=0.02)
    assert math.isnan(metrics.noise_sd_hu(image, []))


@pytest.mark.parametrize("sigma_px", [0.5, 0.8, 1.2])
def test_mtf50_matches_a_gaussian_blur(sigma_px: float) -> None:
    # MTF of a Gaussian: exp(-2 pi^2 sigma^2 f^2) = 0.5 at f = sqrt(ln 2 / 2) / (pi sigma)
    analytic_lp_cm = math.sqrt(math.log(2) / 2) / (math.pi * sigma_px) * 10.0
    assert _mtf50(_edge(sigma_px)) == pytest.approx(analytic_lp_cm, rel=0.05)


def test_mtf50_orders_sharp_and_blurred_edges_and_scales_with_pixels() -> None:
    sharp, blurred = _mtf50(_edge(0.6)), _mtf50(_edge(1.2))
    assert sharp > 1.8 * blurred
    assert _mtf50(_edge(0.6), pixel_mm=0.5) == pytest.approx(2 * sharp)
    noisy = _edge(0.6) + np.random.default_rng(2).normal(0, 30, (96, 96))
    assert _mtf50(noisy) == pytest.approx(sharp, rel=0.1)


def test_mtf_refuses_an_edge_without_room() -> None:
    with pytest.raises(ValueError, match="room"):
        metrics.mtf50_lp_per_cm(_edge(0.6), center_px=CENTRE, radius_px=1.0, clear_radius_px=1.5,
                        pixel_mm=1.0)
