"""Shared 1D building blocks of the ROI segmenters.

Only plain ops (Conv1d, BatchNorm1d, ReLU, MaxPool1d, ConvTranspose1d, add, concat) so every
model exports to ONNX / TensorRT unchanged and runs fast on CPU at batch 1. Tensors are
(batch, channels, samples), float32.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBnRelu", "Down", "ResidualBlock", "Up", "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConvBnRelu(nn.Sequential):
    """Conv1d (same padding, no bias: BatchNorm follows) -> BatchNorm1d -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv1d(
                c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False
            ),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two conv-BN layers plus a shortcut (identity, or 1x1 conv-BN when channels change).

    ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` — the basic block of He et al., 1D.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class Down(nn.MaxPool1d):
    """Halve the length (max-pool, kernel 2, stride 2)."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)


class Up(nn.ConvTranspose1d):
    """Double the length with a learned transposed convolution (kernel 2, stride 2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, kernel_size=2, stride=2)
