"""Peak heads on the ResNet+UNet trunk: count and place overlapping peaks the way an object
detector counts overlapping objects (CenterNet, Zhou et al. 2019, in 1D; cf. Kensert 2022 for
chromatograms).

The trunk of :class:`engines.roi.resnet_unet.RoiResNetUNet` ends in a 1x1 convolution with
:data:`N_HEADS` output channels instead of one, per sample:

====  ============  ===========================================================================
 ch    name          meaning (targets at a peak's centre sample ``k = round(centre)``)
====  ============  ===========================================================================
 0     ``roi``       ROI logit, as the segmenters' single output (the paper's output; kept)
 1     ``centre``    centre heatmap logit; target ``exp(-(i - k)^2 / 2 sigma^2)``, 1 at ``k``
 2     ``offset``    sub-sample offset ``centre - k`` in [-0.5, 0.5]
 3     ``width``     ``log`` of the peak's support width in samples
 4     ``height``    apex height above the background, spectrum units ([0, 1] input)
====  ============  ===========================================================================

Loss: the penalty-reduced focal loss of CenterNet on the heatmap (alpha 2, beta 4, normalised
by the number of peaks), L1 on offset / log width / height at the centre samples only, and the
segmenters' BCE on the ROI channel.

Read-out (:func:`decode_peaks`): a sample is a peak when its heatmap probability is a local
maximum over ``nms_samples`` neighbours and above ``threshold``; its centre is ``k + offset``.
The joint fit of :mod:`engines.roi.peak_fit` refines these starts.

Pure torch for the model and loss, pure numpy for targets and decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engines.roi.blocks import ResidualBlock
from engines.roi.unet import UNET_CHANNELS, RoiUNet

__all__ = [
    "HEAD_NAMES",
    "HEATMAP_SIGMA_SAMPLES",
    "HEATMAP_THRESHOLD",
    "N_HEADS",
    "PEAK_START_DTYPE",
    "RoiPeakNet",
    "decode_peaks",
    "peak_loss",
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
_FOCAL_ALPHA = 2.0
_FOCAL_BETA = 4.0


class RoiPeakNet(RoiUNet):
    """The ResNet+UNet trunk with the five per-sample heads of the module docstring.

    Input (B, 1, L) float32 in [0, 1], L a multiple of 16 -> output (B, 5, L) float32.
    """

    def __init__(self, channels: tuple[int, ...] = UNET_CHANNELS, kernel: int = 3) -> None:
        super().__init__(channels, kernel, block=ResidualBlock)
        head = nn.Conv1d(channels[0], N_HEADS, 1)
        # CenterNet's prior: start the heatmap near p = 0.01 so the focal loss is not swamped
        assert head.bias is not None
        with torch.no_grad():
            head.bias.zero_()
            head.bias[1] = -4.6
        self.head = head


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


def peak_loss(
    out: torch.Tensor, dense: torch.Tensor, regress: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for model output ``out`` (B, 5, L) and :func:`peak_targets`."""
    roi_bce = nn.functional.binary_cross_entropy_with_logits(out[:, 0], dense[:, 0])
    logit = out[:, 1]
    heat = dense[:, 1]
    # log-sigmoid terms are computed from the logit: stable where p is near 0 or 1
    log_p = nn.functional.logsigmoid(logit)
    log_not_p = nn.functional.logsigmoid(-logit)
    p = torch.sigmoid(logit)
    pos = -((1.0 - p) ** _FOCAL_ALPHA) * log_p * centres
    neg = -((1.0 - heat) ** _FOCAL_BETA) * p**_FOCAL_ALPHA * log_not_p * (1.0 - centres)
    n_pos = centres.sum().clamp(min=1.0)
    focal = (pos.sum() + neg.sum()) / n_pos
    reg = (out[:, 2:] - regress).abs() * centres[:, None, :]
    offset, width, height = (reg[:, j].sum() / n_pos for j in range(3))
    total = focal + roi_bce + offset + width + height
    parts = {
        "focal": focal.item(),
        "roi_bce": roi_bce.item(),
        "offset": offset.item(),
        "width": width.item(),
        "height": height.item(),
    }
    return total, parts


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
