"""Frozen specs of the PET denoisers (PAPERS.md §2), how each is trained, and their input
contract.

Contract (every model): one item is ``(1, TILE_PX, TILE_PX)`` float32 of activity divided by
the slice's mean positive activity (:data:`PET_UNITS`, per slice: activity concentrations span
decades between scanners, tracers and injected doses), in and out. The models are fully
convolutional; a slice up to :data:`TILE_PX` a side goes in whole (edge-padded), a larger one
in overlapping tiles (:mod:`engines.slices`). 200² is the paper's OSEM matrix; the real NEMA
scan's 192² slices are padded.

How each model learns (:data:`PET_METHODS`), all from the short (2-minute) images alone:

- ``n2v``: Noise2Void as the paper ran it: careamics' UNet, uniform neighbour replacement;
- ``n2v2``: N2V2: blur pooling, no top skip, median replacement;
- ``n2v2_struct``: N2V2 with a masked square of 3 x 3 round each blind spot, each of its
  pixels replaced by a random one from outside it, for OSEM's spatially correlated noise
  (after structN2V; a flat 5 x 5 square of one median value was measured worse, ~27 dB);
- ``n2n``: Noise2Noise on two binomial halves of the 2-minute counts (each half's OSEM image
  the other's target): needs the counts, so simulated or list-mode data only; at inference it
  sees the whole 2-minute image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engines.pet.masking import Masking
from engines.slices import SliceUnits
from engines.spec import ModelSpec, deferred_build

__all__ = [
    "PET_METHODS",
    "PET_SPECS",
    "PET_UNITS",
    "IMAGES_ONLY_MODEL",
    "SERVED_MODEL",
    "TILE_MARGIN_PX",
    "TILE_PX",
    "WEIGHTS_DIR",
    "PetMethod",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Activity in the models' units: divided by each slice's mean positive activity.
PET_UNITS = SliceUnits(unit="Bq/ml")
#: The engine's item: one ``TILE_PX``² slice.
TILE_PX = 200
#: Border dropped from each tile of a slice larger than a tile (the UNet's receptive radius,
#: 2 blocks of two 3 x 3 convolutions at each of 3 scales and the pooling, is ~22 px).
TILE_MARGIN_PX = 24
#: The model :func:`engines.pet.denoise.denoise_volume` serves by default.
SERVED_MODEL = "n2n"
#: The best model that learns from images alone (``train pet --from``: no counts there).
IMAGES_ONLY_MODEL = "n2v2_struct"


@dataclass(frozen=True, kw_only=True)
class PetMethod:
    """One PET model: its network (``arch``: :class:`~engines.pet.models.N2vUNet` keywords),
    what it learns from (``target``), and for a blind-spot model its ``masking``."""

    description: str
    target: Literal["blind_spot", "halves"]
    arch: dict[str, Any] = field(default_factory=dict)
    masking: Masking | None = None


_N2V2 = {"blur_pool": True, "top_skip": False}

#: Blind spots per patch: 2 %, not careamics' 0.2 %: with ten times fewer loss pixels per
#: step a model learned too slowly for a CPU budget (measured on an early N2V2 variant: after
#: 300 steps of 16 patches its output's mean was still 0.2-0.4 of its input's).
_FRACTION = 0.02

PET_METHODS: dict[str, PetMethod] = {
    "n2v": PetMethod(description="Noise2Void: careamics UNet (depth 2, 32 channels), "
                                 "uniform replacement in 11 x 11",
                     target="blind_spot", masking=Masking(fraction=_FRACTION)),
    "n2v2": PetMethod(description="N2V2: blur pooling, no top skip, median replacement",
                      target="blind_spot", arch=_N2V2,
                      masking=Masking(fraction=_FRACTION, replace="median")),
    "n2v2_struct": PetMethod(description="N2V2 with a 3 x 3 masked square per blind spot, "
                                         "each pixel replaced from outside it (correlated "
                                         "OSEM noise)",
                             target="blind_spot", arch=_N2V2,
                             masking=Masking(fraction=_FRACTION, struct_px=1)),
    "n2n": PetMethod(description="Noise2Noise on binomial halves of the 2-minute counts "
                                 "(N2V2 network)", target="halves", arch=_N2V2),
}


PET_SPECS: dict[str, ModelSpec] = {
    key: ModelSpec(
        name=f"pet_{key}",
        build=deferred_build("engines.pet.models:N2vUNet", **method.arch),
        input_shape=(1, TILE_PX, TILE_PX),
        output_shape=(1, TILE_PX, TILE_PX),
        weights=f"pet_{key}.pt",
        weights_dir=WEIGHTS_DIR,
        description=method.description,
        extra={
            "input": "activity / the slice's mean positive activity",
            "output": "the same units, denoised",
            "tile_margin_px": TILE_MARGIN_PX,
        },
    )
    for key, method in PET_METHODS.items()
}
