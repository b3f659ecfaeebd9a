"""The multi-band loss of paper §4, and the plain MAE it is compared with.

Plain MAE on the waveform is dominated by the low band, where speech has most of its energy:
a bottlenecked model learns to low-pass and never reproduces 4-8 kHz. The multi-band loss
splits output and target into K bands with K linear-phase FIR band-pass filters applied as one
K-channel convolution (phase kept), takes the MAE per band, and weights each band by the
inverse of its mean magnitude over the training set, so that every band contributes on the
same scale. Weights are normalised by the full-band mean magnitude, so the loss reads in the
same units as plain MAE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

__all__ = ["BAND_EDGES_HZ", "LOSSES", "MultiBandLoss", "band_filters", "band_weights"]

#: Band edges of the multi-band loss (Hz): 0-1, 1-2, 2-4, 4-6, 6-8 kHz.
BAND_EDGES_HZ: tuple[float, ...] = (0.0, 1000.0, 2000.0, 4000.0, 6000.0, 8000.0)
TAPS = 129
LOSSES = ("mae", "multiband")


def band_filters(fs: int = 16_000, edges: tuple[float, ...] = BAND_EDGES_HZ,
                 taps: int = TAPS) -> np.ndarray:
    """``(K, taps)`` linear-phase FIR filters (Hamming-windowed), one per band."""
    from scipy.signal import firwin

    nyq = fs / 2
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if lo <= 0:
            h = firwin(taps, hi, fs=fs)
        elif hi >= nyq:
            h = firwin(taps, lo, fs=fs, pass_zero=False)
        else:
            h = firwin(taps, [lo, hi], fs=fs, pass_zero=False)
        out.append(h)
    return np.asarray(out, dtype=np.float32)


def band_weights(frames: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Per-band weights from training frames ``(N, T)``: full-band mean |x| / band mean |x|."""
    from scipy.signal import fftconvolve

    x = frames.astype(np.float64)
    mags = np.array([np.abs(fftconvolve(x, h[None, :], mode="same", axes=1)).mean()
                     for h in filters])
    return (np.abs(x).mean() / np.maximum(mags, 1e-12)).astype(np.float32)


class MultiBandLoss(nn.Module):
    """sum_k w_k * mean|band_k(y) - band_k(x)| over ``(B, 1, T)`` batches."""

    filters: torch.Tensor
    weights: torch.Tensor

    def __init__(self, filters: np.ndarray, weights: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("filters", torch.from_numpy(filters)[:, None, :])
        self.register_buffer("weights", torch.from_numpy(weights))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pad = int(self.filters.shape[-1]) // 2
        bands = functional.conv1d(y - x, self.filters, padding=pad)  # linear: band(y) - band(x)
        return (bands.abs().mean(dim=(0, 2)) * self.weights).sum()
