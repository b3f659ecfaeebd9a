"""What the CT evaluation measures and on what: doses, sets, sizes, masks and targets."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from engines.ct.metrics import SOFT_TISSUE_WINDOW_HU, WIDE_WINDOW_HU

__all__ = [
    "BASELINE_NAMES",
    "DOSES",
    "EvalSizes",
    "LOW_DOSE",
    "MODEL_NAMES",
    "REAL_FILES",
    "REAL_THRESHOLDS_HU",
    "TARGETS",
    "TARGET_DOSE",
    "dose_key",
    "log_progress",
    "protocol_block",
]

#: The low doses evaluated (fractions of the normal dose).
DOSES: tuple[float, ...] = (0.10, 0.25, 0.50)
#: The dose the targets are stated at.
TARGET_DOSE = 0.25
#: The unprocessed low-dose image (filtered back-projection), the floor every method must beat.
LOW_DOSE = "low_dose"
BASELINE_NAMES: tuple[str, ...] = ("gaussian", "bm3d")
MODEL_NAMES: tuple[str, ...] = ("red_cnn", "unet")
#: Real CT slices that ship in pydicom / pydicom-data (every slice of each file is used).
REAL_FILES: tuple[str, ...] = (
    "CT_small.dcm",
    "693_UNCR.dcm",
    "693_UNCI.dcm",
    "explicit_VR-UN.dcm",
    "eCT_Supplemental.dcm",
)
#: Tissue classes of a real slice by thresholds on the slice (HU, after a 1 px Gaussian).
REAL_THRESHOLDS_HU: MappingProxyType[str, tuple[float, float]] = MappingProxyType({
    "fat": (-190.0, -30.0),
    "soft_tissue": (0.0, 100.0),
    "bone": (300.0, 4000.0),
})
#: Tissue masks are eroded by this many pixels (partial volume at their edges stays out).
ERODE_PX = 2
#: Real-slice uniform regions: blocks of about this size (mm) inside the eroded body.
REAL_BLOCK_MM = 8.0

TARGETS: MappingProxyType[str, float] = MappingProxyType({
    "psnr_gain_over_low_dose_db_min": 4.0,
    "psnr_over_best_classical_db_min": 1.0,
    "hu_bias_abs_max": 5.0,
    "noise_sd_ratio_max": 0.5,
    "mtf50_ratio_tolerance": 0.10,
})


@dataclass(frozen=True, kw_only=True)
class EvalSizes:
    """How much is evaluated: ``n_test`` held-out phantoms and ``n_validation`` tuning phantoms
    at ``size_px``²; ``real_files`` (names in pydicom's test data); ``bm3d_crop_px``: the
    central crop BM3D is tuned on."""

    size_px: int = 512
    n_test: int = 3
    n_validation: int = 2
    real_files: tuple[str, ...] = REAL_FILES
    bm3d_crop_px: int | None = 256

    @classmethod
    def quick(cls) -> EvalSizes:
        """A few minutes: 2 test and 1 validation phantom at 256², the 128² real slice."""
        return cls(size_px=256, n_test=2, n_validation=1, real_files=("CT_small.dcm",),
                   bm3d_crop_px=128)


def dose_key(dose: float) -> str:
    """The JSON key of a dose: ``"0.1"``, ``"0.25"``, ``"0.5"``."""
    return repr(float(dose))


def log_progress(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def protocol_block(sizes: EvalSizes) -> dict[str, Any]:
    """The report's statement of how every figure was computed."""
    return {
        "doses": [dose_key(d) for d in DOSES],
        "reference": "the same slice through the same simulated chain at dose 1",
        "phantom_set": {
            "size_px": sizes.size_px,
            "n_test": sizes.n_test,
            "n_validation": sizes.n_validation,
            "seeds": "engines.ct.data.phantom_seed: purpose 'test' (tuning: 'validation'), "
                     "disjoint from training by construction",
        },
        "real_set": {
            "files": list(sizes.real_files),
            "low_dose": "simulated from each real slice (projection-space noise, FBP); the "
                        "real slices are never trained on",
            "masks": {k: list(v) for k, v in REAL_THRESHOLDS_HU.items()},
            "uniform_regions": f"~{REAL_BLOCK_MM:g} mm blocks inside the eroded body, mean in "
                               "[-150, 250] HU, real-slice SD at most 1.25x the lower "
                               "quartile of such blocks' SDs",
        },
        "metrics": {
            "psnr_db": f"window {list(SOFT_TISSUE_WINDOW_HU)} HU, inside the body",
            "psnr_wide_db": f"window {list(WIDE_WINDOW_HU)} HU, inside the body",
            "ssim": f"skimage SSIM, window {list(SOFT_TISSUE_WINDOW_HU)} HU "
                    "(data_range 400), map averaged inside the body",
            "rmse_hu": "unclipped, inside the body",
            "hu_bias": "mean (image - reference) per tissue class (masks eroded "
                       f"{ERODE_PX} px), averaged over slices",
            "hu_bias_abs": "per slice the largest |class bias| of fat / soft tissue / bone, "
                           "averaged over slices",
            "noise_sd_hu": "pooled SD about each uniform region's mean",
            "mtf50_lp_per_cm": "phantom set only: MTF50 at the edge insert (engines.ct.metrics"
                               ".edge_mtf), mean over slices; mtf50_ratio: per slice method / "
                               "normal-dose reference, averaged",
            "aggregation": "mean over the set's slices",
        },
        "tuning": "gaussian sigma and bm3d sigma_psd per dose, by mean PSNR on the validation "
                  "phantoms (bm3d on their central crops)",
    }
