"""Peak heads on the ResNet+UNet trunk: count and place overlapping peaks the way an object
detector counts overlapping objects (CenterNet, Zhou et al. 2019, in 1D; cf. Kensert 2022 for
chromatograms).

The trunk of :class:`engines.roi.resnet_unet.RoiResNetUNet` ends in a 1x1 convolution with
:data:`~engines.roi.peak_decode.N_HEADS` output channels instead of one: the ROI logit, a centre
heatmap, a sub-sample offset, the log width and the height of a peak (the table is in
:mod:`engines.roi.peak_decode`).

Loss: the penalty-reduced focal loss of CenterNet on the heatmap (alpha 2, beta 4, normalised
by the number of peaks), L1 on offset / log width / height at the centre samples only, and the
segmenters' BCE on the ROI channel.

Here the model and its loss (torch); the targets and the decoding are numpy only, in
:mod:`engines.roi.peak_decode`, so that serving a compiled engine needs no torch.
"""

from __future__ import annotations

import torch
from torch import nn

from engines.roi.blocks import ResidualBlock
from engines.roi.peak_decode import N_HEADS
from engines.roi.unet import UNET_CHANNELS, RoiUNet

__all__ = ["PEAK_CHANNELS", "RoiPeakNet", "peak_loss"]

# Twice the segmenters' widths: at the segmenters' own widths the heads gave peak F1 0.919 (vs
# 0.936) on 1,000 test spectra after the same 3,000 steps; ~2.8x the CPU time per spectrum.
PEAK_CHANNELS: tuple[int, ...] = tuple(2 * c for c in UNET_CHANNELS)
_FOCAL_ALPHA = 2.0
_FOCAL_BETA = 4.0


class RoiPeakNet(RoiUNet):
    """The ResNet+UNet trunk with the five per-sample heads of the module docstring.

    Input (B, 1, L) float32 in [0, 1], L a multiple of 16 -> output (B, 5, L) float32.
    """

    def __init__(self, channels: tuple[int, ...] = PEAK_CHANNELS, kernel: int = 3) -> None:
        super().__init__(channels, kernel, block=ResidualBlock)
        head = nn.Conv1d(channels[0], N_HEADS, 1)
        # CenterNet's prior: start the heatmap near p = 0.01 so the focal loss is not swamped
        assert head.bias is not None
        with torch.no_grad():
            head.bias.zero_()
            head.bias[1] = -4.6
        self.head = head


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


