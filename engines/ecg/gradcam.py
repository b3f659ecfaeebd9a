"""Grad-CAM (Selvaraju et al., 2017) over the beat spectrogram, and a PNG of it.

For a beat and a target score ``y`` (a class logit of :class:`~engines.ecg.cnn.EcgClassifier`,
or the cosine between :class:`~engines.ecg.cnn.EcgEmbedder`'s embedding and a user's template),
with ``A_k`` the ``k``-th channel of the last conv layer's activations (after BN + ReLU,
``(3, 12)`` cells)::

    alpha_k = mean over cells of dy / dA_k
    cam     = ReLU(sum_k alpha_k A_k)

upsampled bilinearly to the spectrogram's ``(F, T)`` = (13, 49) and scaled to [0, 1] (all zeros
when nothing speaks for the target). It shows which time-frequency regions of the beat raised
the target score.

Runs the eager model (the compiled engines carry no gradients) on the calling thread; the model
is used in eval mode and its train/eval state is restored afterwards. The PNG writer uses only
``zlib`` and ``struct``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engines.ecg.cnn import EcgClassifier, EcgEmbedder

__all__ = ["GradCam", "explanation_png", "gradcam"]


@dataclass(frozen=True, kw_only=True)
class GradCam:
    """One explanation.

    ``spectrogram``: float32 ``(F, T)`` log power of the beat (row 0 = 0 Hz).
    ``heatmap``: float32 ``(F, T)`` in [0, 1]. ``cam``: float32 raw map at the conv layer's
    resolution ``(3, 12)``, before scaling. ``score``: the target's value (logit or cosine).
    ``target``: the class index, or ``-1`` for a template.
    """

    spectrogram: np.ndarray
    heatmap: np.ndarray
    cam: np.ndarray
    score: float
    target: int


def gradcam(
    model: EcgClassifier | EcgEmbedder,
    beat: np.ndarray,
    target: int | np.ndarray | None = None,
) -> GradCam:
    """Grad-CAM of one ``beat`` (float ``(192,)`` or ``(1, 192)``, mV at 256 Hz).

    ``target``: for the classifier a class index (``None``: the predicted class); for the
    embedder a template ``(dim,)`` (the score is the cosine with it; required).
    """
    x = np.asarray(beat, dtype=np.float32).reshape(-1)
    if x.size != 192 or not np.isfinite(x).all():
        raise ValueError(f"beat must be 192 finite samples, got shape {np.shape(beat)}")
    was_training = model.training
    model.eval()
    try:
        # inference_mode(False): callers in a serving thread may sit in inference mode
        with torch.inference_mode(False), torch.enable_grad():
            xt = torch.from_numpy(x.copy()).reshape(1, 1, -1)
            spec = model.trunk.spectrogram(xt)
            feats = model.trunk.features(spec).detach().requires_grad_(True)
            out = model.head_from_features(feats)[0]
            if isinstance(model, EcgEmbedder):
                if target is None or isinstance(target, int | np.integer):
                    raise ValueError("the embedder needs a template (dim,) as target")
                t = torch.from_numpy(np.asarray(target, dtype=np.float32).reshape(-1))
                if t.numel() != out.numel():
                    raise ValueError(f"template has {t.numel()} values, embedding {out.numel()}")
                score = (out * t).sum() / t.norm().clamp_min(1e-12)
                index = -1
            else:
                if target is None:
                    index = int(out.argmax())
                elif isinstance(target, int | np.integer):
                    index = int(target)
                else:
                    raise ValueError("the classifier's target is a class index")
                if not 0 <= index < out.numel():
                    raise ValueError(f"class {index} outside [0, {out.numel()})")
                score = out[index]
            (grad,) = torch.autograd.grad(score, feats)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * feats).sum(dim=1, keepdim=True))
            up = nn.functional.interpolate(
                cam, size=tuple(spec.shape[-2:]), mode="bilinear", align_corners=False
            )[0, 0]
    finally:
        model.train(was_training)
    heat = up.detach().numpy().astype(np.float32)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    return GradCam(
        spectrogram=spec.detach()[0, 0].numpy().astype(np.float32),
        heatmap=heat,
        cam=cam.detach()[0, 0].numpy().astype(np.float32),
        score=float(score.detach()),
        target=index,
    )


# Jet-like colour map: (position, r, g, b) anchors, blue -> cyan -> yellow -> red.
_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.0, 0.5],
        [0.15, 0.0, 0.0, 1.0],
        [0.4, 0.0, 1.0, 1.0],
        [0.65, 1.0, 1.0, 0.0],
        [0.9, 1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0, 0.0],
    ]
)


def _colour(h: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(h, _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)], axis=-1)


def _png(rgb: np.ndarray) -> bytes:
    """8-bit RGB PNG of ``rgb`` uint8 ``(H, W, 3)``."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    # filter type 0 (None) on every scanline
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def explanation_png(
    spectrogram: np.ndarray, heatmap: np.ndarray, *, scale: int = 10, alpha: float = 0.6
) -> bytes:
    """PNG bytes: the spectrogram in grey (min-max scaled) with ``heatmap`` in colour over it.

    Both ``(F, T)``; frequency increases upwards, time to the right; each cell becomes a
    ``scale x scale`` block (default: 130 x 490 pixels). The heat is blended with opacity
    ``alpha * heat``, so cold regions show the plain spectrogram.
    """
    s = np.asarray(spectrogram, dtype=np.float64)
    h = np.asarray(heatmap, dtype=np.float64)
    if s.ndim != 2 or s.shape != h.shape:
        raise ValueError(f"spectrogram {s.shape} and heatmap {h.shape} must be equal 2-D shapes")
    if int(scale) < 1 or not 0.0 <= alpha <= 1.0:
        raise ValueError("scale must be >= 1 and alpha in [0, 1]")
    if not (np.isfinite(s).all() and np.isfinite(h).all()):
        raise ValueError("spectrogram and heatmap must be finite")
    span = s.max() - s.min()
    grey = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    h = np.clip(h, 0.0, 1.0)
    a = (alpha * h)[..., None]
    rgb = (1.0 - a) * grey[..., None] + a * _colour(h)
    rgb = rgb[::-1]  # row 0 (0 Hz) at the bottom of the picture
    img = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    k = int(scale)
    img = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    return _png(np.ascontiguousarray(img))
