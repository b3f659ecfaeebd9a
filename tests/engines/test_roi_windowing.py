"""Tests of spectra of any length in and out of 512-sample windows (engines.roi.windowing)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import InputContractError
from engines.roi.windowing import (
    MAX_LENGTH_SAMPLES,
    WINDOW_SAMPLES,
    WindowPlan,
    check_spectrum,
    from_windows,
    to_windows,
)

LENGTHS = [1, 2, 100, 511, 512, 513, 1000, 4096]


def _index_logits(plan: WindowPlan) -> np.ndarray:
    """Fake logits whose value is the input sample each window position stands for."""
    pos = plan.starts[:, None] + np.arange(plan.window)[None, :] - plan.pad_left
    return pos[:, None, :].astype(np.float32)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("stitch", ["centre", "mean"])
@pytest.mark.parametrize("overlap", [0, 128, 511])
def test_window_shapes_and_exact_stitch(length: int, stitch: str, overlap: int) -> None:
    x = np.random.default_rng(length).random(length).astype(np.float32)
    w, plan = to_windows(x, overlap=overlap, stitch=stitch, short="pad")  # type: ignore[arg-type]
    assert w.dtype == np.float32 and w.shape == (plan.n_windows, 1, WINDOW_SAMPLES)
    assert w.min() >= 0.0 and w.max() <= 1.0
    padded = max(length, WINDOW_SAMPLES)
    stride = WINDOW_SAMPLES - overlap
    assert plan.n_windows == 1 + -(-(padded - WINDOW_SAMPLES) // stride)
    assert plan.starts[-1] == padded - WINDOW_SAMPLES  # the last window is flush with the end
    back = from_windows(_index_logits(plan), plan)
    assert back.shape == (length,) and back.dtype == np.float32
    assert np.array_equal(back, np.arange(length, dtype=np.float32))


def test_window_content_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=2000)) * 10 + 500
    w, plan = to_windows(x, overlap=128, normalisation="window")
    assert np.allclose(w.min(axis=2), 0) and np.allclose(w.max(axis=2), 1)
    g, _ = to_windows(x, overlap=128, normalisation="global")
    glob = (x - x.min()) / np.ptp(x)
    for k, s in enumerate(plan.starts):
        assert np.allclose(g[k, 0], glob[s : s + WINDOW_SAMPLES], atol=1e-6)
    # a spectrum of exactly 512 samples is one window, normalised as in training
    y = rng.random(512) * 7 - 2
    (one,), _ = to_windows(y)
    assert np.allclose(one[0], (y - y.min()) / np.ptp(y), atol=1e-6)


def test_short_spectra_are_stretched_by_default() -> None:
    x = np.arange(100, dtype=np.float64)
    w, plan = to_windows(x)
    assert plan.strategy == "resample" and w.shape == (1, 1, 512)
    assert np.allclose(
        w[0, 0], np.clip((np.arange(512) + 0.5) * 100 / 512 - 0.5, 0, 99) / 99, atol=1e-6
    )
    # a spectrum of the window's length is one window however short spectra are served
    assert to_windows(np.arange(512.0))[1].strategy == "window"


def test_short_spectra_can_be_padded_by_reflection() -> None:
    x = np.arange(100, dtype=np.float64)
    w, plan = to_windows(x, short="pad")
    assert plan.n_windows == 1 and plan.pad_left == (512 - 100) // 2
    inner = w[0, 0, plan.pad_left : plan.pad_left + 100]
    assert np.allclose(inner, x / 99, atol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 100, 512, 513, 4096])
def test_resample_round_trip(length: int) -> None:
    x = np.linspace(0.0, 1.0, length) ** 2
    w, plan = to_windows(x, strategy="resample")
    assert w.shape == (1, 1, WINDOW_SAMPLES) and plan.n_windows == 1
    # constant logits stay constant, a ramp is interpolated back within rounding
    const = from_windows(np.full((1, 1, 512), 3.0, np.float32), plan)
    assert const.shape == (length,) and np.allclose(const, 3.0)
    r = length / 512
    centres = (np.arange(512) + 0.5) * r - 0.5
    ramp = from_windows(centres[None, None, :].astype(np.float32), plan)
    inside = (np.arange(length) >= centres[0]) & (np.arange(length) <= centres[-1])
    assert np.allclose(ramp[inside], np.arange(length)[inside], atol=1e-3 * max(length, 1))


def test_resample_down_keeps_narrow_peaks() -> None:
    # box-filter decimation keeps a 3-sample peak's area; point sampling could miss it
    x = np.zeros(4096)
    x[2001:2004] = [0.5, 1.0, 0.5]
    w, _ = to_windows(x, strategy="resample")
    assert w.max() == pytest.approx(1.0)
    assert np.count_nonzero(w) in (1, 2)


def test_constant_spectrum_gives_zeros_not_nan() -> None:
    for strategy in ("window", "resample"):
        w, _ = to_windows(np.full(700, 3.0), strategy=strategy)  # type: ignore[arg-type]
        assert np.all(w == 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(0),
        np.zeros((2, 512)),
        np.array([1.0, np.nan, 2.0]),
        np.array([1.0, np.inf]),
        np.zeros(8, dtype=np.complex64),
        np.array(["a", "b"]),
        np.zeros(3, dtype=bool),
        np.zeros(MAX_LENGTH_SAMPLES + 1, dtype=np.float32),
        [1.0, 2.0, 3.0],
    ],
)
def test_bad_spectra_are_rejected(bad: object) -> None:
    with pytest.raises(InputContractError) as info:
        check_spectrum(bad)
    assert info.value.code in ("bad_dtype", "bad_shape", "empty", "too_long", "input_contract")


def test_integer_spectra_are_accepted_and_bad_logits_rejected() -> None:
    w, plan = to_windows(np.arange(600, dtype=np.int16))
    assert w.shape == (2, 1, 512)
    with pytest.raises(InputContractError):
        from_windows(np.zeros((3, 1, 512), np.float32), plan)
    with pytest.raises(ValueError):
        to_windows(np.zeros(600), overlap=512)
    with pytest.raises(ValueError):
        to_windows(np.zeros(600), short="crop")  # type: ignore[arg-type]
