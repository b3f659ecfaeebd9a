"""Frozen specs of the CT denoisers (paper §5), and the one place their input contract is stated.

Contract (both models): one item is ``(1, TILE_PX, TILE_PX)`` float32 of normalised HU,

    x = (HU + HU_OFFSET) / HU_SCALE = (HU + 1000) / 1000     (air 0, water 1, bone ~1.2-2.5)

in and out (the output is the normal-dose estimate in the same units). The models are fully
convolutional; the engine's fixed item is the tile that ONNX Runtime and TensorRT compile for.
:mod:`engines.slices` serves a slice of any size on it: a slice of the tile's size goes in
whole; a smaller one is padded (edge values) to the tile; a larger one is cut into overlapping
tiles whose borders (:data:`TILE_MARGIN_PX`) are dropped when the tiles are stitched back.

Why a whole-slice item of 512² (measured with ``python -m bench.ct_serving``: one 512² phantom
slice, 2 threads, AMD EPYC shared with other work, torch 2.13, onnxruntime 1.32; p50 seconds
per slice, untrained weights; RED-CNN 3 repeats, UNet 5):

======================================  =========  =============
serving                                 RED-CNN    UNet (16-128)
======================================  =========  =============
eager, whole slice (module, no engine)  5.82       0.164
eager engine, 256² tiles, 32 px margin  12.23      0.477
onnxruntime, 256² tiles, 32 px margin   10.90      0.145
onnxruntime, 512² item (whole slice)    4.99       0.068
======================================  =========  =============

Nine 256² tiles hold 2.25x the pixels of the slice, so tiling doubles the work; ONNX Runtime
on the whole slice is the fastest for both models (UNet 2.4x eager, RED-CNN 1.2x: it is bound
by its 96-channel 5x5 convolutions), and it is exact (ORT vs eager: < 0.001 HU), whereas 256²
tiles with a 32 px margin moved a (briefly) trained UNet's output by up to 66 HU (its receptive
field is wider than the margin; RED-CNN's, 20 px, is not, but it differs at the slice border).
512² is also the grid of almost every CT slice, so the item is the whole slice and tiling is
the exception (larger slices). Engine builds: 1-5 s.

Weights ``engines/ct/weights/ct_<key>.pt`` with a ``ct_<key>.json`` training card, written by
:func:`engines.ct.train.train_ct`.
"""

from __future__ import annotations

from pathlib import Path

from engines.slices import SliceUnits
from engines.spec import ModelSpec, deferred_build

__all__ = [
    "CT_SPECS",
    "CT_UNITS",
    "HU_OFFSET",
    "HU_SCALE",
    "SERVED_MODEL",
    "TILE_MARGIN_PX",
    "TILE_PX",
    "UNET_FEATURES",
    "WEIGHTS_DIR",
]

#: The shipped weights of this family, with their training cards.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Normalisation: ``x = (HU + HU_OFFSET) / HU_SCALE``; back: ``HU = x * HU_SCALE - HU_OFFSET``.
HU_OFFSET = 1000.0
HU_SCALE = 1000.0
#: HU in the models' units (:mod:`engines.slices`).
CT_UNITS = SliceUnits(unit="HU", offset=HU_OFFSET, scale=HU_SCALE)
#: The engine's item: one ``TILE_PX``² slice (see the module docstring for why).
TILE_PX = 512
#: Border of each tile dropped when a slice larger than a tile is stitched from tiles.
TILE_MARGIN_PX = 32
#: The model :func:`engines.ct.denoise.denoise_volume` serves by default.
SERVED_MODEL = "unet"


#: The residual UNet's widths (BasicUNet's five encoder levels, then the top decoder): half of
#: MONAI's default, chosen by measurement (see :mod:`engines.ct.train`).
UNET_FEATURES = (16, 16, 32, 64, 128, 16)


_MODELS = {
    "red_cnn": (
        deferred_build("engines.ct.models:RedCnn"),
        1,
        "RED-CNN (Chen 2017): 5 conv + 5 deconv, 96 filters 5x5, residual shortcuts, ReLU",
    ),
    "unet": (
        deferred_build("engines.ct.models:ResidualUNet", UNET_FEATURES),
        16,
        "residual UNet (MONAI BasicUNet 16-128, no norm) predicting the noise: y = x - unet(x)",
    ),
}

CT_SPECS: dict[str, ModelSpec] = {
    key: ModelSpec(
        name=f"ct_{key}",
        build=build,
        input_shape=(1, TILE_PX, TILE_PX),
        output_shape=(1, TILE_PX, TILE_PX),
        weights=f"ct_{key}.pt",
        weights_dir=WEIGHTS_DIR,
        description=description,
        extra={
            "input": "(HU + 1000) / 1000",
            "output": "(HU + 1000) / 1000, normal-dose estimate",
            "hu_offset": HU_OFFSET,
            "hu_scale": HU_SCALE,
            "multiple_px": multiple,
            "tile_margin_px": TILE_MARGIN_PX,
        },
    )
    for key, (build, multiple, description) in _MODELS.items()
}
