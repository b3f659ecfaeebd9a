"""1D ResNet+UNet ROI segmenter — the headline model of the spectral path.

The UNet of :mod:`engines.roi.unet` (same levels, channels, skips) with every block a residual
block with a shortcut (:class:`engines.roi.blocks.ResidualBlock`).
Input (B, 1, L) float32 spectrum in [0, 1], L a multiple of 16 (512 by contract) ->
output (B, 1, L) per-sample ROI logits.
"""

from __future__ import annotations

from engines.roi.blocks import ResidualBlock
from engines.roi.unet import UNET_CHANNELS, RoiUNet

__all__ = ["RoiResNetUNet"]


class RoiResNetUNet(RoiUNet):
    """UNet encoder/decoder with skip connections; every block residual."""

    def __init__(self, channels: tuple[int, ...] = UNET_CHANNELS, kernel: int = 3) -> None:
        super().__init__(channels, kernel, block=ResidualBlock)
