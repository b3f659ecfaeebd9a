"""Blind-spot masking for self-supervised denoising (Noise2Void and its variants), numpy only.

A network that sees a pixel cannot be trained to predict that pixel's noisy value without
learning the identity; Noise2Void hides it. For each patch, about ``fraction`` of the pixels
(careamics' default 0.2 %) are chosen, one at a random place in each cell of a grid (stratified,
so they spread over the patch), and their input values are replaced; the loss is taken at
those pixels only, against their original noisy values.

Replacement (:class:`Masking`):

- ``"uniform"`` (N2V): the value of a random other pixel of the ``window_px`` x ``window_px``
  window round it (careamics: 11 x 11);
- ``"median"`` (N2V2): the median of that window without its centre;
- ``struct_px > 0`` (for spatially correlated noise, after structN2V): every pixel within
  ``struct_px`` of a chosen one (a square of side ``2 * struct_px + 1``) gets the value of a
  random pixel of the window outside that square, so the neighbours whose noise is correlated
  with the centre's cannot give its noise away either. Without it, OSEM's correlated noise
  leaks through the neighbours and the network learns part of it back.

Replacement values are always taken from the original patch, from outside the chosen pixel's
own square, so the inputs there never hold the value (or, with ``struct_px``, any value of the
square) that the blind spot hides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Masking", "mask_batch"]

Replace = Literal["uniform", "median"]


@dataclass(frozen=True, kw_only=True)
class Masking:
    """How pixels are hidden (see the module docstring)."""

    fraction: float = 0.002
    window_px: int = 11
    replace: Replace = "uniform"
    struct_px: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 0.25:
            raise ValueError(f"fraction must be in (0, 0.25], got {self.fraction}")
        if self.window_px < 3 or self.window_px % 2 == 0:
            raise ValueError(f"window_px must be odd and >= 3, got {self.window_px}")
        if self.replace not in ("uniform", "median"):
            raise ValueError(f"replace must be 'uniform' or 'median', got {self.replace!r}")
        if not 0 <= self.struct_px < self.window_px // 2:
            raise ValueError(f"struct_px must be in [0, {self.window_px // 2}), "
                             f"got {self.struct_px}")

    @property
    def cell_px(self) -> int:
        """The grid cell that holds one chosen pixel."""
        return max(1, round(1.0 / math.sqrt(self.fraction)))


def _offsets(half: int, struct: int) -> np.ndarray:
    """Window offsets ``(k, 2)`` outside the centre square of half-side ``struct``."""
    d = np.arange(-half, half + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    keep = (np.abs(dy) > struct) | (np.abs(dx) > struct)
    return np.stack([dy[keep], dx[keep]], axis=1)


def mask_batch(patches: np.ndarray, masking: Masking,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hide pixels of ``patches`` float32 ``(B, H, W)``: the network's inputs (a copy, masked)
    and the bool mask ``(B, H, W)`` of the chosen pixels, where the loss is taken."""
    b, h, w = patches.shape
    half, s, cell = masking.window_px // 2, masking.struct_px, masking.cell_px
    inputs = patches.copy()
    chosen = np.zeros(patches.shape, dtype=bool)
    # One pixel per grid cell (cells cut at the patch's edge are used if the pixel lands inside).
    gy, gx = np.meshgrid(np.arange(0, h, cell), np.arange(0, w, cell), indexing="ij")
    n = gy.size
    ys = (gy.ravel()[None] + rng.integers(0, cell, (b, n)))
    xs = (gx.ravel()[None] + rng.integers(0, cell, (b, n)))
    bs = np.repeat(np.arange(b), n).reshape(b, n)
    inside = (ys < h) & (xs < w)
    bs, ys, xs = bs[inside], ys[inside], xs[inside]
    chosen[bs, ys, xs] = True
    offsets = _offsets(half, s)
    # The pixels whose inputs change: each chosen pixel's square of half-side s.
    d = np.arange(-s, s + 1)
    sy, sx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    tb = np.repeat(bs, sy.size)
    ty = np.clip(np.repeat(ys, sy.size) + np.tile(sy, ys.size), 0, h - 1)
    tx = np.clip(np.repeat(xs, sx.size) + np.tile(sx, xs.size), 0, w - 1)
    cy, cx = np.repeat(ys, sy.size), np.repeat(xs, sx.size)  # the square's centre
    if masking.replace == "uniform":
        pick = offsets[rng.integers(0, len(offsets), ty.size)]
        vy = np.clip(cy + pick[:, 0], 0, h - 1)
        vx = np.clip(cx + pick[:, 1], 0, w - 1)
        # Clipping at the patch edge can land back inside the square: reflect such picks.
        back = (np.abs(vy - cy) <= s) & (np.abs(vx - cx) <= s)
        vy[back] = np.clip(cy[back] - pick[back, 0], 0, h - 1)
        vx[back] = np.clip(cx[back] - pick[back, 1], 0, w - 1)
        inputs[tb, ty, tx] = patches[tb, vy, vx]
    else:
        wy = np.clip(cy[:, None] + offsets[None, :, 0], 0, h - 1)
        wx = np.clip(cx[:, None] + offsets[None, :, 1], 0, w - 1)
        inside_sq = (np.abs(wy - cy[:, None]) <= s) & (np.abs(wx - cx[:, None]) <= s)
        values = np.where(inside_sq, np.nan, patches[tb[:, None], wy, wx])
        inputs[tb, ty, tx] = np.nanmedian(values, axis=1)
    return inputs, chosen
