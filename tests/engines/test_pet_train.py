"""The PET models and their self-supervised training: shapes, the N2V2 changes, a short run
that writes weights and a card and repeats byte for byte, and every method's data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.pet.models import N2vUNet
from engines.pet.specs import IMAGES_ONLY_MODEL, PET_METHODS, PET_SPECS, PET_UNITS, SERVED_MODEL
from engines.pet.train import TrainImages, train_pet
from stream.paths.pet.commands import IMAGES_ONLY_MODEL as IMAGES_ONLY
from stream.paths.pet.commands import PET_MODELS
from stream.paths.pet.commands import SERVED_MODEL as CLI_SERVED


def test_the_cli_names_the_engine_models() -> None:
    assert PET_MODELS == tuple(sorted(PET_SPECS)) and CLI_SERVED == SERVED_MODEL
    assert IMAGES_ONLY == IMAGES_ONLY_MODEL and PET_METHODS[IMAGES_ONLY].target == "blind_spot"


@pytest.mark.parametrize("model", sorted(PET_SPECS))
def test_models_keep_the_shape_of_a_slice(model: str) -> None:
    net = PET_SPECS[model].build().eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 200, 200)).shape == (2, 1, 200, 200)


def test_n2v2_has_no_top_skip_and_blurs_before_it_subsamples() -> None:
    plain, n2v2 = N2vUNet(), N2vUNet(blur_pool=True, top_skip=False)
    assert plain.merge[0][0].in_channels == 64 and n2v2.merge[0][0].in_channels == 32
    # Max pooling keeps a one-pixel spike at full height; blur pooling spreads it.
    spike = torch.zeros(1, 32, 8, 8)
    spike[0, :, 3, 3] = 1.0
    assert plain.pool[0](spike).max() == 1.0
    assert 0.0 < n2v2.pool[0](spike).max() < 1.0


def _images(halves: bool) -> TrainImages:
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 64, 64), np.float32)
    truth[:, 16:48, 16:48] = 2000.0
    short = rng.poisson(truth / 100).astype(np.float32) * 100
    pair = (short[0], truth[0])
    return TrainImages(short=short, validation=(pair,), source={"test": True},
                       halves=np.stack([short, rng.poisson(truth / 100) * 100.0], axis=1)
                       .astype(np.float32) if halves else None)


@pytest.mark.parametrize("model", ["n2v2_struct", "n2n"])
def test_a_run_writes_weights_and_a_card_and_repeats_byte_for_byte(model: str,
                                                                   tmp_path: Path) -> None:
    images = _images(halves=PET_METHODS[model].target == "halves")
    digests = []
    for run in ("a", "b"):
        card = train_pet(model, 3, tmp_path / run, images=images, steps=4, batch_size=2,
                         threads=1, progress=False)
        weights = tmp_path / run / f"pet_{model}.pt"
        digests.append(hashlib.sha256(weights.read_bytes()).hexdigest())
        written = json.loads((tmp_path / run / f"pet_{model}.json").read_text())
        assert written["steps"] == 4 and written["seed"] == 3 and written["model"] == model
        assert len(card["history"]) == 4 and np.isfinite(written["validation"]["final_psnr_db"])
    assert digests[0] == digests[1]


def test_noise2noise_needs_the_half_count_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="half-count"):
        train_pet("n2n", 0, tmp_path, images=_images(halves=False), steps=1, progress=False)


def test_slices_smaller_than_a_patch_are_refused(tmp_path: Path) -> None:
    small = TrainImages(short=np.ones((2, 32, 32), np.float32), source={})
    with pytest.raises(ValueError, match="smaller than"):
        train_pet("n2v", 0, tmp_path, images=small, steps=1, progress=False)


def test_per_slice_units_make_the_activity_scale_irrelevant() -> None:
    slice_ = _images(halves=False).short[0]
    for factor in (1e-3, 1.0, 1e3):
        x = PET_UNITS.to_model(slice_ * factor)
        np.testing.assert_allclose(x, PET_UNITS.to_model(slice_), rtol=1e-5)


def test_the_task_gate_scores_the_engine_as_eager_on_simulated_slices(tmp_path: Path) -> None:
    import dataclasses

    from engines.engine import load_engine
    from engines.pet.gate import pet_gate

    torch.manual_seed(0)
    torch.save(PET_SPECS["n2v"].build().state_dict(), tmp_path / "pet_n2v.pt")
    spec = dataclasses.replace(PET_SPECS["n2v"], weights_dir=tmp_path)
    with load_engine(spec, "onnxruntime", max_batch=2, check=False) as engine:
        gate = pet_gate(spec, engine)
    assert gate.passed and gate.metric == "PSNR dB"
    assert 0.0 < gate.eager < 60.0  # an untrained model's PSNR against the 10-minute image
