"""The CT denoisers (paper §5): low-dose slice in, normal-dose estimate out.

Both work on normalised HU, ``x = (HU + 1000) / 1000`` (air 0, water 1, cortical bone ~2.5;
:data:`engines.ct.specs.HU_OFFSET`, :data:`~engines.ct.specs.HU_SCALE`), shape
``(B, 1, H, W)`` float32 in and out, and are fully convolutional:

- :class:`RedCnn`: RED-CNN (Chen et al., IEEE TMI 2017): 5 convolutions and 5 transposed
  convolutions, 96 filters of 5 x 5, stride 1, no padding (each convolution trims 2 px per
  side, each transposed convolution gives them back), ReLU, and three residual shortcuts (input
  to output, 2nd conv to 3rd deconv, 4th conv to 1st deconv), the final ReLU after the input's
  shortcut as in the paper; weights initialised N(0, 0.01) as in the paper. Any
  ``H, W >= 21``.
- :class:`ResidualUNet`: MONAI's ``BasicUNet`` (2-D, 4 poolings, LeakyReLU, no normalisation
  layer, so a tile's output does not depend on the rest of the tile) predicting the noise,
  ``y = x - unet(x)``; its last 1 x 1 convolution starts at zero, so the untrained model is the
  identity. ``H, W`` multiples of 16 (the engine wrapper pads, :mod:`engines.slices`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["RedCnn", "ResidualUNet"]


class RedCnn(nn.Module):
    """RED-CNN: ``(B, 1, H, W) -> (B, 1, H, W)`` normalised HU, ``H, W >= 21``."""

    #: Pixels each side a prediction depends on (10 layers of 5 x 5): exact tiles need this margin.
    receptive_radius_px = 20
    #: Sizes the model accepts are multiples of this (any size, given ``>= 21``).
    multiple = 1

    def __init__(self, features: int = 96, kernel: int = 5) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            [nn.Conv2d(1 if i == 0 else features, features, kernel) for i in range(5)]
        )
        self.deconv = nn.ModuleList(
            [nn.ConvTranspose2d(features, 1 if i == 4 else features, kernel) for i in range(5)]
        )
        self.relu = nn.ReLU()
        # The paper's initialisation: weights N(0, 0.01), biases 0. Small weights make the
        # residual branch small, so the untrained network starts near the identity.
        for layer in (*self.conv, *self.deconv):
            nn.init.normal_(layer.weight, mean=0.0, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, d, relu = self.conv, self.deconv, self.relu
        out = relu(c[0](x))
        skip_2 = relu(c[1](out))
        out = relu(c[2](skip_2))
        skip_4 = relu(c[3](out))
        out = relu(c[4](skip_4))
        out = relu(d[0](out) + skip_4)
        out = relu(d[1](out))
        out = relu(d[2](out) + skip_2)
        out = relu(d[3](out))
        return relu(d[4](out) + x)


class ResidualUNet(nn.Module):
    """``x - BasicUNet(x)``: ``(B, 1, H, W) -> (B, 1, H, W)`` normalised HU, ``H, W`` multiples
    of 16. ``features``: BasicUNet's six widths (five encoder levels, then the top decoder)."""

    multiple = 16

    def __init__(self, features: Sequence[int] = (32, 32, 64, 128, 256, 32)) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet  # deferred: MONAI is slow to import

        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            features=tuple(features),
            act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
            norm=None,  # type: ignore[arg-type]  # MONAI accepts None: no normalisation layer
            upsample="deconv",
        )
        # Zero last layer: the untrained model passes the input through (identity at init).
        nn.init.zeros_(self.unet.final_conv.weight)
        nn.init.zeros_(self.unet.final_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.unet(x)
