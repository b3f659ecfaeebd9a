"""Image-quality figures of a PET slice against its 10-minute reference, as PAPERS.md §2 reports
them. Images are float ``(H, W)`` (or ``(z, H, W)``) in one activity unit (Bq/ml).

- :func:`psnr_db`: ``10 log10(max(reference)^2 / MSE)`` over the whole image (the peak is the
  reference's hottest voxel, so the figure does not depend on the unit);
- :func:`nrmse_percent`: ``100 * ||image - reference||_2 / ||reference||_2``;
- :func:`ssim`: :func:`skimage.metrics.structural_similarity` with ``data_range`` the
  reference's max - min (7 x 7 uniform window), mean over the image.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["nrmse_percent", "psnr_db", "ssim"]


def _pair(image: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(image, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape or a.size == 0:
        raise ValueError(f"image {a.shape} and reference {r.shape} must have one non-empty shape")
    return a, r


def psnr_db(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB with the reference's maximum as the peak; ``inf`` for identical images."""
    a, r = _pair(image, reference)
    mse = float(np.mean((a - r) ** 2))
    peak = float(np.max(r))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def nrmse_percent(image: np.ndarray, reference: np.ndarray) -> float:
    """Root of the summed squared error over the reference's energy, in percent."""
    a, r = _pair(image, reference)
    return 100.0 * float(np.linalg.norm(a - r) / np.linalg.norm(r))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM with ``data_range`` = the reference's range."""
    a, r = _pair(image, reference)
    return float(structural_similarity(r, a, data_range=float(r.max() - r.min())))
