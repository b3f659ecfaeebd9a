"""Denoising PET slices and volumes in activity units (Bq/ml or any other: the models work per
slice on activity over its mean), for notebooks, the batch runner and Ray actors.

:class:`PetDenoiser` is a :class:`~engines.slices.SliceDenoiser` with the PET models and units;
:func:`denoise_volume` is the one-call form. The models are 2-D (transaxial slices).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.errors import ConfigError
from engines.pet.specs import PET_SPECS, PET_UNITS, SERVED_MODEL
from engines.slices import SliceDenoiser, checked_slices

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["PetDenoiser", "denoise_volume"]

_WHAT = "pet denoise"
#: In-plane pixels the models were trained (2 mm) and tested (2.08 mm) on, with some room.
_TRAINED_PIXEL_MM = (1.0, 4.0)


def pet_spec(model: str = SERVED_MODEL, weights: str | os.PathLike[str] | None = None
             ) -> ModelSpec:
    """The spec of PET model ``model``, with ``weights`` (a ``.pt`` file with its card beside
    it, e.g. from ``sigstream train pet --from``) instead of the shipped ones."""
    if model not in PET_SPECS:
        raise ConfigError(f"unknown PET model {model!r}; choose from {sorted(PET_SPECS)}")
    spec = PET_SPECS[model]
    if weights is not None:
        spec = dataclasses.replace(spec, weights=str(Path(weights).resolve()))
    return spec


class PetDenoiser(SliceDenoiser):
    """One PET model on one engine, for many volumes.

    ``model``: a key of :data:`engines.pet.specs.PET_SPECS`; ``weights``: another weights file
    for it; or pass ``spec``. The rest as :class:`~engines.slices.SliceDenoiser`.
    """

    def __init__(self, model: str = SERVED_MODEL, *, weights: str | os.PathLike[str] | None = None,
                 backend: str = "auto", batch: int = 8,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                 spec: ModelSpec | None = None, check: bool = True) -> None:
        super().__init__(spec or pet_spec(model, weights), units=PET_UNITS, what=_WHAT,
                         pixel_mm_range=_TRAINED_PIXEL_MM, backend=backend, batch=batch,
                         cache_dir=cache_dir, threads=threads, check=check)


def denoise_volume(values: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                   model: str = SERVED_MODEL, weights: str | os.PathLike[str] | None = None,
                   backend: str = "auto", batch: int = 8,
                   cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Denoise a PET slice ``(y, x)`` or volume ``(z, y, x)`` of activity: float32, same shape
    and unit. Loads the engine for this call; use :class:`PetDenoiser` for many."""
    slices = checked_slices(values, spacing_mm, what=_WHAT, pixel_mm_range=_TRAINED_PIXEL_MM)
    with PetDenoiser(model, weights=weights, backend=backend, batch=batch,
                     cache_dir=cache_dir) as denoiser:
        return denoiser.denoise_slices(slices).reshape(np.shape(values))
