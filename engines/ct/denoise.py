"""Denoising CT slices and volumes in HU, for notebooks, the batch runner and Ray actors.

:class:`CtDenoiser` loads one engine (:func:`engines.engine.load_engine`) and denoises any
number of slices or volumes with it; :func:`denoise_volume` is the one-call form. A volume is
denoised slice by slice (the models are 2-D), ``batch`` engine items at a time; slices of any
size are served on the engine's fixed tile by :func:`engines.ct.tiles.denoise_slices`.

The models were trained on 0.98 mm pixels (500 mm FOV at 512²); they run on the slice's own
grid, without resampling. Not thread-safe: one denoiser per thread (or per Ray actor).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from engines.ct.specs import CT_SPECS, SERVED_MODEL, TILE_MARGIN_PX
from engines.ct.tiles import denoise_slices
from engines.errors import ConfigError, InputContractError

if TYPE_CHECKING:
    from engines.engine import Engine
    from engines.spec import ModelSpec

__all__ = ["CtDenoiser", "denoise_volume"]

logger = logging.getLogger(__name__)

_MIN_SIDE_PX = 8
#: In-plane pixel sizes (mm) beyond which a warning says the model is far from its training.
_TRAINED_PIXEL_MM = (0.3, 2.0)


def _checked_volume(hu: object, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
    """``hu`` as float32 ``(n, H, W)`` slices (a 2-D slice becomes ``n = 1``), or
    :class:`~engines.errors.InputContractError` naming what is wrong."""
    if not isinstance(hu, np.ndarray):
        raise InputContractError(f"ct denoise: expected a numpy array, got {type(hu).__name__}")
    if hu.dtype.kind not in "fiu":
        raise InputContractError(f"ct denoise: HU must be real numbers, got dtype {hu.dtype}")
    if hu.ndim not in (2, 3):
        raise InputContractError(
            f"ct denoise: expected a slice (y, x) or a volume (z, y, x), got shape {hu.shape}")
    if min(hu.shape[-2:]) < _MIN_SIDE_PX or (hu.ndim == 3 and hu.shape[0] < 1):
        raise InputContractError(f"ct denoise: slices must be at least {_MIN_SIDE_PX}² and the "
                                 f"volume non-empty, got shape {hu.shape}")
    bad = int(np.count_nonzero(~np.isfinite(hu))) if hu.dtype.kind == "f" else 0
    if bad:
        raise InputContractError(
            f"ct denoise: {bad} NaN or infinite voxels in a volume of shape {hu.shape}")
    if spacing_mm is not None:
        spacing = [float(s) for s in spacing_mm]
        if len(spacing) != hu.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputContractError(
                f"ct denoise: spacing_mm must be {hu.ndim} finite positive values, "
                f"got {spacing_mm!r}")
        lo, hi = _TRAINED_PIXEL_MM
        if not all(lo <= s <= hi for s in spacing[-2:]):
            logger.warning("ct denoise: in-plane pixels of %s mm; the model was trained on "
                           "0.98 mm and tested on 0.39-0.98 mm", spacing[-2:])
    slices = hu.astype(np.float32, copy=False)
    return slices[None] if slices.ndim == 2 else slices


class CtDenoiser:
    """One CT model on one engine, for many volumes.

    ``model``: a key of :data:`engines.ct.specs.CT_SPECS` (or pass ``spec`` to use another
    spec, e.g. weights elsewhere). ``backend``/``cache_dir``/``threads``: those of
    :func:`~engines.engine.load_engine`; ``batch``: engine items per call (its max batch).
    ``check``: run :func:`~engines.engine.load_engine`'s accuracy gate against eager at load
    (batches of 1, 3 and ``batch`` random 512² items: seconds for the UNet, ~2 min for
    RED-CNN on 2 cores). The constructor validates and loads nothing; :meth:`start` (or the
    first :meth:`denoise`, or ``with``) loads the engine; :meth:`close` releases it (safe
    twice).
    """

    def __init__(self, model: str = SERVED_MODEL, *, backend: str = "auto", batch: int = 8,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                 spec: ModelSpec | None = None, check: bool = True) -> None:
        if spec is None:
            if model not in CT_SPECS:
                raise ConfigError(f"unknown CT model {model!r}; choose from {sorted(CT_SPECS)}")
            spec = CT_SPECS[model]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"ct denoise: batch must be an int >= 1, got {batch!r}")
        tile = int(spec.input_shape[-1])
        if tuple(spec.input_shape) != (1, tile, tile):
            raise ConfigError(f"{spec.name}: expected a (1, T, T) item, got {spec.input_shape}")
        self._spec = spec
        self._backend = backend
        self._batch = batch
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._threads = threads
        self._check = check
        self._tile = tile
        self._margin = min(int(spec.extra.get("tile_margin_px", TILE_MARGIN_PX)), tile // 4)
        self._engine: Engine | None = None
        self._closed = False

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def engine(self) -> Engine | None:
        """The loaded engine (``None`` before :meth:`start`)."""
        return self._engine

    def start(self) -> CtDenoiser:
        """Load the engine (once). Raises what :func:`~engines.engine.load_engine` raises."""
        if self._closed:
            raise ConfigError(f"{self._spec.name}: the denoiser is closed")
        if self._engine is None:
            from engines.engine import load_engine

            self._engine = load_engine(self._spec, self._backend, max_batch=self._batch,
                                       cache_dir=self._cache_dir, threads=self._threads,
                                       check=self._check)
        return self

    def denoise(self, hu: np.ndarray, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
        """Denoise a slice ``(y, x)`` or a volume ``(z, y, x)`` in HU: float32 HU, same shape.

        ``spacing_mm``: the array's voxel spacing, only checked (the model runs on the slice's
        own grid). Raises :class:`~engines.errors.InputContractError` for a bad array (wrong
        rank, non-real dtype, NaN or infinite voxels).
        """
        return self._denoise(_checked_volume(hu, spacing_mm)).reshape(np.shape(hu))

    def _denoise(self, slices: np.ndarray) -> np.ndarray:
        engine = self.start()._engine
        assert engine is not None
        out = np.empty_like(slices)
        for z in range(0, slices.shape[0], self._batch):
            out[z:z + self._batch] = denoise_slices(engine, slices[z:z + self._batch],
                                                    tile=self._tile, margin=self._margin,
                                                    batch=self._batch)
        return out

    def close(self) -> None:
        """Release the engine. Safe to call more than once."""
        self._closed = True
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> CtDenoiser:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def denoise_volume(hu: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                   model: str = SERVED_MODEL, backend: str = "auto", batch: int = 8,
                   cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Denoise a slice ``(y, x)`` or volume ``(z, y, x)`` in HU with CT model ``model``: float32
    HU of the same shape. Loads the engine for this call; use :class:`CtDenoiser` for many."""
    slices = _checked_volume(hu, spacing_mm)  # refused before anything is loaded
    with CtDenoiser(model, backend=backend, batch=batch, cache_dir=cache_dir) as denoiser:
        return denoiser._denoise(slices).reshape(np.shape(hu))
