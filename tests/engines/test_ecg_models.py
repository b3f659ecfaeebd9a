"""Tests of the beat spectrogram, the two beat CNNs, their specs, ONNX export and training
reproducibility (tiny budget; the shipped training is `sigstream train ecg`)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from engines.ecg.cnn import BeatSpectrogram, EcgClassifier, EcgEmbedder
from engines.ecg.specs import ECG_SPECS
from engines.ecg.spectrogram import (
    BEAT_FS_HZ,
    BEAT_SAMPLES,
    HOP,
    N_FFT,
    N_FRAMES,
    N_FREQ,
    beat_spectrogram,
    frequencies_hz,
    hann_window,
)


def _beats(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(BEAT_SAMPLES) / BEAT_FS_HZ
    r = rng.uniform(0.5, 2.0, (n, 1)) * np.exp(-0.5 * ((t - 0.25) / 0.012) ** 2)
    tw = rng.uniform(0.1, 0.4, (n, 1)) * np.exp(-0.5 * ((t - 0.55) / 0.05) ** 2)
    return (r + tw + 0.02 * rng.standard_normal((n, BEAT_SAMPLES))).astype(np.float32)


def test_spectrogram_geometry() -> None:
    assert (N_FREQ, N_FRAMES) == (13, 49)
    f = frequencies_hz()
    assert f[0] == 0.0 and f[-1] == 48.0 and f[-1] + BEAT_FS_HZ / N_FFT > 50.0
    np.testing.assert_allclose(hann_window(), scipy.signal.get_window("hann", N_FFT))


def test_numpy_reference_equals_torch_module() -> None:
    x = _beats(16)
    ref = beat_spectrogram(x)
    assert ref.shape == (16, N_FREQ, N_FRAMES) and ref.dtype == np.float32
    with torch.no_grad():
        got = BeatSpectrogram()(torch.from_numpy(x)[:, None, :]).numpy()
    assert got.shape == (16, 1, N_FREQ, N_FRAMES)
    np.testing.assert_allclose(got[:, 0], ref, atol=5e-5)
    np.testing.assert_array_equal(beat_spectrogram(x[3]), ref[3])  # one beat, (F, T)


def test_matches_scipy_stft_magnitudes() -> None:
    x = _beats(4, seed=1).astype(np.float64)
    xn = x - x.mean(axis=1, keepdims=True)
    xn /= np.sqrt((xn**2).mean(axis=1, keepdims=True) + 1e-6)
    f, t, z = scipy.signal.stft(
        xn, fs=BEAT_FS_HZ, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP,
        boundary="zeros", padded=False,
    )
    assert z.shape[-1] == N_FRAMES
    w = hann_window()
    # scipy scales by 1/sum(w); the reference uses the power normalised by sum(w^2)
    power = (np.abs(z[:, :N_FREQ]) * w.sum()) ** 2 / np.sum(w**2)
    np.testing.assert_allclose(beat_spectrogram(x), np.log(power + 1e-3), atol=1e-4)


def test_normalisation_removes_gain_and_offset() -> None:
    x = _beats(2)
    np.testing.assert_allclose(beat_spectrogram(3.0 * x + 0.7), beat_spectrogram(x), atol=1e-4)
    flat = beat_spectrogram(np.zeros(BEAT_SAMPLES, np.float32))
    assert np.isfinite(flat).all()
    with pytest.raises(ValueError):
        beat_spectrogram(np.zeros(100))


def test_specs() -> None:
    assert sorted(ECG_SPECS) == ["cnn", "embedding"]
    cnn, emb = ECG_SPECS["cnn"], ECG_SPECS["embedding"]
    assert (cnn.name, cnn.weights, cnn.output_shape) == ("ecg_cnn", "ecg_cnn.pt", (18,))
    assert (emb.name, emb.weights, emb.output_shape) == ("ecg_embedding", "ecg_embedding.pt", (64,))
    for spec in (cnn, emb):
        assert spec.input_shape == (1, BEAT_SAMPLES) and spec.sample_rate_hz == BEAT_FS_HZ
        assert spec.card_path.name == spec.weights.replace(".pt", ".json")
    assert cnn.extra["classes"] == list(range(18))


def test_spectrogram_contract_matches_frontend() -> None:
    frontend = pytest.importorskip("engines.ecg.frontend")
    assert frontend.BEAT_FS_HZ == BEAT_FS_HZ and frontend.BEAT_SAMPLES == BEAT_SAMPLES


@pytest.mark.parametrize("key", ["cnn", "embedding"])
def test_forward_shapes_and_gradients(key: str) -> None:
    torch.manual_seed(0)
    model = ECG_SPECS[key].build()
    n_params = sum(p.numel() for p in model.parameters())
    assert 10_000 < n_params < 500_000
    x = torch.from_numpy(_beats(4))[:, None, :]
    out = model(x)
    assert out.shape == (4, *ECG_SPECS[key].output_shape) and out.dtype == torch.float32
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if key == "embedding":
        np.testing.assert_allclose(out.detach().norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert isinstance(model, EcgClassifier if key == "cnn" else EcgEmbedder)
    # the fixed DFT kernels are a buffer: saved with the weights, never trained
    assert "trunk.spectrogram.kernels" in model.state_dict()
    assert not any("spectrogram" in n for n, _ in model.named_parameters())


def test_onnx_export_agrees_with_eager() -> None:
    pytest.importorskip("onnxruntime")
    from engines.backends.onnxruntime import OnnxRuntimeEngine
    from engines.engine import check_accuracy

    spec = ECG_SPECS["embedding"]
    torch.manual_seed(0)
    model = spec.build().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        OnnxRuntimeEngine.build_artifact(model, spec, path, max_batch=32)
        engine = OnnxRuntimeEngine.from_artifact(spec, path, max_batch=32, threads=1)
        assert check_accuracy(engine, model) <= 1e-4
        x = _beats(5)[:, None, :]
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(engine(x), expected, atol=1e-4)
        engine.close()


def _tiny(model: str) -> object:
    from engines.ecg.train import default_config

    base = default_config(model)
    return dataclasses.replace(
        base,
        steps=3,
        batch_size=16,
        train_subjects=base.train_subjects[:3],
        train_sessions=base.train_sessions[:2],
        train_duration_s=12.0,
        extra_subjects=base.extra_subjects[:2],
        extra_duration_s=12.0 if base.extra_subjects else 0.0,
        fs_hz=(250.0,),
        eval_subjects=base.eval_subjects[:3],
        eval_duration_s=12.0,
        enrol_duration_s=30.0,
        calib_subjects=base.calib_subjects[:3],
        calib_duration_s=20.0,
        calib_distractors=base.calib_distractors[:2],
    )


def test_training_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    """Shipped weights are what `sigstream train ecg --seed N` gives: same seed, same weights
    to the bit; another seed, other weights. Tiny budget; the embedding first, then the
    classifier whose trunk starts from it (same folder)."""
    pytest.importorskip("engines.ecg.frontend")
    from engines.ecg.train import train_ecg

    def run(seed: int, folder: str) -> dict[str, dict[str, torch.Tensor]]:
        out = tmp_path / folder
        weights = {}
        for key in ("embedding", "cnn"):
            train_ecg(model=key, seed=seed, out_dir=out, config=_tiny(key),  # type: ignore[arg-type]
                      progress=False)
            weights[key] = torch.load(out / f"ecg_{key}.pt", weights_only=True)
        return weights

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    for key in ("embedding", "cnn"):
        assert a[key].keys() == b[key].keys() == c[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
        assert not all(torch.equal(a[key][k], c[key][k]) for k in a[key])
    emb = json.loads((tmp_path / "a" / "ecg_embedding.json").read_text())
    cnn = json.loads((tmp_path / "a" / "ecg_cnn.json").read_text())
    assert emb["seed"] == 0 and emb["name"] == "ecg_embedding"
    assert -1.0 <= emb["reject_threshold"] <= emb["accept_threshold"] <= 1.0
    assert 0.0 <= emb["validation_eer"] <= 1.0
    assert 0.0 <= cnn["cohort_accuracy"] <= 1.0
    assert cnn["trunk_init"]["from"] == "ecg_embedding.pt"


def test_classifier_needs_the_embedding_first(tmp_path: Path) -> None:
    from engines.ecg.train import train_ecg
    from engines.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="train the embedding"):
        train_ecg(model="cnn", seed=0, out_dir=tmp_path, config=_tiny("cnn"),  # type: ignore[arg-type]
                  progress=False)


def test_cohort_beats_come_through_the_frontend() -> None:
    frontend = pytest.importorskip("engines.ecg.frontend")
    from engines.ecg.data import cohort_beats, session_beats

    bs = cohort_beats((0, 1), (0, 1), duration_s=16.0, fs_hz=(128.0, 500.0))
    n = len(bs)
    assert n > 20 and bs.beats.shape == (n, BEAT_SAMPLES) and bs.beats.dtype == np.float32
    assert set(np.unique(bs.subjects)) == {0, 1} and set(np.unique(bs.sessions)) == {0, 1}
    assert set(np.unique(bs.fs_hz)) <= {128.0, 500.0}
    assert not bs.beats.flags.writeable  # cached: shared, read-only
    assert cohort_beats((0, 1), (0, 1), duration_s=16.0, fs_hz=(128.0, 500.0)) is bs
    # each rate gets its own stretch of the session: 0-8 s at 128 Hz, 8-16 s at 500 Hz
    first = bs.select((bs.subjects == 0) & (bs.sessions == 0))
    assert (first.time_s[first.fs_hz == 128.0] < 8.0).all()
    assert (first.time_s[first.fs_hz == 500.0] >= 8.0).all()
    # the same beats as the frontend's "ok" beats of that stretch
    beats, _ = session_beats(0, 0, fs_hz=500.0, duration_s=8.0, start_s=8.0)
    np.testing.assert_array_equal(first.beats[first.fs_hz == 500.0], beats)
    assert frontend.QUALITY_OK == "ok"


@pytest.mark.parametrize("key", ["cnn", "embedding"])
def test_shipped_weights(key: str) -> None:
    """The shipped weights load, pass the ONNX Runtime accuracy gate, carry a card from
    `sigstream train ecg --seed 0` and tell cohort subjects apart."""
    spec = ECG_SPECS[key]
    if not spec.weights_path.exists():
        pytest.skip(f"no shipped weights at {spec.weights_path}")
    pytest.importorskip("engines.ecg.frontend")
    from engines.ecg.data import cohort_beats
    from engines.ecg.matcher import Matcher
    from engines.engine import load_engine

    card = spec.card()
    assert card["seed"] == 0 and card["name"] == spec.name
    assert card["command"] == f"sigstream train ecg --model {key} --seed 0"
    bs = cohort_beats((0, 4, 8), (1,), duration_s=16.0, fs_hz=(250.0,))
    x = np.array(bs.beats[:, None, :])
    with load_engine(spec, "onnxruntime", max_batch=64, threads=1) as engine:
        out = engine(x)
    if key == "cnn":
        assert np.mean(np.argmax(out, axis=1) == bs.subjects) >= 0.9
        return
    matcher = Matcher.from_card(card)
    assert -1.0 <= matcher.reject_threshold <= matcher.accept_threshold <= 1.0
    assert 0.0 <= card["validation_eer"] <= 0.1 and matcher.fuse_beats == card["fuse_beats"]
    means = np.stack([out[bs.subjects == s].mean(axis=0) for s in (0, 4, 8)])
    scores = out @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
    assert np.mean(np.array([0, 4, 8])[np.argmax(scores, axis=1)] == bs.subjects) >= 0.9
