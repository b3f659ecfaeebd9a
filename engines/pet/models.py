"""The PET denoisers (PAPERS.md §2): one 2-D UNet in the shape careamics gives Noise2Void, and
the N2V2 changes to it. ``(B, 1, H, W)`` float32 in and out, in the per-slice units of
:data:`engines.pet.specs.PET_UNITS` (activity / the slice's mean positive activity), ``H, W``
multiples of 4.

:class:`N2vUNet` follows careamics' defaults (the N2V reference implementation, which does not
install beside torch 2.13): depth 2, 32 channels at the top doubling per level, two 3 x 3
convolutions and ReLU per block, a 1 x 1 output convolution, no residual; but no batch norm
by default (``batch_norm=True`` puts it back): measured here, with batch norm the validation
PSNR of a model in eval mode swung by up to 3.5 dB between checkpoints 150 steps apart (its
running statistics follow patches that are now mostly air, now mostly phantom), without it
the curve is smooth; and a model without it treats every slice alike whatever else is in the
batch.
N2V2 (Höck et al. 2022) removes the checkerboard artefacts of plain N2V with two changes,
both options here: ``blur_pool`` (max-blur pooling: a 2 x 2 max at stride 1, then a 3 x 3
binomial blur at stride 2, instead of max pooling) and ``top_skip=False`` (no skip connection
at the full-resolution level). The third N2V2 change, median replacement of masked pixels,
lives in :mod:`engines.pet.masking`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = ["N2vUNet"]


def _block(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    def layer(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, padding=1), *([nn.BatchNorm2d(b)] if norm else []),
                nn.ReLU(inplace=True)]

    return nn.Sequential(*layer(c_in, c_out), *layer(c_out, c_out))


class _MaxBlurPool(nn.Module):
    """Max over 2 x 2 at stride 1, then a binomial 3 x 3 blur at stride 2 (Zhang 2019)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = (k[:, None] * k[None, :]) / 16.0
        self.kernel: torch.Tensor
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
        x = functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return functional.conv2d(x, self.kernel, stride=2, groups=self.channels)


class N2vUNet(nn.Module):
    """careamics' N2V UNet (see the module docstring): ``(B, 1, H, W) -> (B, 1, H, W)``.

    ``depth`` poolings (``H, W`` multiples of ``2**depth``), ``channels`` at the top level;
    ``blur_pool`` / ``top_skip``: the N2V2 changes (``True`` / ``False`` for N2V2);
    ``batch_norm``: careamics' batch norm after each convolution.
    """

    def __init__(self, *, depth: int = 2, channels: int = 32, blur_pool: bool = False,
                 top_skip: bool = True, batch_norm: bool = False) -> None:
        super().__init__()
        widths = [channels * 2 ** level for level in range(depth + 1)]
        self.multiple = 2 ** depth
        self.top_skip = top_skip
        self.down = nn.ModuleList(
            [_block(1 if i == 0 else widths[i - 1], widths[i], batch_norm) for i in range(depth)])
        self.pool = nn.ModuleList(
            [_MaxBlurPool(widths[i]) if blur_pool else nn.MaxPool2d(2) for i in range(depth)])
        self.bottom = _block(widths[depth - 1], widths[depth], batch_norm)
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)])
        self.merge = nn.ModuleList(
            [_block(widths[i] * (1 if i == 0 and not top_skip else 2), widths[i], batch_norm)
             for i in range(depth)])
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down, pool in zip(self.down, self.pool, strict=True):
            x = down(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)
            if i > 0 or self.top_skip:
                x = torch.cat([x, skips[i]], dim=1)
            x = self.merge[i](x)
        return self.out(x)
