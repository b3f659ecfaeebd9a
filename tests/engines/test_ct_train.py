"""CT training: a 2-step run writes weights and a card, and reruns bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from engines.ct.data import CtDataConfig
from engines.ct.train import train_ct

TINY = CtDataConfig(size_px=128, doses_per_phantom=1)


def _run(model: str, out: Path, cache: Path, seed: int = 0) -> dict:
    return train_ct(model, seed, out, 2, batch_size=2, patch_px=32, n_phantoms=2,
                    data_config=TINY, cache_dir=cache, threads=1, n_val=1, val_every=2,
                    progress=False)


@pytest.mark.parametrize("model", ["unet", "red_cnn"])
def test_two_steps_rerun_bit_for_bit(model: str, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    a = _run(model, tmp_path / "a", tmp_path / "cache")
    b = _run(model, tmp_path / "b", tmp_path / "cache")  # the second run reads the cache
    sha = [hashlib.sha256((tmp_path / d / f"ct_{model}.pt").read_bytes()).hexdigest()
           for d in ("a", "b")]
    assert sha[0] == sha[1]
    assert a["data"]["sha256"] == b["data"]["sha256"]
    card = json.loads((tmp_path / "a" / f"ct_{model}.json").read_text())
    assert card["steps"] == 2 and card["seed"] == 0 and card["threads"] == 1
    assert card["validation"]["dose"] == 0.25 and len(card["history"]) == 1
    assert card["command"].startswith(f"python -m engines.ct.train --model {model} --seed 0")
    # process-wide settings are put back
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    _run("unet", tmp_path / "a", tmp_path / "cache")
    _run("unet", tmp_path / "b", tmp_path / "cache", seed=1)
    a, b = ((tmp_path / d / "ct_unet.pt").read_bytes() for d in ("a", "b"))
    assert a != b


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CT model"):
        train_ct("dncnn", 0, tmp_path)
