"""The time-domain convolutional speech autoencoder of paper §4, made into a real codec.

Two configurations (:data:`CONFIGS`):

``wideband``  the paper's: 1024-sample frames (64 ms at 16 kHz), bottleneck 4 x 64 = 256 values
              (1/4 of the frame).
``lowdelay``  256-sample frames (16 ms), bottleneck 4 x 16 = 64 values (also 1/4).

Frames overlap by ``overlap`` samples (hop = frame - overlap) and the decoder's frames are
cross-faded there (:func:`synthesis_window`, sin^2/cos^2 ramps that sum to one), so frame edges
do not click. The algorithmic delay is one frame: a sample is final once the frame that starts
with it has been captured, coded and decoded (64 ms and 16 ms).

Latent: ``tanh`` bounds every value to (-1, 1), then a uniform scalar quantiser of step
``step`` makes integer symbols that are range-coded (:mod:`engines.codec.bitstream`) with a
Laplace model of per-value scale ``exp(log_scale)``. The step sets the bitrate, so one trained
model serves several bitrates: its card lists the step of each calibrated operating point.

Quantisation-aware training (:mod:`engines.codec.train`) draws a step per training frame
(log-uniform over :attr:`CodecConfig.step_range`), passes the decoder the rounded latent with a
straight-through gradient (it learns to decode exactly what it will get), and fits the
entropy model by maximum likelihood on ``latent + step * U(-1/2, 1/2)``.

``CodecNet(config, role)`` holds the whole model (one state dict, one weights file) and its
``forward`` is the role's half, so the same weights give the encoder engine
(``(B, 1, frame) -> (B, C, L)``) and the decoder engine (``(B, C, L) -> (B, 1, frame)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["CONFIGS", "CodecConfig", "CodecNet", "synthesis_window"]


@dataclass(frozen=True)
class CodecConfig:
    """Shape of one codec: frame and overlap in samples, encoder widths, latent channels."""

    name: str
    frame: int
    overlap: int
    widths: tuple[int, ...] = (32, 48, 64, 96)
    latent_channels: int = 4
    step_range: tuple[float, float] = (0.02, 0.6)
    fs: int = 16_000

    @property
    def hop(self) -> int:
        return self.frame - self.overlap

    @property
    def latent_length(self) -> int:
        return self.frame // 2 ** len(self.widths)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.latent_channels, self.latent_length)

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.frame / self.fs

    @property
    def frames_per_s(self) -> float:
        return self.fs / self.hop


CONFIGS: dict[str, CodecConfig] = {
    "wideband": CodecConfig("wideband", frame=1024, overlap=128),
    "lowdelay": CodecConfig("lowdelay", frame=256, overlap=64),
}


def synthesis_window(frame: int, overlap: int) -> np.ndarray:
    """Cross-fade window: sin^2 rise over ``overlap``, flat, cos^2 fall; shifted copies at hop
    ``frame - overlap`` sum to exactly one."""
    w = np.ones(frame, dtype=np.float64)
    if overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return w.astype(np.float32)


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
