"""Spectra of any length in and out of the ROI models' fixed 512-sample input.

The models are trained on 512-sample spectra min-max normalised to [0, 1]. Two ways to serve
a spectrum of another length ``L``:

- ``"window"`` (tiling, the default): windows of 512 samples at a stride of ``512 - overlap``,
  the last one flush with the end of the spectrum; logits are stitched back either by centre
  crop (each sample takes the logit of the window in which it lies furthest from the edges:
  the cut between two neighbours is the middle of their overlap) or by the mean over the
  windows that cover it. Normalisation is either ``"window"`` (min-max of each window on its
  own, like every training spectrum) or ``"global"`` (min-max of the whole spectrum, then
  sliced). A spectrum shorter than 512 cannot fill a window: with ``short="resample"`` (the
  default) it is stretched to 512 as below, with ``short="pad"`` it is padded to 512 by
  reflection, centred, and the padding is cut off again.
- ``"resample"``: the spectrum is resampled to 512 samples (box-filter average for ``L > 512``
  so narrow peaks are not aliased away, linear interpolation for ``L < 512``), normalised, and
  the 512 logits are interpolated back to ``L`` samples.

Defaults by measurement (ResNet+UNet, paper-protocol peaks at lengths 256-4096, on a stream
kept apart from the report's; the report's ``windowing_vs_resampling`` section re-measures
every variant on each run): tiling keeps the in-distribution ROI loss at 1024-4096 samples
(~0.001-0.002) where resampling squeezes the peaks below the trained widths (ROI loss rising
to ~0.15 at 4096); below 512 samples padding misleads the model near the junction (ROI loss
~0.25 at 256, ~0.05 even at 480) where stretching stays close (~0.003 at 384-480, ~0.03 at
256). Per-window and global normalisation, centre crop and mean, 128 and 256 overlap were
within noise of each other; per-window, centre crop and 128 are the defaults.

Pure numpy. Windows are ``(n, 1, 512)`` float32; logits come back as ``(n, 1, 512)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engines.errors import InputContractError

__all__ = [
    "MAX_LENGTH_SAMPLES",
    "WINDOW_SAMPLES",
    "WindowPlan",
    "check_spectrum",
    "from_windows",
    "to_windows",
]

WINDOW_SAMPLES = 512
MAX_LENGTH_SAMPLES = 1 << 20  # 1,048,576: ~2,900 windows; anything longer is a caller bug

Strategy = Literal["window", "resample"]
Normalisation = Literal["global", "window"]
Stitch = Literal["centre", "mean"]
Short = Literal["resample", "pad"]


@dataclass(frozen=True, kw_only=True)
class WindowPlan:
    """How a spectrum was cut into model windows, to put the logits back together.

    ``length``: samples of the input spectrum. ``starts``: (n,) int64 start sample of each
    window in the padded spectrum (window strategy; a single 0 for resample). ``pad_left``:
    reflected samples before the spectrum (lengths below the window). ``cuts``: (n + 1,) int64
    sample ranges ``[cuts[k], cuts[k+1])`` of the padded spectrum that window ``k`` owns in a
    centre-crop stitch.
    """

    length: int
    strategy: Strategy
    stitch: Stitch
    window: int
    starts: np.ndarray
    pad_left: int
    cuts: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.starts.size)


def check_spectrum(spectrum: object, *, max_length: int = MAX_LENGTH_SAMPLES) -> np.ndarray:
    """Validate a spectrum and return it as a 1-D float64 array: the one check of the spectral
    contract, made where a spectrum enters (a service's stream stage, :meth:`RoiDetector.prepare`);
    everything after it trusts the array.

    Raises :class:`engines.errors.InputContractError` (its ``code`` in brackets) for anything
    that is not a numeric array [``bad_dtype``], 1-D [``bad_shape``], non-empty [``empty``], of
    at most ``max_length`` samples [``too_long``] and finite [``input_contract``].
    """
    if not isinstance(spectrum, np.ndarray):
        raise InputContractError(
            f"spectrum must be a numpy array, got {type(spectrum).__name__}; "
            "wrap it with np.asarray(..., dtype=np.float32)", code="bad_dtype"
        )
    if spectrum.dtype.kind not in "fiu":
        raise InputContractError(
            f"spectrum dtype must be a real integer or float type, got {spectrum.dtype}",
            code="bad_dtype",
        )
    if spectrum.ndim != 1:
        raise InputContractError(
            f"spectrum must be 1-D (samples,), got shape {list(spectrum.shape)}; "
            "send one spectrum per message", code="bad_shape"
        )
    if spectrum.size == 0:
        raise InputContractError("spectrum is empty (0 samples)", code="empty")
    if spectrum.size > max_length:
        raise InputContractError(
            f"spectrum has {spectrum.size} samples, more than the maximum {max_length}",
            code="too_long",
        )
    x = spectrum.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputContractError(
            f"spectrum has {bad} non-finite samples (NaN or Inf); replace or drop them"
        )
    return x


def _minmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Min-max normalise to [0, 1] along ``axis``; a constant stretch becomes all zeros."""
    lo = x.min(axis=axis, keepdims=True)
    span = x.max(axis=axis, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)


def to_windows(
    spectrum: np.ndarray,
    *,
    strategy: Strategy = "window",
    overlap: int = 128,
    normalisation: Normalisation = "window",
    stitch: Stitch = "centre",
    short: Short = "resample",
    window: int = WINDOW_SAMPLES,
) -> tuple[np.ndarray, WindowPlan]:
    """Cut a spectrum ``(L,)`` into model inputs ``(n, 1, window)`` float32 and their plan.

    ``spectrum``: as :func:`check_spectrum` returns it (checked once, where it entered).
    ``overlap``: samples shared by consecutive windows, ``0 <= overlap < window``.
    ``short``: how the window strategy serves ``L < window`` (see module docstring).
    """
    x = np.asarray(spectrum, dtype=np.float64)
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    length = x.size
    if strategy not in ("window", "resample"):
        raise ValueError(f"strategy must be 'window' or 'resample', got {strategy!r}")
    if short not in ("resample", "pad"):
        raise ValueError(f"short must be 'resample' or 'pad', got {short!r}")
    if strategy == "resample" or (length < window and short == "resample"):
        y = _resample_to(x, window)
        plan = WindowPlan(
            length=length,
            strategy="resample",
            stitch=stitch,
            window=window,
            starts=np.zeros(1, np.int64),
            pad_left=0,
            cuts=np.array([0, window], np.int64),
        )
        return _minmax(y)[None, None, :].astype(np.float32), plan
    pad_left = 0
    if length < window:
        pad_left = (window - length) // 2
        widths = (pad_left, window - length - pad_left)
        # reflection keeps the edge region looking like a spectrum; one sample can only repeat
        x = np.pad(x, widths, mode="reflect") if length > 1 else np.pad(x, widths, mode="edge")
    padded = x.size
    stride = window - overlap
    n = 1 + -(-(padded - window) // stride)  # ceil division
    starts = np.minimum(np.arange(n, dtype=np.int64) * stride, padded - window)
    # centre crop: window k owns the samples up to the middle of its overlap with window k+1
    mids = (starts[1:] + starts[:-1] + window) // 2
    cuts = np.concatenate(([0], mids, [padded])).astype(np.int64)
    idx = starts[:, None] + np.arange(window)[None, :]
    if normalisation == "global":
        tiles = _minmax(x)[idx]
    elif normalisation == "window":
        tiles = _minmax(x[idx], axis=1)
    else:
        raise ValueError(f"normalisation must be 'global' or 'window', got {normalisation!r}")
    plan = WindowPlan(
        length=length,
        strategy="window",
        stitch=stitch,
        window=window,
        starts=starts,
        pad_left=pad_left,
        cuts=cuts,
    )
    return tiles[:, None, :].astype(np.float32), plan


def from_windows(logits: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """Stitch model outputs ``(n, 1, window)`` back to per-sample logits ``(L,)`` float32."""
    out = np.asarray(logits)
    expected = (plan.n_windows, 1, plan.window)
    if out.shape != expected:
        raise InputContractError(f"logits have shape {out.shape}, the plan expects {expected}")
    z = out[:, 0, :].astype(np.float64)
    if plan.strategy == "resample":
        return _resample_back(z[0], plan.length).astype(np.float32)
    padded = int(plan.cuts[-1])
    if plan.stitch == "centre":
        full = np.empty(padded, dtype=np.float64)
        for k in range(plan.n_windows):
            a, b = int(plan.cuts[k]), int(plan.cuts[k + 1])
            s = int(plan.starts[k])
            full[a:b] = z[k, a - s : b - s]
    elif plan.stitch == "mean":
        acc = np.zeros(padded)
        cnt = np.zeros(padded)
        idx = plan.starts[:, None] + np.arange(plan.window)[None, :]
        np.add.at(acc, idx.ravel(), z.ravel())
        np.add.at(cnt, idx.ravel(), 1.0)
        full = acc / cnt
    else:
        raise ValueError(f"stitch must be 'centre' or 'mean', got {plan.stitch!r}")
    return full[plan.pad_left : plan.pad_left + plan.length].astype(np.float32)


def _resample_to(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample ``(L,)`` to ``(n_out,)`` samples spanning the same extent.

    Sample ``i`` stands for the unit cell ``[i - 0.5, i + 0.5)``; output sample ``k`` for the
    cell ``[(k) r, (k + 1) r) - 0.5`` with ``r = L / n_out``. Downsampling averages the input
    over each output cell (exact integral of the piecewise-constant signal, a box
    anti-alias filter); upsampling interpolates linearly at the output cell centres.
    """
    length = x.size
    r = length / n_out
    if length >= n_out:
        cum = np.concatenate(([0.0], np.cumsum(x)))  # integral up to cell edge i - 0.5
        edges = np.arange(n_out + 1) * r  # in cell-edge units (0 = left edge of sample 0)
        integ = np.interp(edges, np.arange(length + 1, dtype=np.float64), cum)
        return np.diff(integ) / r
    centres = (np.arange(n_out) + 0.5) * r - 0.5
    return np.interp(centres, np.arange(length, dtype=np.float64), x)


def _resample_back(z: np.ndarray, length: int) -> np.ndarray:
    """Interpolate ``(n,)`` values at output cell centres back onto ``length`` input samples."""
    n = z.size
    r = length / n
    centres = (np.arange(n) + 0.5) * r - 0.5
    return np.interp(np.arange(length, dtype=np.float64), centres, z)
