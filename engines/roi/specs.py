"""Frozen specs of the spectral models: input (1, 512) spectrum in [0, 1].

- the four 1D ROI segmenters of the paper (§1): output (1, 512) per-sample ROI logits
  (pre-sigmoid);
- the peak detectors (:mod:`engines.roi.peak_heads`): the ResNet+UNet trunk at twice the
  segmenters' widths with five per-sample heads, output (5, 512): ROI logit, centre heatmap
  logit, sub-sample offset, log support width, height. ``peaks`` is trained on the paper's
  protocol alone (it reproduces the paper's table with peaks); ``peaks_mixed`` on a mix of peak
  shapes, widths, overlaps and spikes (:data:`engines.roi.train.MIXED_TRAINING`), so the
  out-of-distribution set is in its distribution: the model the service runs by default.

Weights ``engines/roi/weights/roi_<key>.pt`` (state_dict) with a ``roi_<key>.json`` training
card, written by ``sigstream train roi --model <key> --seed N``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engines.roi.detector import RoiDetectorConfig
from engines.roi.peak_decode import N_HEADS
from engines.spec import ModelSpec, deferred_build

__all__ = ["ROI_LENGTH", "ROI_SPECS", "WEIGHTS_DIR", "detector_config"]

#: The shipped weights of this family, with their training cards.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

ROI_LENGTH = 512

_DESCRIPTIONS = {
    "cnn": "plain 1D CNN (9 conv-BN-ReLU layers, dilated), per-sample ROI logits",
    "resnet": "1D ResNet (4 dilated residual blocks), per-sample ROI logits",
    "unet": "1D UNet (4 levels, skips), per-sample ROI logits",
    "resnet_unet": "1D ResNet+UNet (UNet with residual blocks), per-sample ROI logits",
}
# Imported when a model is built: listing specs or serving a compiled engine needs no torch.
_BUILDERS = {
    "cnn": deferred_build("engines.roi.cnn:RoiCnn"),
    "resnet": deferred_build("engines.roi.resnet:RoiResNet"),
    "unet": deferred_build("engines.roi.unet:RoiUNet"),
    "resnet_unet": deferred_build("engines.roi.resnet_unet:RoiResNetUNet"),
}

ROI_SPECS: dict[str, ModelSpec] = {
    key: ModelSpec(
        name=f"roi_{key}",
        build=build,
        input_shape=(1, ROI_LENGTH),
        output_shape=(1, ROI_LENGTH),
        weights=f"roi_{key}.pt",
        weights_dir=WEIGHTS_DIR,
        description=_DESCRIPTIONS[key],
        extra={"output": "logits", "input_range": (0.0, 1.0)},
    )
    for key, build in _BUILDERS.items()
}


# key: (description, the shape its read-out fits: the paper's Hann peaks, or any shape)
_PEAK_MODELS = {
    "peaks": (
        "ResNet+UNet with peak heads (centre, offset, width, height, ROI), paper protocol",
        "hann",
    ),
    "peaks_mixed": (
        "ResNet+UNet with peak heads, trained on mixed shapes, widths 3-61, spikes",
        "pvoigt",
    ),
}
ROI_SPECS.update(
    {
        key: ModelSpec(
            name=f"roi_{key}",
            build=deferred_build("engines.roi.peak_heads:RoiPeakNet"),
            input_shape=(1, ROI_LENGTH),
            output_shape=(N_HEADS, ROI_LENGTH),
            weights=f"roi_{key}.pt",
            weights_dir=WEIGHTS_DIR,
            description=description,
            extra={"output": "peak_heads", "input_range": (0.0, 1.0), "peak_fit": fit},
        )
        for key, (description, fit) in _PEAK_MODELS.items()
    }
)


def detector_config(model: str, base: RoiDetectorConfig | None = None) -> RoiDetectorConfig:
    """The detector settings that read model ``model``'s outputs: ``base`` (default settings
    if None) with the peak fit of a peak-head model's spec."""
    cfg = base or RoiDetectorConfig()
    fit = ROI_SPECS[model].extra.get("peak_fit")
    return dataclasses.replace(cfg, peak_fit=fit) if fit is not None else cfg
