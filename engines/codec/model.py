"""The time-domain convolutional speech autoencoder of paper §4, made into a real codec.

Two configurations (:data:`engines.codec.configs.CONFIGS`):

``wideband``  the paper's: 1024-sample frames (64 ms at 16 kHz), bottleneck 4 x 64 = 256 values
              (1/4 of the frame).
``lowdelay``  256-sample frames (16 ms), bottleneck 4 x 16 = 64 values (also 1/4).

Frames overlap by ``overlap`` samples (hop = frame - overlap) and the decoder's frames are
cross-faded there (:func:`~engines.codec.configs.synthesis_window`, sin^2/cos^2 ramps that sum
to one), so frame edges do not click. The algorithmic delay is one frame: a sample is final
once the frame that starts with it has been captured, coded and decoded (64 ms and 16 ms).

Latent: ``tanh`` bounds every value to (-1, 1), then a uniform scalar quantiser of step
``step`` makes integer symbols that are range-coded (:mod:`engines.codec.bitstream`) with a
Laplace model of per-value scale ``exp(log_scale)``. The step sets the bitrate, so one trained
model serves several bitrates: its card lists the step of each calibrated operating point.

Quantisation-aware training (:mod:`engines.codec.train`) draws a step per training frame
(log-uniform over :attr:`~engines.codec.configs.CodecConfig.step_range`), passes the decoder
the rounded latent with a straight-through gradient (it learns to decode exactly what it will
get), and fits the entropy model by maximum likelihood on ``latent + step * U(-1/2, 1/2)``.

``CodecNet(config, role)`` holds the whole model (one state dict, one weights file) and its
``forward`` is the role's half, so the same weights give the encoder engine
(``(B, 1, frame) -> (B, C, L)``) and the decoder engine (``(B, C, L) -> (B, 1, frame)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engines.codec.configs import CONFIGS, CodecConfig

__all__ = ["CodecNet"]


def _res(ch: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv1d(ch, ch, 3, padding=1)
    )


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = _res(ch)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Encoder(nn.Module):
    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        w = cfg.widths
        layers: list[nn.Module] = [nn.Conv1d(1, w[0], 7, padding=3), nn.LeakyReLU(0.2)]
        for cin, cout in zip((w[0], *w[:-1]), w, strict=True):
            layers += [nn.Conv1d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                       _Residual(cout)]
        layers.append(nn.Conv1d(w[-1], cfg.latent_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        w = cfg.widths[::-1]
        layers: list[nn.Module] = [nn.Conv1d(cfg.latent_channels, w[0], 3, padding=1),
                                   nn.LeakyReLU(0.2)]
        for cin, cout in zip(w, (*w[1:], w[-1]), strict=True):
            layers += [_Residual(cin), nn.ConvTranspose1d(cin, cout, 4, stride=2, padding=1),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv1d(w[-1], 1, 7, padding=3))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class CodecNet(nn.Module):
    """Encoder, decoder and entropy-model scales of one codec; ``role`` picks ``forward``."""

    def __init__(self, config: str | CodecConfig = "wideband", role: str = "encode") -> None:
        super().__init__()
        if role not in ("encode", "decode"):
            raise ValueError(f"role must be 'encode' or 'decode', got {role!r}")
        self.config = CONFIGS[config] if isinstance(config, str) else config
        self.role = role
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        # Laplace scale of each latent value, in latent units (log, fitted in training).
        self.log_scale = nn.Parameter(torch.full(self.config.latent_shape, math.log(0.2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) if self.role == "encode" else self.decoder(x)

    def laplace_scales(self) -> np.ndarray:
        return self.log_scale.detach().exp().cpu().numpy().astype(np.float64)
