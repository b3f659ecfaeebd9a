"""Framing, overlap-add and concealment: a codec model turned into a stream codec.

Frames of ``frame`` samples start every ``hop`` samples; the first frame starts ``overlap``
samples before the signal (zeros), so the signal's first samples are not faded in. The decoder
multiplies each decoded frame by :func:`~engines.codec.configs.synthesis_window` and adds it to
the previous frame's tail; after frame ``k`` the ``hop`` samples that no later frame touches are
final. The decoder drops the lead-in, so decoded sample ``t`` is input sample ``t``; a sample
waits at most one frame (the algorithmic delay) from capture to decoded.

Packet-loss concealment (:meth:`StreamDecoder.decode` with ``None``): the last decoded frame is
played again, attenuated by :data:`PLC_FADE` per consecutive lost frame (silence after a few),
through the same cross-fade, so a loss is a soft dip rather than a click; the next good frame
fades back in over the overlap.

``encode``/``decode`` callables map ``(B, 1, frame)`` float32 frames to ``(B, C, L)`` latents and
back: an :class:`~engines.engine.Engine` or a torch wrapper, so training validation, the
offline CLI and the live link share this one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.codec.bitstream import BitstreamError, LatentCoder
from engines.codec.configs import CodecConfig, synthesis_window
from engines.errors import ConfigError

if TYPE_CHECKING:
    from engines.codec.specs import CodecSpecs
    from engines.engine import Engine
    from engines.spec import ModelSpec

__all__ = [
    "CODEC_LINK_MAX_BATCH",
    "CODEC_MAX_BATCH",
    "PLC_FADE",
    "Codec",
    "StreamDecoder",
    "StreamEncoder",
    "decode_signal",
    "decode_stream",
    "encode_signal",
    "codec_tables",
    "frame_count",
    "load_codec",
    "split_frames",
]

Transform = Callable[[np.ndarray], np.ndarray]
#: Gain applied per consecutive lost frame by the concealment.
PLC_FADE = 0.5
#: A link end calls its codec engines one frame at a time; a batch bound of 1 also keeps each
#: link process small (the accuracy gate and ONNX Runtime's arena size to the bound).
CODEC_LINK_MAX_BATCH = 1
#: Offline coding and the evaluation code frames in batches of up to 64.
CODEC_MAX_BATCH = 64


def frame_count(samples: int, cfg: CodecConfig) -> int:
    """Frames that make ``samples`` input samples final (the last one zero-padded)."""
    return max(1, -(-(samples + cfg.overlap) // cfg.hop))


def split_frames(signal: np.ndarray, cfg: CodecConfig) -> np.ndarray:
    """``(frames, 1, frame)``: the frames :func:`encode_signal` codes (the last zero-padded)."""
    count = frame_count(signal.size, cfg)
    padded = np.zeros((count - 1) * cfg.hop + cfg.frame, np.float32)
    padded[cfg.overlap:cfg.overlap + signal.size] = signal
    idx = np.arange(count)[:, None] * cfg.hop + np.arange(cfg.frame)[None, :]
    return padded[idx][:, None, :]


def encode_signal(signal: np.ndarray, cfg: CodecConfig, encode: Transform, coder: LatentCoder,
                  *, batch: int = 64) -> list[bytes]:
    """A whole signal to frame packets (offline: frames are encoded in batches)."""
    frames = split_frames(np.asarray(signal, np.float32), cfg)
    latents = np.concatenate([encode(frames[i:i + batch]) for i in range(0, len(frames), batch)])
    return [coder.encode(z) for z in latents]


def decode_signal(packets: Iterable[bytes | None], samples: int, cfg: CodecConfig,
                  decode: Transform, coder: LatentCoder) -> np.ndarray:
    """Packets back to ``samples`` samples aligned with the input (``None``: a lost frame)."""
    out = list(decode_stream(packets, samples, cfg, decode, coder))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def decode_stream(packets: Iterable[bytes | None], samples: int, cfg: CodecConfig,
                  decode: Transform, coder: LatentCoder) -> Iterator[np.ndarray]:
    """:func:`decode_signal` a frame at a time: float32 blocks (at most ``hop`` samples, the
    last one the final tail) that together are the first ``samples`` samples. Memory stays
    one frame, and no more than ``samples`` samples come out, whatever ``packets`` holds."""
    decoder = StreamDecoder(cfg, decode, coder)
    left = samples
    for packet in packets:
        if left <= 0:
            return
        block = decoder.decode(packet)[:left]
        left -= block.size
        yield block
    if left > 0:
        yield decoder.flush()[:left]


class StreamEncoder:
    """Samples in (any block size), frame packets out as soon as each frame is complete."""

    def __init__(self, cfg: CodecConfig, encode: Transform, coder: LatentCoder) -> None:
        self.cfg = cfg
        self._encode = encode
        self.coder = coder
        self._buffer = np.zeros(cfg.overlap, np.float32)  # the first frame's lead-in
        self.frames = 0

    def push(self, samples: np.ndarray) -> list[bytes]:
        cfg = self.cfg
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, np.float32)])
        if self._buffer.size < cfg.frame:
            return []
        ready = (self._buffer.size - cfg.frame) // cfg.hop + 1
        idx = np.arange(ready)[:, None] * cfg.hop + np.arange(cfg.frame)[None, :]
        frames = self._buffer[idx][:, None, :]
        self._buffer = self._buffer[ready * cfg.hop:]
        self.frames += ready
        return [self.coder.encode(z) for z in self._encode(np.ascontiguousarray(frames))]

    def flush(self) -> list[bytes]:
        """Zero-pad the last partial frame so every pushed sample gets decoded."""
        pending = self._buffer.size - self.cfg.overlap
        if pending <= 0:
            return []
        pad = (-(-pending // self.cfg.hop)) * self.cfg.hop + self.cfg.overlap - self._buffer.size
        return self.push(np.zeros(pad, np.float32))


class StreamDecoder:
    """Frame packets in, ``hop`` final samples out per frame; ``None`` conceals a lost frame.

    A packet that does not decode (corrupt, foreign) is concealed too and counted in
    :attr:`corrupt`; :attr:`concealed` counts every concealed frame.
    """

    def __init__(self, cfg: CodecConfig, decode: Transform, coder: LatentCoder) -> None:
        self.cfg = cfg
        self._decode = decode
        self.coder = coder
        self._window = synthesis_window(cfg.frame, cfg.overlap)
        self._tail = np.zeros(cfg.overlap, np.float32)
        self._last = np.zeros(cfg.frame, np.float32)
        self._lost_run = 0
        self._lead_in = cfg.overlap  # samples before the signal's first one (zeros)
        self.frames = 0
        self.concealed = 0
        self.corrupt = 0

    def decode(self, packet: bytes | None) -> np.ndarray:
        frame = None
        if packet is not None:
            try:
                latent = self.coder.decode(packet)
            except BitstreamError:
                self.corrupt += 1
            else:
                frame = self._decode(latent[None])[0, 0]
        return self._add(frame)

    def _add(self, frame: np.ndarray | None) -> np.ndarray:
        cfg = self.cfg
        self.frames += 1
        if frame is None:
            self.concealed += 1
            self._lost_run += 1
            frame = self._last * PLC_FADE ** self._lost_run
        else:
            self._lost_run = 0
            self._last = frame
        y = frame * self._window
        y[:cfg.overlap] += self._tail
        self._tail = y[cfg.hop:].copy()
        out, self._lead_in = y[self._lead_in:cfg.hop], 0
        return out

    def flush(self) -> np.ndarray:
        """The last frame's tail (no frame follows to cross-fade with)."""
        tail, self._tail = self._tail, np.zeros(self.cfg.overlap, np.float32)
        return tail


