"""Serving 2-D slices of any size on a fixed engine tile, in fixed (CT) or per-slice units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.backends.eager import eager_infer
from engines.ct.models import RedCnn
from engines.ct.specs import CT_UNITS
from engines.slices import SliceUnits, axis_plan, cut_tiles, denoise_slices, stitch_tiles


@pytest.mark.parametrize("length", [5, 32, 33, 70, 100])
def test_axis_plan_covers_every_pixel_once_with_context(length: int) -> None:
    plan = axis_plan(length, 32, 6)
    covered = np.zeros(length, int)
    for start in plan.starts:
        first = start + plan.keep - plan.pad_before
        covered[first:first + plan.kept] += 1
        assert start + plan.tile <= plan.pad_before + length + plan.pad_after
    assert (covered >= 1).all()
    if length > 32:
        assert plan.kept == 32 - 2 * 6 and plan.keep == 6


def test_units_round_trip() -> None:
    hu = np.array([-1000.0, 0.0, 40.0, 1500.0], np.float32)
    assert np.allclose(CT_UNITS.to_model(hu), [0.0, 1.0, 1.04, 2.5])
    assert np.allclose(CT_UNITS.from_model(CT_UNITS.to_model(hu)), hu, atol=1e-3)


def test_per_slice_units_round_trip_whatever_the_activity() -> None:
    units = SliceUnits(unit="Bq/ml")
    for activity in (1e-3, 1.0, 5e4):
        v = np.random.default_rng(1).gamma(2.0, activity, (16, 16)).astype(np.float32)
        scale = units.scale_for(v)
        x = units.to_model(v, scale)
        assert abs(float(x.mean()) - 1.0) < 1e-4  # the mean of positive values maps to 1
        assert np.allclose(units.from_model(x, scale), v, rtol=1e-5)
    assert units.scale_for(np.zeros((4, 4))) == 1.0
    with pytest.raises(ValueError, match="scale back"):
        units.from_model(np.ones(3))


@pytest.mark.parametrize("shape", [(2, 20, 27), (1, 32, 32), (1, 75, 41)])
def test_identity_model_gives_the_slices_back(shape: tuple[int, int, int]) -> None:
    hu = np.random.default_rng(0).normal(0, 300, shape).astype(np.float32)
    calls = []

    def identity(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch.copy()

    out = denoise_slices(identity, hu, tile=32, margin=6, batch=3, units=CT_UNITS)
    assert out.shape == hu.shape and out.dtype == np.float32
    assert np.allclose(out, hu, atol=1e-3)
    assert all(s[0] <= 3 and s[1:] == (1, 32, 32) for s in calls)


def test_red_cnn_tiles_are_exact_when_the_margin_covers_its_receptive_field() -> None:
    torch.manual_seed(0)
    net = RedCnn(features=4).eval()
    hu = np.random.default_rng(1).normal(0, 200, (1, 90, 90)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(CT_UNITS.to_model(hu)[:, None])
        whole = CT_UNITS.from_model(net(x).numpy()[:, 0])
    tiled = denoise_slices(eager_infer(net), hu, tile=64, margin=RedCnn.receptive_radius_px,
                           batch=4, units=CT_UNITS)
    # away from the slice border (where tiles pad with edge values and the whole slice does not)
    r = RedCnn.receptive_radius_px
    assert np.allclose(tiled[:, r:-r, r:-r], whole[:, r:-r, r:-r], atol=1e-3)


def test_cut_and_stitch_are_the_two_halves() -> None:
    hu = np.random.default_rng(2).normal(0, 300, (75, 41)).astype(np.float32)
    tiles, plan = cut_tiles(hu, tile=32, margin=6, units=CT_UNITS)
    assert tiles.shape == (len(plan.origins), 1, 32, 32) and tiles.flags.c_contiguous
    assert tiles.dtype == np.float32
    assert np.allclose(stitch_tiles(tiles, plan), hu, atol=1e-3)
