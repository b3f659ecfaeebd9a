"""Reference codecs for the codec evaluation, run like ours: float PCM in, bytes, PCM out.

- Opus (libopus through ``opuslib``): 16 kHz mono, application VOIP, 20 ms frames, constant
  bitrate by default (``vbr=False``: every packet the same size, so "Opus at 16 kbps" costs
  exactly what our codec is allowed, packet by packet), DTX off (with DTX silence would cost
  almost nothing and flatter the bitrate), complexity 10 (libopus's best; its default is 9).
  ``opuslib``'s ``dtx`` property setter is broken (it sends the *get* request), so DTX is set
  through the raw ``encoder_ctl``.
- G.711 μ-law (ITU-T G.711), 64 kbit/s at 8 kHz: the floor every speech codec must beat at a
  fraction of the rate. Table-free, vectorised port of the Sun/CCITT reference ``g711.c``
  (``linear2ulaw``/``ulaw2linear`` on 14-bit magnitudes), bit-exact to it.

Opus delay: the decoder's output lags the encoder's input by the encoder's lookahead
(``OPUS_GET_LOOKAHEAD``, 104 samples = 6.5 ms at 16 kHz for VOIP: 2.5 ms + 4 ms delay
compensation). :meth:`OpusCodec.encode` feeds that many extra zero samples (rounded up to a
whole frame) so the end of the signal is flushed, and :meth:`OpusCodec.decode` drops the first
``lookahead`` decoded samples, so the decoded signal lines up with the input sample for sample.

Pure numpy plus libopus; every call builds its own encoder/decoder state, so calls are
independent and safe from any thread.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from devices.audio import CODEC_FS, resample
from engines.codec.bitstream import measured_kbps

__all__ = [
    "G711_FS",
    "G711_KBPS",
    "OPUS_FRAME",
    "OpusCodec",
    "g711_roundtrip",
    "mulaw_decode",
    "mulaw_encode",
    "opus_at",
    "opus_speed",
]

OPUS_FRAME = 320  # 20 ms at 16 kHz
G711_FS = 8_000
G711_KBPS = 64.0

# Sun/CCITT g711.c constants (14-bit linear input).
_BIAS = 0x84
_CLIP = 8159
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)


def _mono(pcm: Any, name: str = "pcm") -> np.ndarray:
    a = np.asarray(pcm)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D mono samples, got shape {a.shape}")
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or Inf samples")
    return a


class OpusCodec:
    """Opus at 16 kHz mono, VOIP, 20 ms frames, ``bitrate_bps`` (6000 .. 510000).

    ``vbr=False`` (default) is hard CBR; ``complexity`` 0 .. 10.
    """

    fs = CODEC_FS
    frame = OPUS_FRAME

    def __init__(self, bitrate_bps: int, *, complexity: int = 10, vbr: bool = False) -> None:
        if not 6_000 <= bitrate_bps <= 510_000:
            raise ValueError(f"Opus bitrate must be 6000 .. 510000 bit/s, got {bitrate_bps}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity must be 0 .. 10, got {complexity}")
        self.bitrate_bps = int(bitrate_bps)
        self.complexity = int(complexity)
        self.vbr = bool(vbr)

    def _encoder(self) -> Any:
        import opuslib
        import opuslib.api.ctl
        import opuslib.api.encoder

        enc = opuslib.Encoder(self.fs, 1, "voip")
        enc.bitrate = self.bitrate_bps
        enc.complexity = self.complexity
        enc.vbr = int(self.vbr)
        opuslib.api.encoder.encoder_ctl(enc.encoder_state, opuslib.api.ctl.set_dtx, 0)
        return enc

    @property
    def lookahead(self) -> int:
        """Encoder lookahead in samples (``OPUS_GET_LOOKAHEAD``): the codec's delay."""
        return int(self._encoder().lookahead)

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        """One packet per 20 ms of ``pcm`` (float, 16 kHz, [-1, 1]); the tail plus the
        lookahead is zero-padded to whole frames, so the last real sample is decodable."""
        x = _mono(pcm).astype(np.float32)
        enc = self._encoder()
        n = x.size + int(enc.lookahead)
        padded = np.zeros(-(-n // self.frame) * self.frame, np.float32)
        padded[: x.size] = x
        return [
            enc.encode_float(padded[i:i + self.frame].tobytes(), self.frame)
            for i in range(0, padded.size, self.frame)
        ]

    def decode(self, packets: list[bytes], n_samples: int) -> np.ndarray:
        """(n_samples,) float32 at 16 kHz from :meth:`encode`'s packets, the lookahead removed
        so sample i matches input sample i."""
        import opuslib

        delay = self.lookahead
        if len(packets) * self.frame < n_samples + delay:
            raise ValueError(
                f"{len(packets)} packets hold {len(packets) * self.frame} samples, fewer than "
                f"n_samples + lookahead = {n_samples + delay}"
            )
        dec = opuslib.Decoder(self.fs, 1)
        out = np.concatenate(
            [np.frombuffer(dec.decode_float(p, self.frame), np.float32) for p in packets]
        )
        return out[delay:delay + n_samples].copy()


def opus_at(pcm: np.ndarray, kbps: float) -> tuple[np.ndarray, float]:
    """``(decoded, measured_kbps)`` of ``pcm`` (16 kHz) through CBR Opus at ``kbps``; the rate
    is bitstream bytes over the input's duration (flush padding included)."""
    x = _mono(pcm)
    codec = OpusCodec(round(kbps * 1000))
    packets = codec.encode(x)
    return codec.decode(packets, x.size), measured_kbps(packets, x.size / codec.fs)


def opus_speed(pcm: np.ndarray, kbps: float, repeats: int = 3) -> dict[str, float]:
    """Opus encode and decode time per second of audio (real-time factor, lower is faster),
    the best of ``repeats`` runs on the calling thread (libopus does not spawn threads).

    Keys: ``kbps`` (target), ``audio_s``, ``encode_rtf``, ``decode_rtf``, ``repeats``.
    """
    x = _mono(pcm)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if x.size == 0:
        raise ValueError("pcm is empty")
    codec = OpusCodec(round(kbps * 1000))
    audio_s = x.size / codec.fs
    enc_s, dec_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        packets = codec.encode(x)
        t1 = time.perf_counter()
        codec.decode(packets, x.size)
        t2 = time.perf_counter()
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)
    return {
        "kbps": float(kbps),
        "audio_s": audio_s,
        "encode_rtf": min(enc_s) / audio_s,
        "decode_rtf": min(dec_s) / audio_s,
        "repeats": float(repeats),
    }


def _to_int16(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype == np.int16:
        return pcm
    if not np.issubdtype(pcm.dtype, np.floating):
        raise ValueError(f"pcm must be int16 or float, got dtype {pcm.dtype}")
    return np.clip(np.round(pcm.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """G.711 μ-law codes (uint8, same shape) of 16-bit linear samples.

    ``pcm``: int16 (used as is) or float in [-1, 1] (scaled by 32768, rounded, clipped). Only
    the top 14 bits count, as in G.711.
    """
    x = _to_int16(_mono(pcm)).astype(np.int32) >> 2  # arithmetic shift, like the C reference
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")  # first segment whose end >= mag
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)  # clipped magnitudes overrun the last segment by one
    return (uval ^ mask).astype(np.uint8)


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """float32 samples (linear16 / 32768) of G.711 μ-law ``codes`` (uint8)."""
    c = np.asarray(codes)
    if c.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {c.shape}")
    if c.dtype != np.uint8 and (
        not np.issubdtype(c.dtype, np.integer) or (c.size and (c.min() < 0 or c.max() > 255))
    ):
        raise ValueError(f"codes must be bytes 0..255, got dtype {c.dtype}")
    u = ~c.astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    lin = np.where(u & 0x80, _BIAS - t, t - _BIAS)
    return (lin / 32768.0).astype(np.float32)


def g711_roundtrip(pcm16k: np.ndarray) -> tuple[np.ndarray, float]:
    """``(decoded, 64.0)``: ``pcm16k`` resampled to 8 kHz, μ-law coded and decoded, and
    resampled back to 16 kHz, same length as the input.

    G.711 is narrowband: everything above 4 kHz (the whole 4-8 kHz band) is lost by design.
    The polyphase resampler is linear-phase and centred, so no delay is added.
    """
    x = _mono(pcm16k, "pcm16k")
    narrow = resample(x, CODEC_FS, G711_FS)
    decoded = resample(mulaw_decode(mulaw_encode(narrow)), G711_FS, CODEC_FS)
    out = np.zeros(x.size, np.float32)
    out[: min(x.size, decoded.size)] = decoded[: x.size]
    return out, G711_KBPS