class Codec:
    """A loaded codec: its encoder and decoder engines, entropy-model scales and bitrates.

    Made by :func:`load_codec`. :meth:`coder` gives the range coder of an operating point
    (by nominal kbps) or of any quantiser step a peer names; :meth:`stream_encoder` and
    :meth:`stream_decoder` the per-link state. ``close()`` releases both engines.
    """

    def __init__(self, key: str, specs: CodecSpecs, encoder: Engine, decoder: Engine,
                 scales: np.ndarray, points: dict[float, float], weights_sha256: str) -> None:
        self.key = key
        self.config: CodecConfig = specs.config
        self.encoder = encoder
        self.decoder = decoder
        self.scales = scales
        self.points = points
        self.weights_sha256 = weights_sha256

    @property
    def model_id(self) -> str:
        """What a peer must have to decode: codec key and weights hash prefix."""
        return f"{self.key}@{self.weights_sha256[:12]}"

    def step_for(self, kbps: float) -> float:
        if kbps not in self.points:
            have = ", ".join(f"{k:g}" for k in sorted(self.points))
            raise ConfigError(f"codec {self.key} has no {kbps:g} kbps operating point; "
                             f"choose from {have}")
        return self.points[kbps]

    def coder(self, *, kbps: float | None = None, step: float | None = None) -> LatentCoder:
        if step is None:
            if kbps is None:
                raise ValueError("give kbps or step")
            step = self.step_for(kbps)
        lo, hi = self.config.step_range
        if not lo / 8 <= step <= hi * 4:
            raise ValueError(f"quantiser step {step!r} is outside this codec's range")
        return LatentCoder(self.scales, step)

    def stream_encoder(self, kbps: float) -> StreamEncoder:
        return StreamEncoder(self.config, self.encoder, self.coder(kbps=kbps))

    def stream_decoder(self, step: float) -> StreamDecoder:
        return StreamDecoder(self.config, self.decoder, self.coder(step=step))

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def codec_tables(specs: CodecSpecs) -> tuple[np.ndarray, dict[float, float], str]:
    """``(scales, points, sha256)`` of a codec's weights: the entropy model's Laplace scales,
    its operating points (nominal kbps -> quantiser step) and the weights hash, from the card.
    A card without the scales of these exact weights (written before cards carried them) has
    them read from the weights, which imports torch.
    Raises :class:`~engines.errors.WeightsNotFoundError` for missing weights or card and
    :class:`~engines.errors.WeightsMismatchError` for an unreadable card."""
    import hashlib
    import json

    from engines.errors import WeightsMismatchError, WeightsNotFoundError

    path = specs.encoder.weights_path
    try:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        card = json.loads(path.with_suffix(".json").read_text())
        points = {float(p["kbps"]): float(p["step"]) for p in card["operating_points"]}
        if card.get("sha256") == sha and "laplace_scales" in card:
            scales = np.asarray(card["laplace_scales"], dtype=np.float64)
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
            scales = state["log_scale"].exp().numpy().astype(np.float64)
    except FileNotFoundError as exc:
        raise WeightsNotFoundError(f"codec {specs.key}: no weights or card at {path}; train "
                                   "them with `sigstream train codec`") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsMismatchError(
            f"codec {specs.key}: unreadable card {path.with_suffix('.json')}") from exc
    if scales.shape != specs.config.latent_shape:
        raise WeightsMismatchError(f"codec {specs.key}: entropy model of shape {scales.shape}, "
                                   f"the codec's latent is {specs.config.latent_shape}")
    return scales, points, sha


