"""1D ResNet ROI segmenter: residual blocks at full resolution.

Input (B, 1, 512) float32 spectrum in [0, 1] -> output (B, 1, 512) per-sample ROI logits.
Same stem, depth, kernel and dilations as :class:`engines.roi.cnn.RoiCnn` (each pair of its
layers becomes one residual block), so the two differ only by the shortcuts.
"""

from __future__ import annotations

import torch
from torch import nn

from engines.roi.blocks import ConvBnRelu, ResidualBlock

__all__ = ["RoiResNet"]


class RoiResNet(nn.Module):
    """ResNet: stem, ``len(dilations)`` residual blocks (two convs each), 1x1 head."""

    def __init__(
        self, channels: int = 24, kernel: int = 7, dilations: tuple[int, ...] = (1, 2, 4, 8)
    ) -> None:
        super().__init__()
        self.stem = ConvBnRelu(1, channels, kernel)
        self.body = nn.Sequential(
            *(ResidualBlock(channels, channels, kernel, d) for d in dilations)
        )
        self.head = nn.Conv1d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))
