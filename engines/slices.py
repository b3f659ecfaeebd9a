"""Serving 2-D slices of any size on an engine with a fixed ``(1, T, T)`` item (T = the spec's
tile), for the volume paths (CT, PET): the value units, the tiling, and the denoiser that a
notebook, a batch job or a Ray actor holds.

Units (:class:`SliceUnits`): a model sees ``x = (v + offset) / scale``. CT's scale is fixed (HU
to ``(HU + 1000) / 1000``); PET's is each slice's own (the mean of its positive voxels), since
activity concentrations span decades between scans, tracers and injected doses.

Tiling, per axis of a slice of ``L`` pixels:

- ``L <= T``: one tile, the slice centred in it and padded with its edge values (a slice of
  exactly ``T`` goes in untouched, the common 512² CT case);
- ``L > T``: tiles every ``S = T - 2 * margin`` pixels (the last one moved back to end at the
  slice's edge), the slice edge-padded by ``margin``; of each tile only its centre ``S`` pixels
  are kept, so each kept pixel saw at least ``margin`` pixels of real context on every side
  (RED-CNN's receptive radius is 20 px, so a margin of 20 or more makes its tiling exact).

:func:`cut_tiles` and :func:`stitch_tiles` are the two halves (a service batches the tiles of
many slices on one engine between them); :func:`denoise_slices` is both around a model call;
:class:`SliceDenoiser` holds a loaded engine for many volumes. Numpy only until an engine loads.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from engines.errors import ConfigError, InputContractError

if TYPE_CHECKING:
    from engines.engine import Engine
    from engines.spec import ModelSpec

__all__ = [
    "AxisPlan", "Infer", "SliceDenoiser", "SliceUnits", "TilePlan", "axis_plan", "checked_slices",
    "cut_tiles", "denoise_slices", "stitch_tiles",
]

logger = logging.getLogger(__name__)

#: A model as a function: float32 ``(B, 1, T, T)`` -> float32 ``(B, 1, T, T)`` (an Engine).
Infer = Callable[[np.ndarray], np.ndarray]

_MIN_SIDE_PX = 8


@dataclass(frozen=True, kw_only=True)
class SliceUnits:
    """A modality's values in a model's units: ``x = (v + offset) / scale``.

    ``scale=None``: each slice's own scale, the mean of its positive values (1 for a slice with
    none), so a model sees the same range whatever the activity; ``unit`` names ``v``'s unit
    (for messages).
    """

    unit: str
    offset: float = 0.0
    scale: float | None = None

    def scale_for(self, values: np.ndarray) -> float:
        """The scale of one slice ``values``."""
        if self.scale is not None:
            return self.scale
        positive = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        mean = float(positive.mean()) if positive.size else 0.0
        return mean if mean > 0.0 and math.isfinite(mean) else 1.0

    def to_model(self, values: np.ndarray, scale: float | None = None) -> np.ndarray:
        """``values`` in the model's units, float32 (``scale``: default :meth:`scale_for`)."""
        s = self.scale_for(values) if scale is None else scale
        return (np.asarray(values, dtype=np.float32) + np.float32(self.offset)) / np.float32(s)

    def from_model(self, x: np.ndarray, scale: float | None = None) -> np.ndarray:
        """The model's units back to values, float32 (``scale``: the one :meth:`to_model`
        used; default the fixed scale)."""
        s = self.scale if scale is None else scale
        if s is None:
            raise ValueError(f"{self.unit}: per-slice units need the slice's scale back")
        return np.asarray(x, dtype=np.float32) * np.float32(s) - np.float32(self.offset)


@dataclass(frozen=True, kw_only=True)
class AxisPlan:
    """How one axis of ``length`` pixels maps onto tiles of ``tile`` pixels.

    The padded axis is ``pad_before + length + pad_after`` long; tile ``j`` covers padded
    ``[starts[j], starts[j] + tile)`` and its pixels ``[keep, keep + kept)`` land at slice
    ``[starts[j] + keep - pad_before, ...)``.
    """

    length: int
    tile: int
    pad_before: int
    pad_after: int
    starts: tuple[int, ...]
    keep: int
    kept: int


def axis_plan(length: int, tile: int, margin: int) -> AxisPlan:
    """The tiling of one axis (see the module docstring). ``0 <= 2 * margin < tile``."""
    if length < 1 or tile < 1 or margin < 0 or 2 * margin >= tile:
        raise ValueError(f"bad tiling: length {length}, tile {tile}, margin {margin}")
    if length <= tile:
        before = (tile - length) // 2
        return AxisPlan(length=length, tile=tile, pad_before=before,
                        pad_after=tile - length - before, starts=(0,), keep=before, kept=length)
    stride = tile - 2 * margin
    n = math.ceil(length / stride)
    starts = tuple(min(j * stride, length - stride) for j in range(n))
    return AxisPlan(length=length, tile=tile, pad_before=margin, pad_after=margin,
                    starts=starts, keep=margin, kept=stride)


