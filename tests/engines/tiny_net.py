"""The small model the engine and backend tests compile: shared by their test modules."""

from __future__ import annotations

from pathlib import Path

import torch

from engines.spec import ModelSpec

__all__ = ["LENGTH", "TinyNet", "tiny_spec"]

LENGTH = 64  # samples of one item, (1, LENGTH)


class TinyNet(torch.nn.Module):
    """Conv-BN-ReLU-Conv over (B, 1, 64): enough ops for fusion to change the arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 5, padding=2)
        self.bn = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Conv1d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


def tiny_spec(net: TinyNet, weights: Path) -> ModelSpec:
    """The spec of a :class:`TinyNet` with ``net``'s weights, saved at ``weights`` first."""
    torch.save(net.state_dict(), weights)
    return ModelSpec(
        name="tiny",
        build=TinyNet,
        input_shape=(1, LENGTH),
        output_shape=(1, LENGTH),
        weights=weights.name,
        weights_dir=weights.parent,
    )
