"""The shapes of the shipped codecs (frame, overlap, widths, latent) and the cross-fade window
that joins their decoded frames.

Numpy only: the link ends and the codec runtime read them without importing torch (the model
is in :mod:`engines.codec.model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CONFIGS", "CodecConfig", "synthesis_window"]


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
