"""Frozen specs of the four 1D ROI segmenters (paper §1): input (1, 512) spectrum in [0, 1],
output (1, 512) per-sample ROI logits (pre-sigmoid). Weights ``engines/roi/weights/roi_<key>.pt``
(state_dict) with a ``roi_<key>.json`` training card, written by
``sigstream train roi --model <key> --seed N``.
"""

from __future__ import annotations

from pathlib import Path

from engines.roi.cnn import RoiCnn
from engines.roi.resnet import RoiResNet
from engines.roi.resnet_unet import RoiResNetUNet
from engines.roi.unet import RoiUNet
from engines.spec import ModelSpec

__all__ = ["ROI_LENGTH", "ROI_SPECS", "WEIGHTS_DIR"]

#: The shipped weights of this family, with their training cards.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

ROI_LENGTH = 512

_DESCRIPTIONS = {
    "cnn": "plain 1D CNN (9 conv-BN-ReLU layers, dilated), per-sample ROI logits",
    "resnet": "1D ResNet (4 dilated residual blocks), per-sample ROI logits",
    "unet": "1D UNet (4 levels, skips), per-sample ROI logits",
    "resnet_unet": "1D ResNet+UNet (UNet with residual blocks), per-sample ROI logits",
}
_BUILDERS = {"cnn": RoiCnn, "resnet": RoiResNet, "unet": RoiUNet, "resnet_unet": RoiResNetUNet}

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
