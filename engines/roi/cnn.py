"""Plain 1D CNN ROI segmenter: a stack of conv-BN-ReLU layers at full resolution.

Input (B, 1, 512) float32 spectrum in [0, 1] -> output (B, 1, 512) per-sample ROI logits.
Dilations grow along the stack so its receptive field (~250 samples) is comparable to the UNets'
and the comparison is about architecture, not field of view. Works for any length.
"""

from __future__ import annotations

import torch
from torch import nn

from engines.roi.blocks import ConvBnRelu

__all__ = ["RoiCnn"]


class RoiCnn(nn.Module):
    """Plain CNN: stem, ``len(dilations)`` conv-BN-ReLU layers, 1x1 head."""

    def __init__(
        self,
        channels: int = 24,
        kernel: int = 7,
        dilations: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 8, 8),
    ) -> None:
        super().__init__()
        self.stem = ConvBnRelu(1, channels, kernel)
        self.body = nn.Sequential(*(ConvBnRelu(channels, channels, kernel, d) for d in dilations))
        self.head = nn.Conv1d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))
