"""Latent <-> bytes: the uniform quantiser and the range coder of one codec frame.

A frame's latent ``(C, L)`` (values in (-1, 1)) is quantised to integer symbols
``q = round(latent / step)`` and range-coded (``constriction``'s queue range coder, 32-bit
words) with a quantised Laplace model per value: mean 0, scale ``scales / step`` in symbol units
(the scales are fitted in training, :class:`engines.codec.model.CodecNet`). The bytes of a frame
are the coder's words, little-endian; nothing else is in a frame packet, so the bitrate is
exactly ``8 * bytes * frames_per_s``. Decoding needs the same ``step`` and ``scales``, which the
container header / packet header name (codec model and operating point).
"""

from __future__ import annotations

import math

import numpy as np

from engines.errors import EngineError

__all__ = ["BitstreamError", "LatentCoder", "measured_kbps"]


def measured_kbps(packets: list[bytes], seconds: float) -> float:
    """Bitstream rate in kbit/s: total packet bytes * 8 / ``seconds`` / 1000 (no container)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    return sum(len(p) for p in packets) * 8 / seconds / 1000


class BitstreamError(EngineError, ValueError):
    """Bytes that do not decode to a frame of this codec (corrupt or foreign)."""


class LatentCoder:
    """Quantise and range-code latents of shape ``scales.shape`` at quantiser step ``step``."""

    def __init__(self, scales: np.ndarray, step: float) -> None:
        import constriction

        if not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be a positive number, got {step!r}")
        self.shape = tuple(scales.shape)
        self.step = float(step)
        self.max_symbol = math.ceil(1.0 / step)
        self._scales = np.ascontiguousarray(
            np.maximum(scales.reshape(-1) / step, 1e-3), dtype=np.float64)
        self._means = np.zeros_like(self._scales)
        self._family = constriction.stream.model.QuantizedLaplace(
            -self.max_symbol, self.max_symbol + 1)
        self._constriction = constriction

    def symbols(self, latent: np.ndarray) -> np.ndarray:
        q = np.rint(np.asarray(latent, dtype=np.float64).reshape(-1) / self.step)
        return np.clip(q, -self.max_symbol, self.max_symbol).astype(np.int32)

    def dequantise(self, symbols: np.ndarray) -> np.ndarray:
        return (symbols.astype(np.float32) * self.step).reshape(self.shape)

    def encode(self, latent: np.ndarray) -> bytes:
        encoder = self._constriction.stream.queue.RangeEncoder()
        encoder.encode(self.symbols(latent), self._family, self._means, self._scales)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        """The dequantised latent of one frame; :class:`BitstreamError` if ``data`` is not one."""
        if len(data) % 4 or not data:
            raise BitstreamError(f"a frame is a whole number of 32-bit words, got {len(data)} B")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            decoder = self._constriction.stream.queue.RangeDecoder(words)
            symbols = decoder.decode(self._family, self._means, self._scales)
            # Words left over (or missing) mean a frame cut short or not of this codec.
            if decoder.maybe_exhausted() is False:
                raise BitstreamError("frame is truncated, corrupt or not of this codec")
        except BitstreamError:
            raise
        except Exception as exc:  # constriction raises ValueError/AssertionError variants
            raise BitstreamError(f"frame does not decode: {exc}") from exc
        return self.dequantise(np.asarray(symbols))
