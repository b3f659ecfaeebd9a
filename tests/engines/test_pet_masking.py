"""Blind-spot masking (Noise2Void, N2V2, structured): the inputs at a blind spot never hold the
value the network must predict there."""

from __future__ import annotations

import numpy as np
import pytest

from engines.pet.masking import Masking, mask_batch

MASKINGS = [Masking(), Masking(replace="median"), Masking(struct_px=2),
            Masking(struct_px=1, replace="median"), Masking(fraction=0.05, window_px=5)]


@pytest.mark.parametrize("masking", MASKINGS, ids=str)
def test_a_blind_spot_never_sees_its_own_value(masking: Masking) -> None:
    rng = np.random.default_rng(0)
    # Every pixel a different value, so a value names the pixel it came from.
    patches = rng.permutation(4 * 40 * 40).astype(np.float32).reshape(4, 40, 40)
    inputs, chosen = mask_batch(patches, masking, rng)
    assert inputs.shape == patches.shape and chosen.dtype == bool
    s = masking.struct_px
    for b, y, x in zip(*np.nonzero(chosen), strict=True):
        hidden = patches[b, max(y - s, 0):y + s + 1, max(x - s, 0):x + s + 1]
        shown = inputs[b, max(y - s, 0):y + s + 1, max(x - s, 0):x + s + 1]
        if masking.replace == "uniform":
            assert not np.isin(shown, hidden).any()  # no hidden value anywhere in the square
        else:  # a median of the window outside the square (of distinct values: not theirs)
            assert not np.isin(shown[shown == shown.flat[0]], hidden).any()
    changed = inputs != patches
    assert changed[chosen].all()
    assert not changed[~_squares(chosen, s)].any()  # nothing outside the squares moves


def _squares(chosen: np.ndarray, s: int) -> np.ndarray:
    out = chosen.copy()
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            out |= np.roll(chosen, (dy, dx), axis=(1, 2))
    return out


def test_blind_spots_are_spread_over_the_patch_at_the_asked_fraction() -> None:
    masking = Masking(fraction=0.01)  # one pixel per 10 x 10 cell
    _, chosen = mask_batch(np.zeros((8, 100, 100), np.float32), masking,
                           np.random.default_rng(1))
    assert chosen.sum() == 8 * 100
    cells = chosen.reshape(8, 10, 10, 10, 10).sum(axis=(2, 4))
    assert (cells == 1).all()


def test_masking_is_deterministic_by_its_generator() -> None:
    patches = np.random.default_rng(2).normal(size=(2, 32, 32)).astype(np.float32)
    a = mask_batch(patches, Masking(struct_px=1), np.random.default_rng(5))
    b = mask_batch(patches, Masking(struct_px=1), np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"window_px": 4}, {"replace": "mean"},
                                    {"struct_px": 5}])
def test_bad_masking_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Masking(**kwargs)  # type: ignore[arg-type]
