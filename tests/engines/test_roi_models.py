"""Tests of the four 1D ROI segmenters, the two peak-head models and their specs (no real
training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from devices.spectra_sim import SpectrumSimConfig, simulate
from engines.roi.blocks import count_parameters
from engines.roi.peak_decode import N_HEADS
from engines.roi.specs import ROI_LENGTH, ROI_SPECS, detector_config

KEYS = ["cnn", "resnet", "unet", "resnet_unet"]
PEAK_KEYS = ["peaks", "peaks_mixed"]


def test_specs_cover_the_models() -> None:
    assert sorted(ROI_SPECS) == sorted(KEYS + PEAK_KEYS)
    for key, spec in ROI_SPECS.items():
        assert spec.weights == f"roi_{key}.pt"
        assert spec.input_shape == (1, ROI_LENGTH)
        assert spec.output_shape == ((N_HEADS if key in PEAK_KEYS else 1), ROI_LENGTH)
        assert spec.card_path.name == f"roi_{key}.json"
    assert detector_config("peaks").peak_fit == "hann"
    assert detector_config("peaks_mixed").peak_fit == "pvoigt"


@pytest.mark.parametrize("key", KEYS)
def test_forward_shape_and_gradients(key: str) -> None:
    torch.manual_seed(0)
    model = ROI_SPECS[key].build()
    n_params = count_parameters(model)
    print(f"{key}: {n_params} parameters")
    assert 10_000 < n_params < 1_000_000  # small enough to ship and run at batch 1 on CPU
    x = torch.rand(3, 1, ROI_LENGTH)
    out = model(x)
    assert out.shape == (3, 1, ROI_LENGTH) and out.dtype == torch.float32
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{key}: no gradient reaches {name}"
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 1024)).shape == (1, 1, 1024)  # any multiple of 16


@pytest.mark.parametrize("key", KEYS)
def test_tiny_training_lowers_loss(key: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    b = simulate(8, config=SpectrumSimConfig(), rng=np.random.default_rng(0))
    x = torch.from_numpy(b.spectra).unsqueeze(1)
    y = torch.from_numpy(b.roi.astype(np.float32)).unsqueeze(1)
    model = ROI_SPECS[key].build().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(20):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_training_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    """Shipped weights are what `sigstream train roi --seed N` gives: same seed, same weights
    to the bit; another seed, other weights."""
    from engines.roi.train import train_roi

    def weights(seed: int, folder: str) -> dict[str, torch.Tensor]:
        out = tmp_path / folder
        train_roi(model="resnet_unet", seed=seed, steps=4, batch_size=8, out_dir=out,
                  progress=False, val_size=16)
        return torch.load(out / "roi_resnet_unet.pt", weights_only=True)

    a, b, c = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("key", PEAK_KEYS)
def test_peak_heads_training_is_reproducible_and_validated(key: str, tmp_path: Path) -> None:
    """`sigstream train roi --model peaks|peaks_mixed`: same seed, same weights; the card
    records the heads' validation peak scores."""
    from engines.roi.train import train_roi

    cards, weights = [], []
    for folder in ("a", "b"):
        out = tmp_path / folder
        cards.append(train_roi(model=key, seed=0, steps=3, batch_size=8, out_dir=out,
                               progress=False, val_size=16))
        weights.append(torch.load(out / f"roi_{key}.pt", weights_only=True))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    card = cards[0]
    assert 0.0 <= card["final_val_peak_f1"] <= 1.0
    assert card["steps"] == 3 and card["command"].endswith("--steps 3")
    assert ROI_SPECS[key].build().load_state_dict(weights[0]) is not None
