"""The CT denoising API: shapes, dtype, refusals; an untrained residual UNet is the identity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.ct import CtDenoiser, denoise_volume
from engines.ct.models import ResidualUNet
from engines.ct.specs import CT_SPECS
from engines.errors import ConfigError, InputContractError, WeightsNotFoundError
from engines.spec import ModelSpec


def tiny_unet_spec(folder: Path, tile: int = 64) -> ModelSpec:
    """A narrow residual UNet on a ``tile``² item with its untrained (identity) weights in
    ``folder``."""
    base = CT_SPECS["unet"]
    spec = dataclasses.replace(base, input_shape=(1, tile, tile), output_shape=(1, tile, tile),
                               weights_dir=folder, build=lambda: ResidualUNet((4, 4, 8, 8, 16, 4)),
                               extra={**base.extra, "tile_margin_px": 8})
    torch.manual_seed(0)
    torch.save(spec.build().state_dict(), spec.weights_path)
    return spec


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    return tiny_unet_spec(tmp_path_factory.mktemp("ct_weights"))


@pytest.mark.parametrize("shape", [(40, 40), (3, 64, 64), (2, 100, 70)])
def test_volumes_and_slices_keep_shape_and_dtype(spec: ModelSpec,
                                                 shape: tuple[int, ...]) -> None:
    hu = np.random.default_rng(0).normal(0, 200, shape).astype(np.int16)
    with CtDenoiser(spec=spec, backend="eager", batch=2) as denoiser:
        out = denoiser.denoise(hu, spacing_mm=(0.7,) * len(shape))
        again = denoiser.denoise(hu)
    assert out.shape == hu.shape and out.dtype == np.float32
    assert np.allclose(out, hu, atol=0.01)  # the untrained residual UNet is the identity
    assert np.array_equal(out, again)


def test_denoiser_lifecycle(spec: ModelSpec) -> None:
    denoiser = CtDenoiser(spec=spec, backend="eager")
    assert denoiser.engine is None  # the constructor loads nothing
    denoiser.start()
    assert denoiser.engine is not None
    denoiser.close()
    denoiser.close()
    with pytest.raises(ConfigError, match="closed"):
        denoiser.denoise(np.zeros((16, 16), np.float32))


@pytest.mark.parametrize("bad, match", [
    (np.full((2, 32, 32), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((32,), np.float32), "expected a slice"),
    (np.zeros((1, 2, 32, 32), np.float32), "expected a slice"),
    (np.zeros((4, 4), np.float32), "at least"),
    (np.zeros((8, 8), bool), "real numbers"),
    ([[0.0] * 16] * 16, "numpy array"),
])
def test_bad_volumes_are_refused_before_anything_loads(bad: object, match: str) -> None:
    with pytest.raises(InputContractError, match=match):
        denoise_volume(bad)  # type: ignore[arg-type]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown CT model"):
        CtDenoiser("dncnn")
    with pytest.raises(ConfigError, match="batch"):
        CtDenoiser(batch=0)
    with pytest.raises(InputContractError, match="spacing_mm"):
        denoise_volume(np.zeros((16, 16), np.float32), spacing_mm=(1.0,))


def test_missing_weights_say_so(tmp_path: Path) -> None:
    spec = dataclasses.replace(CT_SPECS["unet"], weights_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="no weights"):
        CtDenoiser(spec=spec, backend="eager").start()
