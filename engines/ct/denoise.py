"""Denoising CT slices and volumes in HU, for notebooks, the batch runner and Ray actors.

:class:`CtDenoiser` is a :class:`~engines.slices.SliceDenoiser` with the CT models and units;
:func:`denoise_volume` is the one-call form. A volume is denoised slice by slice (the models are
2-D); slices of any size are served on the engine's fixed tile (:mod:`engines.slices`).

The models were trained on 0.98 mm pixels (500 mm FOV at 512²); they run on the slice's own
grid, without resampling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engines.ct.specs import CT_SPECS, CT_UNITS, SERVED_MODEL
from engines.errors import ConfigError
from engines.slices import SliceDenoiser, checked_slices

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["CtDenoiser", "denoise_volume"]

_WHAT = "ct denoise"
#: In-plane pixel sizes (mm) beyond which a warning says the model is far from its training.
_TRAINED_PIXEL_MM = (0.3, 2.0)


class CtDenoiser(SliceDenoiser):
    """One CT model on one engine, for many volumes in HU.

    ``model``: a key of :data:`engines.ct.specs.CT_SPECS` (or pass ``spec`` to use another
    spec, e.g. weights elsewhere); the rest as :class:`~engines.slices.SliceDenoiser` (the
    accuracy gate, ``check``, takes seconds for the UNet, ~2 min for RED-CNN on 2 cores).
    """

    def __init__(self, model: str = SERVED_MODEL, *, backend: str = "auto", batch: int = 8,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                 spec: ModelSpec | None = None, check: bool = True) -> None:
        if spec is None:
            if model not in CT_SPECS:
                raise ConfigError(f"unknown CT model {model!r}; choose from {sorted(CT_SPECS)}")
            spec = CT_SPECS[model]
        super().__init__(spec, units=CT_UNITS, what=_WHAT, pixel_mm_range=_TRAINED_PIXEL_MM,
                         backend=backend, batch=batch, cache_dir=cache_dir, threads=threads,
                         check=check)


def denoise_volume(hu: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                   model: str = SERVED_MODEL, backend: str = "auto", batch: int = 8,
                   cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Denoise a slice ``(y, x)`` or volume ``(z, y, x)`` in HU with CT model ``model``: float32
    HU of the same shape. Loads the engine for this call; use :class:`CtDenoiser` for many."""
    slices = checked_slices(hu, spacing_mm, what=_WHAT,
                            pixel_mm_range=_TRAINED_PIXEL_MM)  # refused before anything loads
    with CtDenoiser(model, backend=backend, batch=batch, cache_dir=cache_dir) as denoiser:
        return denoiser.denoise_slices(slices).reshape(np.shape(hu))