@dataclass(frozen=True, kw_only=True)
class TilePlan:
    """Where the tiles of one slice go back (:func:`cut_tiles`, :func:`stitch_tiles`)."""

    rows: AxisPlan
    cols: AxisPlan
    units: SliceUnits
    scale: float

    @property
    def origins(self) -> list[tuple[int, int]]:
        """The padded-slice corner of each tile, in tile order."""
        return [(r, c) for r in self.rows.starts for c in self.cols.starts]


def cut_tiles(values: np.ndarray, *, tile: int, margin: int,
              units: SliceUnits) -> tuple[np.ndarray, TilePlan]:
    """The engine items of one slice ``(H, W)`` in ``units``: tiles float32
    ``(n, 1, tile, tile)`` in the model's units, and the plan to stitch their outputs back."""
    rows, cols = axis_plan(values.shape[0], tile, margin), axis_plan(values.shape[1], tile, margin)
    scale = units.scale_for(values)
    padded = np.pad(units.to_model(values, scale), ((rows.pad_before, rows.pad_after),
                                                    (cols.pad_before, cols.pad_after)),
                    mode="edge")
    plan = TilePlan(rows=rows, cols=cols, units=units, scale=scale)
    tiles = np.stack([padded[r:r + tile, c:c + tile] for r, c in plan.origins])[:, None]
    return np.ascontiguousarray(tiles), plan


def stitch_tiles(outputs: np.ndarray, plan: TilePlan) -> np.ndarray:
    """One slice float32 ``(H, W)`` in the plan's units from the engine's outputs
    ``(n, 1, tile, tile)`` for the tiles of ``plan``."""
    rows, cols = plan.rows, plan.cols
    out = np.empty((rows.length, cols.length), dtype=np.float32)
    for (r, c), y in zip(plan.origins, outputs[:, 0], strict=True):
        r0, c0 = r + rows.keep - rows.pad_before, c + cols.keep - cols.pad_before
        out[r0:r0 + rows.kept, c0:c0 + cols.kept] = y[rows.keep:rows.keep + rows.kept,
                                                      cols.keep:cols.keep + cols.kept]
    return plan.units.from_model(out, plan.scale)


