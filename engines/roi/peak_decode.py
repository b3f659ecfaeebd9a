"""The peak heads' outputs: their layout, their training targets and their decoding into peaks.

The model (:class:`engines.roi.peak_heads.RoiPeakNet`) ends in a 1x1 convolution with
:data:`N_HEADS` output channels, per sample:

====  ============  ===========================================================================
 ch    name          meaning (targets at a peak's centre sample ``k = round(centre)``)
====  ============  ===========================================================================
 0     ``roi``       ROI logit, as the segmenters' single output (the paper's output; kept)
 1     ``centre``    centre heatmap logit; target ``exp(-(i - k)^2 / 2 sigma^2)``, 1 at ``k``
 2     ``offset``    sub-sample offset ``centre - k`` in [-0.5, 0.5]
 3     ``width``     ``log`` of the peak's support width in samples
 4     ``height``    apex height above the background, spectrum units ([0, 1] input)
====  ============  ===========================================================================

Read-out (:func:`decode_peaks`): a sample is a peak when its heatmap probability is a local
maximum over ``nms_samples`` neighbours and above ``threshold``; its centre is ``k + offset``.
The joint fit of :mod:`engines.roi.peak_fit` refines these starts.

Numpy only: a worker serving a compiled engine reads the heads without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "HEAD_NAMES",
    "HEATMAP_SIGMA_SAMPLES",
    "HEATMAP_THRESHOLD",
    "N_HEADS",
    "PEAK_START_DTYPE",
    "decode_peaks",
    "peak_targets",
]

HEAD_NAMES = ("roi", "centre", "offset", "width", "height")
N_HEADS = len(HEAD_NAMES)
# Gaussian heatmap spread: one sample keeps two peaks whose centres are 3 samples apart as two
# maxima, while neighbours of a centre still get a reduced penalty.
HEATMAP_SIGMA_SAMPLES = 1.0
# Heatmap probability that makes a peak. On 1,000 paper-protocol test spectra (3,000-step
# model) F1 was 0.934 / 0.936 / 0.932 at 0.3 / 0.4 / 0.5.
HEATMAP_THRESHOLD = 0.4


def peak_targets(
    peaks: Sequence[np.ndarray], roi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for a batch.

    ``peaks``: per spectrum a structured array with fields ``center``, ``width``, ``height``
    (as :data:`devices.spectra_sim.PEAK_DTYPE`); ``roi``: (B, L) bool.
    Returns ``dense`` (B, 2, L) float32 (ROI mask, heatmap), ``regress`` (B, 3, L) float32
    (offset, log width, height; meaningful at centres only) and ``centres`` (B, L) float32
    (1 at each peak's centre sample, else 0).
    """
    b, length = roi.shape
    dense = np.zeros((b, 2, length), np.float32)
    regress = np.zeros((b, 3, length), np.float32)
    centres = np.zeros((b, length), np.float32)
    dense[:, 0] = roi
    i = np.arange(length, dtype=np.float64)
    for s, p in enumerate(peaks):
        if len(p) == 0:
            continue
        k = np.clip(np.floor(p["center"] + 0.5).astype(np.int64), 0, length - 1)
        blobs = np.exp(-((i[None, :] - k[:, None]) ** 2) / (2.0 * HEATMAP_SIGMA_SAMPLES**2))
        dense[s, 1] = blobs.max(axis=0)
        centres[s, k] = 1.0
        regress[s, 0, k] = p["center"] - k
        regress[s, 1, k] = np.log(np.maximum(p["width"], 1.0))
        regress[s, 2, k] = p["height"]
    return dense, regress, centres


PEAK_START_DTYPE = np.dtype(
    [
        ("index", np.float64),  # sub-sample centre, samples
        ("height", np.float64),  # apex above the background, spectrum units
        ("width", np.float64),  # support width, samples
        ("area", np.float64),  # height x (width + 1) / 2: a Hann peak's, spectrum units x samples
        ("score", np.float64),  # heatmap probability at the centre sample
    ]
)


def decode_peaks(
    heads: np.ndarray, *, threshold: float = HEATMAP_THRESHOLD, nms_samples: int = 3
) -> np.ndarray:
    """Peaks of one spectrum from its head outputs ``heads`` (5, L) float32.

    Returns a structured array of dtype :data:`PEAK_START_DTYPE`, sorted by ``index``.
    """
    if heads.ndim != 2 or heads.shape[0] != N_HEADS:
        raise ValueError(f"heads must be ({N_HEADS}, L), got {heads.shape}")
    length = heads.shape[1]
    prob = 1.0 / (1.0 + np.exp(-heads[1].astype(np.float64)))
    half = nms_samples // 2
    padded = np.pad(prob, half, constant_values=-1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, nms_samples)
    keep = np.flatnonzero((prob >= windows.max(axis=1)) & (prob >= threshold))
    out = np.empty(keep.size, PEAK_START_DTYPE)
    out["index"] = np.clip(keep + heads[2, keep], 0.0, length - 1.0)
    out["width"] = np.exp(heads[3, keep])
    out["height"] = heads[4, keep]
    out["area"] = out["height"] * (out["width"] + 1.0) / 2.0
    out["score"] = prob[keep]
    return out
