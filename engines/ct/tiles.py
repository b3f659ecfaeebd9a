"""Serving slices of any size on an engine with a fixed ``(1, T, T)`` item (T = the spec's tile).

Per axis of a slice of ``L`` pixels:

- ``L <= T``: one tile, the slice centred in it and padded with its edge values (a slice of
  exactly ``T`` goes in untouched, the common 512² case);
- ``L > T``: tiles every ``S = T - 2 * margin`` pixels (the last one moved back to end at the
  slice's edge), the slice edge-padded by ``margin``; of each tile only its centre ``S`` pixels
  are kept, so each kept pixel saw at least ``margin`` pixels of real context on every side
  (RED-CNN's receptive radius is 20 px, so a margin of 20 or more makes its tiling exact).

Values go in and out in HU; :func:`to_model` / :func:`to_hu` are the model's normalisation
(:data:`engines.ct.specs.HU_OFFSET`, :data:`~engines.ct.specs.HU_SCALE`).

:func:`cut_tiles` and :func:`stitch_tiles` are the two halves (a service batches the tiles of
many slices on one engine between them); :func:`denoise_slices` is both around a model call.
Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.ct.specs import HU_OFFSET, HU_SCALE

__all__ = [
    "AxisPlan", "Infer", "TilePlan", "axis_plan", "cut_tiles", "denoise_slices", "stitch_tiles",
    "to_hu", "to_model",
]

#: A model as a function: float32 ``(B, 1, T, T)`` -> float32 ``(B, 1, T, T)`` (an Engine).
Infer = Callable[[np.ndarray], np.ndarray]


def to_model(hu: np.ndarray) -> np.ndarray:
    """HU to the models' units, float32: ``(HU + 1000) / 1000``."""
    return ((np.asarray(hu, dtype=np.float32) + np.float32(HU_OFFSET)) / np.float32(HU_SCALE))


def to_hu(x: np.ndarray) -> np.ndarray:
    """The models' units back to HU, float32."""
    return np.asarray(x, dtype=np.float32) * np.float32(HU_SCALE) - np.float32(HU_OFFSET)


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

    @property
    def origins(self) -> list[tuple[int, int]]:
        """The padded-slice corner of each tile, in tile order."""
        return [(r, c) for r in self.rows.starts for c in self.cols.starts]


def cut_tiles(hu: np.ndarray, *, tile: int, margin: int) -> tuple[np.ndarray, TilePlan]:
    """The engine items of one slice ``(H, W)`` in HU: tiles float32 ``(n, 1, tile, tile)`` in
    the models' units, and the plan to stitch their outputs back."""
    rows, cols = axis_plan(hu.shape[0], tile, margin), axis_plan(hu.shape[1], tile, margin)
    padded = np.pad(to_model(hu), ((rows.pad_before, rows.pad_after),
                                   (cols.pad_before, cols.pad_after)), mode="edge")
    plan = TilePlan(rows=rows, cols=cols)
    tiles = np.stack([padded[r:r + tile, c:c + tile] for r, c in plan.origins])[:, None]
    return np.ascontiguousarray(tiles), plan


def stitch_tiles(outputs: np.ndarray, plan: TilePlan) -> np.ndarray:
    """One slice float32 ``(H, W)`` in HU from the engine's outputs ``(n, 1, tile, tile)`` for
    the tiles of ``plan``."""
    rows, cols = plan.rows, plan.cols
    out = np.empty((rows.length, cols.length), dtype=np.float32)
    for (r, c), y in zip(plan.origins, outputs[:, 0], strict=True):
        r0, c0 = r + rows.keep - rows.pad_before, c + cols.keep - cols.pad_before
        out[r0:r0 + rows.kept, c0:c0 + cols.kept] = y[rows.keep:rows.keep + rows.kept,
                                                      cols.keep:cols.keep + cols.kept]
    return to_hu(out)


def denoise_slices(infer: Infer, hu: np.ndarray, *, tile: int, margin: int,
                   batch: int) -> np.ndarray:
    """Run ``infer`` over slices ``hu`` float ``(n, H, W)`` in HU, ``batch`` tiles at a time:
    the outputs float32 ``(n, H, W)`` in HU. The caller checks the values are finite."""
    if hu.ndim != 3:
        raise ValueError(f"expected slices (n, H, W), got shape {hu.shape}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    cut = [cut_tiles(s, tile=tile, margin=margin) for s in hu]
    tiles = np.concatenate([t for t, _ in cut])
    outputs = np.concatenate([infer(tiles[i:i + batch]) for i in range(0, len(tiles), batch)])
    out = np.empty(hu.shape, dtype=np.float32)
    first = 0
    for k, (t, plan) in enumerate(cut):
        out[k] = stitch_tiles(outputs[first:first + len(t)], plan)
        first += len(t)
    return out