def load_codec(key: str = "wideband", *, backend: str = "auto", weights: Path | None = None,
               cache_dir: Path | None = None, threads: int | None = 1,
               max_batch: int = CODEC_MAX_BATCH) -> Codec:
    """Load codec ``key`` (see :data:`engines.codec.specs.CODECS`) on ``backend``.

    ``weights``: a trained ``.pt`` to use instead of the shipped one (its ``.json`` card must
    be beside it). Raises :class:`~engines.errors.ConfigError` for an unknown key and
    :class:`~engines.errors.WeightsError` for missing or unfitting weights.
    """
    from engines.codec.specs import CODECS
    from engines.engine import load_engine

    if key not in CODECS:
        raise ConfigError(f"unknown codec {key!r}; choose from {', '.join(CODECS)}")
    specs = CODECS[key]
    if weights is not None:
        specs = specs.with_weights(Path(weights))
    scales, points, sha = codec_tables(specs)
    def engine(spec: ModelSpec) -> Engine:
        return load_engine(spec, backend, cache_dir=cache_dir, threads=threads,
                           max_batch=max_batch)

    encoder = engine(specs.encoder)
    try:
        decoder = engine(specs.decoder)
    except BaseException:
        encoder.close()
        raise
    # Warm up at batch 1, the link's call: a first call allocates and picks kernels.
    cfg = specs.config
    decoder(encoder(np.zeros((1, 1, cfg.frame), np.float32)))
    return Codec(key, specs, encoder, decoder, scales, points, sha)
