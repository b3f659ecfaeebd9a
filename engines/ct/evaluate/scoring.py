"""Scoring one image against its slice's reference, and summarising a set's scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engines.ct.evaluate.sets import EvalSlice
from engines.ct.metrics import (
    WIDE_WINDOW_HU,
    mean_bias_hu,
    mtf50_lp_per_cm,
    noise_sd_hu,
    psnr_db,
    rmse_hu,
    ssim,
)
from engines.ct.specs import CT_UNITS
from engines.slices import Infer, denoise_slices

__all__ = ["Denoise", "model_denoiser", "reference_scores", "score_image", "summarise"]

#: A method: ``(low-dose HU (n, n), dose) -> HU (n, n)``.
Denoise = Callable[[np.ndarray, float], np.ndarray]

_SCALARS = ("psnr_db", "psnr_wide_db", "ssim", "rmse_hu", "hu_bias_abs", "noise_sd_hu",
            "mtf50_lp_per_cm", "mtf50_ratio")


def _mtf50(image: np.ndarray, ev: EvalSlice) -> float:
    if ev.edge is None:
        return math.nan
    e = ev.edge
    try:
        return mtf50_lp_per_cm(image, center_px=e.center_px, radius_px=e.radius_px,
                               clear_radius_px=e.clear_radius_px, pixel_mm=ev.pixel_mm)
    except ValueError:  # an insert too small on a coarse grid: no figure for this slice
        return math.nan


def reference_scores(ev: EvalSlice) -> dict[str, float]:
    """Figures of the normal-dose reference itself: its noise SD and MTF50."""
    return {"noise_sd_hu": noise_sd_hu(ev.reference, ev.uniform),
            "mtf50_lp_per_cm": _mtf50(ev.reference, ev)}


def score_image(image: np.ndarray, ev: EvalSlice) -> dict[str, Any]:
    """Every figure of ``image`` (HU, the slice's shape) against ``ev.reference``."""
    bias = {t: mean_bias_hu(image, ev.reference, m) for t, m in ev.tissues.items()}
    finite = [abs(b) for b in bias.values() if math.isfinite(b)]
    mtf = _mtf50(image, ev)
    ref_mtf = _mtf50(ev.reference, ev)
    return {
        "psnr_db": psnr_db(image, ev.reference, mask=ev.body),
        "psnr_wide_db": psnr_db(image, ev.reference, mask=ev.body, window=WIDE_WINDOW_HU),
        "ssim": ssim(image, ev.reference, mask=ev.body),
        "rmse_hu": rmse_hu(image, ev.reference, mask=ev.body),
        "hu_bias": bias,
        "hu_bias_abs": max(finite) if finite else math.nan,
        "noise_sd_hu": noise_sd_hu(image, ev.uniform) if ev.uniform else math.nan,
        "mtf50_lp_per_cm": mtf,
        "mtf50_ratio": mtf / ref_mtf if math.isfinite(mtf) and ref_mtf > 0 else math.nan,
    }


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The mean of each figure over a set's slices (NaN ones left out), the mean bias per
    tissue class, and the per-slice PSNR by slice name."""
    out: dict[str, Any] = {k: _mean([r[k] for r in rows]) for k in _SCALARS}
    classes = sorted({t for r in rows for t in r["hu_bias"]})
    out["hu_bias"] = {t: _mean([r["hu_bias"].get(t, math.nan) for r in rows]) for t in classes}
    out["per_slice_psnr_db"] = {n: r["psnr_db"] for n, r in zip(names, rows, strict=True)}
    return out


def model_denoiser(infer: Infer, *, tile: int, margin: int, batch: int) -> Denoise:
    """A model served as the engine serves it (:func:`engines.slices.denoise_slices`)."""

    def run(low: np.ndarray, dose: float) -> np.ndarray:
        return denoise_slices(infer, low[None], tile=tile, margin=margin, batch=batch,
                              units=CT_UNITS)[0]

    return run