def denoise_slices(infer: Infer, values: np.ndarray, *, tile: int, margin: int, batch: int,
                   units: SliceUnits) -> np.ndarray:
    """Run ``infer`` over slices ``values`` float ``(n, H, W)`` in ``units``, ``batch`` tiles at
    a time: the outputs float32 ``(n, H, W)``. The caller checks the values are finite."""
    if values.ndim != 3:
        raise ValueError(f"expected slices (n, H, W), got shape {values.shape}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    cut = [cut_tiles(s, tile=tile, margin=margin, units=units) for s in values]
    tiles = np.concatenate([t for t, _ in cut])
    outputs = np.concatenate([infer(tiles[i:i + batch]) for i in range(0, len(tiles), batch)])
    out = np.empty(values.shape, dtype=np.float32)
    first = 0
    for k, (t, plan) in enumerate(cut):
        out[k] = stitch_tiles(outputs[first:first + len(t)], plan)
        first += len(t)
    return out


def checked_slices(values: object, spacing_mm: Sequence[float] | None, *, what: str,
                   pixel_mm_range: tuple[float, float] | None = None) -> np.ndarray:
    """``values`` as float32 ``(n, H, W)`` slices (a 2-D slice becomes ``n = 1``), or
    :class:`~engines.errors.InputContractError` naming what is wrong (``what``: the caller, e.g.
    "ct denoise"). ``pixel_mm_range``: in-plane pixel sizes beyond which a warning says the
    model is far from its training."""
    if not isinstance(values, np.ndarray):
        raise InputContractError(f"{what}: expected a numpy array, got {type(values).__name__}")
    if values.dtype.kind not in "fiu":
        raise InputContractError(f"{what}: values must be real numbers, got dtype {values.dtype}")
    if values.ndim not in (2, 3):
        raise InputContractError(
            f"{what}: expected a slice (y, x) or a volume (z, y, x), got shape {values.shape}")
    if min(values.shape[-2:]) < _MIN_SIDE_PX or (values.ndim == 3 and values.shape[0] < 1):
        raise InputContractError(f"{what}: slices must be at least {_MIN_SIDE_PX}² and the "
                                 f"volume non-empty, got shape {values.shape}")
    bad = int(np.count_nonzero(~np.isfinite(values))) if values.dtype.kind == "f" else 0
    if bad:
        raise InputContractError(
            f"{what}: {bad} NaN or infinite voxels in a volume of shape {values.shape}")
    if spacing_mm is not None:
        spacing = [float(s) for s in spacing_mm]
        if len(spacing) != values.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise InputContractError(
                f"{what}: spacing_mm must be {values.ndim} finite positive values, "
                f"got {spacing_mm!r}")
        if pixel_mm_range is not None:
            lo, hi = pixel_mm_range
            if not all(lo <= s <= hi for s in spacing[-2:]):
                logger.warning("%s: in-plane pixels of %s mm, outside the %s-%s mm the model "
                               "was trained and tested on", what, spacing[-2:], lo, hi)
    slices = values.astype(np.float32, copy=False)
    return slices[None] if slices.ndim == 2 else slices


class SliceDenoiser:
    """One 2-D model on one engine, for many slices and volumes of one modality.

    ``spec``: the model (an item ``(1, T, T)``); ``units``: the modality's values in the model's
    units; ``what``: the name errors and warnings begin with; ``pixel_mm_range``: see
    :func:`checked_slices`. ``backend``/``cache_dir``/``threads``: those of
    :func:`~engines.engine.load_engine`; ``batch``: engine items per call (its max batch);
    ``check``: run the engine's accuracy gate against eager at load. The constructor validates
    and loads nothing; :meth:`start` (or the first :meth:`denoise`, or ``with``) loads the
    engine; :meth:`close` releases it (safe twice). Not thread-safe: one per thread or actor.
    """

    def __init__(self, spec: ModelSpec, *, units: SliceUnits, what: str,
                 pixel_mm_range: tuple[float, float] | None = None, backend: str = "auto",
                 batch: int = 8, cache_dir: str | os.PathLike[str] | None = None,
                 threads: int | None = None, check: bool = True) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"{what}: batch must be an int >= 1, got {batch!r}")
        tile = int(spec.input_shape[-1])
        if tuple(spec.input_shape) != (1, tile, tile):
            raise ConfigError(f"{spec.name}: expected a (1, T, T) item, got {spec.input_shape}")
        self._spec = spec
        self._units = units
        self._what = what
        self._pixel_mm_range = pixel_mm_range
        self._backend = backend
        self._batch = batch
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._threads = threads
        self._check = check
        self._tile = tile
        self._margin = min(int(spec.extra.get("tile_margin_px", 0)), tile // 4)
        self._engine: Engine | None = None
        self._closed = False

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def engine(self) -> Engine | None:
        """The loaded engine (``None`` before :meth:`start`)."""
        return self._engine

    def start(self) -> SliceDenoiser:
        """Load the engine (once). Raises what :func:`~engines.engine.load_engine` raises."""
        if self._closed:
            raise ConfigError(f"{self._spec.name}: the denoiser is closed")
        if self._engine is None:
            from engines.engine import load_engine

            self._engine = load_engine(self._spec, self._backend, max_batch=self._batch,
                                       cache_dir=self._cache_dir, threads=self._threads,
                                       check=self._check)
        return self

    def check(self, values: object, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
        """``values`` as float32 slices ``(n, H, W)``, or InputContractError (loads nothing)."""
        return checked_slices(values, spacing_mm, what=self._what,
                              pixel_mm_range=self._pixel_mm_range)

    def denoise(self, values: np.ndarray,
                spacing_mm: Sequence[float] | None = None) -> np.ndarray:
        """Denoise a slice ``(y, x)`` or a volume ``(z, y, x)``: float32, same shape and unit.

        ``spacing_mm``: the array's voxel spacing, only checked (the model runs on the slice's
        own grid). Raises :class:`~engines.errors.InputContractError` for a bad array (wrong
        rank, non-real dtype, NaN or infinite voxels).
        """
        return self.denoise_slices(self.check(values, spacing_mm)).reshape(np.shape(values))

    def denoise_slices(self, slices: np.ndarray) -> np.ndarray:
        """Denoise checked slices float32 ``(n, H, W)`` (see :meth:`check`)."""
        engine = self.start()._engine
        assert engine is not None
        out = np.empty_like(slices)
        for z in range(0, slices.shape[0], self._batch):
            out[z:z + self._batch] = denoise_slices(engine, slices[z:z + self._batch],
                                                    tile=self._tile, margin=self._margin,
                                                    batch=self._batch, units=self._units)
        return out

    def close(self) -> None:
        """Release the engine. Safe to call more than once."""
        self._closed = True
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> SliceDenoiser:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
