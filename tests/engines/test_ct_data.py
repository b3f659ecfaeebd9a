"""CT training data: disjoint seeds, determinism, the cache and the patch sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.ct.data import (
    CtDataConfig,
    PatchSampler,
    load_pairs,
    phantom_seed,
    simulate_pairs,
)
from engines.training import data_rng

TINY = CtDataConfig(size_px=128, doses_per_phantom=2)


def test_phantom_seeds_never_overlap_between_purposes() -> None:
    seen: dict[int, str] = {}
    for purpose in ("train", "validation", "test"):
        for region in ("abdomen", "thorax"):
            for seed in range(3):
                for k in range(50):
                    s = phantom_seed(purpose, region, k, seed)
                    assert s not in seen, (s, purpose, seen.get(s))
                    seen[s] = purpose


def test_pairs_are_deterministic_balanced_and_in_range() -> None:
    a = simulate_pairs("train", 2, config=TINY, seed=3)
    b = simulate_pairs("train", 2, config=TINY, seed=3)
    assert np.array_equal(a.low, b.low) and np.array_equal(a.reference, b.reference)
    assert np.array_equal(a.doses, b.doses)
    assert a.regions == ("abdomen", "thorax")
    assert a.low.shape == (2, 2, 128, 128) and a.low.dtype == np.int16
    assert ((a.doses >= 0.10) & (a.doses <= 0.50)).all()
    # the low-dose scan is noisier than the reference inside the body
    body = a.body[0]
    assert np.std(a.low[0, 0][body] - a.reference[0][body]) > 5.0
    c = simulate_pairs("train", 2, config=TINY, seed=4)
    assert not np.array_equal(a.reference, c.reference)


def test_cache_is_written_once_and_read_back(tmp_path: Path) -> None:
    first = load_pairs(2, config=TINY, seed=0, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and "seed0_n2_px128" in files[0].name
    stamp = files[0].stat().st_mtime_ns
    again = load_pairs(2, config=TINY, seed=0, cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == stamp
    for field in ("low", "reference", "doses", "body", "phantom_seeds"):
        assert np.array_equal(getattr(first, field), getattr(again, field)), field
    assert first.regions == again.regions and first.pixel_mm == again.pixel_mm


def test_patches_are_deterministic_and_flip_input_and_target_together() -> None:
    pairs = simulate_pairs("train", 2, config=TINY, seed=0)
    x1, y1 = PatchSampler(pairs, patch_px=32, rng=data_rng(0, 1)).batch(6)
    x2, y2 = PatchSampler(pairs, patch_px=32, rng=data_rng(0, 1)).batch(6)
    assert x1.shape == y1.shape == (6, 1, 32, 32) and x1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # input and target show the same anatomy: far closer to each other than to another patch
    assert np.abs(x1 - y1).mean() < np.abs(x1 - y1[::-1]).mean()
    with pytest.raises(ValueError, match="patch_px"):
        PatchSampler(pairs, patch_px=200, rng=data_rng(0, 1))
