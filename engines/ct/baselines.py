"""Classical denoisers the CT models are compared with, and their tuning on validation slices.

- ``gaussian``: an isotropic Gaussian filter of SD ``sigma_px`` pixels.
- ``bm3d``: BM3D (Dabov et al. 2007; the ``bm3d`` package, both stages) with a white-noise
  ``sigma_psd`` in HU. CT noise after filtered back-projection is not white, so the SD BM3D is
  told is a tuned parameter, not the measured one.

Each parameter is tuned per dose on validation phantoms (never on the test set) by the mean PSNR
(soft-tissue window, inside the body) over :data:`GRIDS`. BM3D costs ~12 s per 512² slice on
one core; :func:`tune` can score it on the central crop of each validation slice (the body's
middle, where the noise is) to keep tuning within minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from engines.ct.metrics import psnr_db
from engines.errors import BackendUnavailableError

__all__ = ["BASELINES", "GRIDS", "bm3d_filter", "gaussian_filter", "tune"]


def gaussian_filter(hu: np.ndarray, sigma_px: float) -> np.ndarray:
    """``hu`` (H, W) smoothed by a Gaussian of SD ``sigma_px`` px: float32 HU."""
    return ndimage.gaussian_filter(np.asarray(hu, dtype=np.float64), sigma_px).astype(np.float32)


def bm3d_filter(hu: np.ndarray, sigma_hu: float) -> np.ndarray:
    """BM3D of ``hu`` (H, W) with white-noise SD ``sigma_hu``: float32 HU. Raises
    :class:`~engines.errors.BackendUnavailableError` when the ``bm3d`` package is absent."""
    try:
        import bm3d
    except ImportError as exc:
        raise BackendUnavailableError("the bm3d baseline needs `pip install bm3d`") from exc
    # BM3D's thresholds are relative to sigma; HU / 1000 keeps its float32 arithmetic in range.
    out = bm3d.bm3d(np.asarray(hu, dtype=np.float32) / 1000.0, sigma_psd=sigma_hu / 1000.0)
    return (np.asarray(out, dtype=np.float32) * 1000.0).astype(np.float32)


#: name -> the filter ``(hu, parameter) -> hu``.
BASELINES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "gaussian": gaussian_filter,
    "bm3d": bm3d_filter,
}
#: name -> the candidate parameters (gaussian: sigma in px; bm3d: sigma_psd in HU).
GRIDS: dict[str, tuple[float, ...]] = {
    "gaussian": (0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0),
    "bm3d": (15.0, 25.0, 40.0, 60.0, 90.0, 135.0),
}


def _crop(a: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None or crop >= min(a.shape):
        return a
    r, c = (a.shape[0] - crop) // 2, (a.shape[1] - crop) // 2
    return a[r:r + crop, c:c + crop]


def tune(name: str, slices: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
         grid: Sequence[float] | None = None, crop_px: int | None = None,
         ) -> tuple[float, dict[float, float]]:
    """The parameter of baseline ``name`` with the best mean PSNR on validation ``slices``
    (``(low, reference, body)`` triples, HU), optionally on central ``crop_px``² crops:
    ``(best, {parameter: mean PSNR dB})``."""
    apply = BASELINES[name]
    scores: dict[float, float] = {}
    for value in grid if grid is not None else GRIDS[name]:
        psnrs = []
        for low, ref, body in slices:
            low_c, ref_c, body_c = (_crop(a, crop_px) for a in (low, ref, body))
            psnrs.append(psnr_db(apply(low_c, value), ref_c, mask=body_c))
        scores[float(value)] = float(np.mean(psnrs))
    return max(scores, key=lambda v: scores[v]), scores
