"""Tests of Grad-CAM over the beat spectrogram and the PNG writer."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from engines.ecg.cnn import EcgClassifier, EcgEmbedder
from engines.ecg.gradcam import explanation_png, gradcam
from engines.ecg.spectrogram import N_FRAMES, N_FREQ, beat_spectrogram


def _beat() -> np.ndarray:
    t = np.arange(192) / 256.0
    beat = 1.2 * np.exp(-0.5 * ((t - 0.25) / 0.012) ** 2)  # R at sample 64
    beat += 0.25 * np.exp(-0.5 * ((t - 0.55) / 0.05) ** 2)  # T wave
    beat += 0.01 * np.random.default_rng(0).standard_normal(192)
    return beat.astype(np.float32)


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
            size = (h, w)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    h, w = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_classifier_gradcam() -> None:
    torch.manual_seed(0)
    model = EcgClassifier().train()
    beat = _beat()
    cam = gradcam(model, beat)
    assert model.training  # state restored
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(beat)[None, None])[0]
    assert cam.target == int(logits.argmax())
    assert cam.score == pytest.approx(float(logits[cam.target]), abs=1e-5)
    assert cam.heatmap.shape == (N_FREQ, N_FRAMES) == cam.spectrogram.shape
    assert cam.cam.shape == (3, 12) and cam.heatmap.dtype == np.float32
    assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() == pytest.approx(1.0)
    np.testing.assert_allclose(cam.spectrogram, beat_spectrogram(beat), atol=1e-4)
    other = gradcam(model, beat, target=(cam.target + 1) % 18)
    assert other.target == (cam.target + 1) % 18
    with pytest.raises(ValueError):
        gradcam(model, beat, target=18)
    with pytest.raises(ValueError):
        gradcam(model, beat[:100])


def test_embedder_gradcam_targets_a_template() -> None:
    torch.manual_seed(0)
    model = EcgEmbedder().eval()
    beat = _beat()
    with torch.no_grad():
        emb = model(torch.from_numpy(beat)[None, None])[0].numpy()
    template = emb + 0.1 * np.random.default_rng(1).standard_normal(64).astype(np.float32)
    # works from a serving thread's inference mode too
    with torch.inference_mode():
        cam = gradcam(model, beat, template)
    cosine = float(emb @ template / np.linalg.norm(template))
    assert cam.score == pytest.approx(cosine, abs=1e-5) and cam.target == -1
    assert cam.heatmap.shape == (N_FREQ, N_FRAMES)
    assert np.isfinite(cam.heatmap).all() and 0.0 <= cam.heatmap.min() <= cam.heatmap.max() <= 1
    with pytest.raises(ValueError):
        gradcam(model, beat)  # the embedder needs a template


def test_png_round_trip() -> None:
    spec = beat_spectrogram(_beat())
    heat = np.zeros_like(spec)
    heat[10:, 30:] = 1.0  # hot high-frequency, late corner
    png = explanation_png(spec, heat, scale=4)
    img = _decode_png(png)
    assert img.shape == (N_FREQ * 4, N_FRAMES * 4, 3)
    # cold cells are grey (r == g == b); row 0 of the image is the highest frequency
    cold = img[-4:, :4]
    assert (cold[..., 0] == cold[..., 1]).all() and (cold[..., 1] == cold[..., 2]).all()
    hot = img[:4, -4:].astype(int)
    assert (hot[..., 0] - hot[..., 2] > 50).all()  # red over grey
    plain = _decode_png(explanation_png(spec, np.zeros_like(spec), scale=1))
    assert plain.shape == (N_FREQ, N_FRAMES, 3) and plain.min() == 0 and plain.max() == 255
    with pytest.raises(ValueError):
        explanation_png(spec, heat[:, :10])
    pil = pytest.importorskip("PIL.Image")
    import io

    with pil.open(io.BytesIO(png)) as im:
        assert im.size == (N_FRAMES * 4, N_FREQ * 4)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), img)
