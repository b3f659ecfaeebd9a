"""Tests of the ROI detector around an engine (engines.roi.detector)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from checks import assert_frozen_kw_only
from scipy.ndimage import grey_opening

from engines.errors import InputContractError
from engines.roi.detector import RoiDetector, RoiDetectorConfig, detect

CENTRES = (0.2, 0.45, 0.8)  # fractions of the length


def _spectrum(length: int, noise: float = 0.0) -> tuple[np.ndarray, list[float]]:
    """Gaussian peaks (sigma 3 samples) on a slope, optional white noise."""
    x = np.arange(length, dtype=np.float64)
    centres = [c * (length - 1) for c in CENTRES]
    y = 0.001 * x + 2.0
    for c in centres:
        y += np.exp(-0.5 * ((x - c) / 3.0) ** 2)
    y += np.random.default_rng(length).normal(0, noise, length)
    return y.astype(np.float32), centres


def _peaky_engine(windows: np.ndarray) -> np.ndarray:
    """An identity-like 'model': ROI where a window rises above its morphological opening
    (a 41-sample opening follows the sloped background, not the 7-sample-wide peaks)."""
    w = windows[:, 0, :].astype(np.float64)
    background = grey_opening(w, size=(1, 41), mode="nearest")
    logits = np.where(w - background > 0.05, 8.0, -8.0)
    return logits[:, None, :].astype(np.float32)


@pytest.mark.parametrize("length", [300, 512, 2000, 5000])
@pytest.mark.parametrize("strategy", ["window", "resample"])
def test_detect_finds_the_peaks(length: int, strategy: str) -> None:
    y, centres = _spectrum(length, noise=0.002)
    out = detect(y, _peaky_engine, config=RoiDetectorConfig(strategy=strategy))  # type: ignore[arg-type]
    assert set(out) == {"roi", "peaks"}
    idx = sorted(p["index"] for p in out["peaks"])
    assert len(idx) == len(centres)
    assert np.allclose(idx, centres, atol=0.5)
    for (s, e), p in zip(out["roi"], sorted(out["peaks"], key=lambda p: p["start"]), strict=True):
        assert 0 <= s < e <= length and p["start"] == s and p["end"] == e
        if strategy == "window" or length <= 512:
            # decimated logits give coarse ROI edges that cut into the peak
            assert p["height"] == pytest.approx(1.0, abs=0.1)
            assert p["width"] == pytest.approx(2.3548 * 3.0, abs=0.5)


def test_prepare_finish_round_trip_and_msgpack() -> None:
    det = RoiDetector()
    y, _ = _spectrum(1500)
    windows, plan = det.prepare(y)
    assert windows.dtype == np.float32 and windows.shape[1:] == (1, 512)
    result = det.finish(y, _peaky_engine(windows), plan)
    assert msgpack.unpackb(msgpack.packb(result)) == result
    assert all(type(v) is int for r in result["roi"] for v in r)


def test_threshold_and_min_width() -> None:
    y = np.zeros(512, np.float32)

    def engine(w: np.ndarray) -> np.ndarray:
        z = np.full(w.shape, -5.0, np.float32)
        z[0, 0, 100] = 5.0  # one-sample ROI
        z[0, 0, 200:210] = 0.1  # sigmoid 0.525
        return z

    assert detect(y, engine)["roi"] == [[200, 210]]  # default min width 2 drops the blip
    assert detect(y, engine, config=RoiDetectorConfig(min_roi_width_samples=1))["roi"] == [
        [100, 101],
        [200, 210],
    ]
    assert detect(y, engine, config=RoiDetectorConfig(threshold=0.6))["roi"] == []


def test_empty_result_when_nothing_detected() -> None:
    out = detect(np.ones(700, np.float32), lambda w: np.full(w.shape, -3.0, np.float32))
    assert out == {"roi": [], "peaks": []}


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(0, np.float32),
        np.zeros((1, 512), np.float32),
        np.array([0.0, np.nan], np.float32),
        np.array([np.inf, 1.0]),
        np.zeros(4, np.complex128),
        np.array([object(), object()]),
    ],
)
def test_bad_inputs_raise_input_contract_error(bad: np.ndarray) -> None:
    with pytest.raises(InputContractError):
        RoiDetector().prepare(bad)


def test_length_limit_and_plan_mismatch() -> None:
    det = RoiDetector(RoiDetectorConfig(max_length_samples=1000))
    with pytest.raises(InputContractError, match="maximum 1000"):
        det.prepare(np.zeros(1001, np.float32))
    windows, plan = det.prepare(np.zeros(800, np.float32))
    with pytest.raises(InputContractError):
        det.finish(np.zeros(700, np.float32), np.zeros_like(windows), plan)
    with pytest.raises(InputContractError):
        det.finish(np.zeros(800, np.float32), np.zeros((1, 1, 512), np.float32), plan)


def test_config_is_frozen_kw_only_and_validated() -> None:
    cfg = assert_frozen_kw_only(RoiDetectorConfig)
    for bad in (
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"min_roi_width_samples": 0},
        {"strategy": "crop"},
        {"overlap_samples": 512},
        {"split_prominence_sigma": 0},
        {"normalisation": "none"},
        {"stitch": "max"},
        {"short": "crop"},
    ):
        with pytest.raises(ValueError):
            RoiDetectorConfig(**bad)  # type: ignore[arg-type]
    assert cfg.threshold_logit == 0.0


def test_peaks_below_the_height_floor_are_dropped() -> None:
    rng = np.random.default_rng(2)
    x = np.arange(512, dtype=np.float64)
    y = rng.normal(0, 0.01, 512) + 0.5 * np.exp(-0.5 * ((x - 300) / 3.0) ** 2)

    def engine(w: np.ndarray) -> np.ndarray:
        z = np.full(w.shape, -5.0, np.float32)
        z[0, 0, 100:110] = 5.0  # noise only
        z[0, 0, 290:311] = 5.0  # the peak (50 sigma)
        return z

    out = detect(y, engine)
    assert out["roi"] == [[100, 110], [290, 311]]  # ROIs are the segmenter's answer
    assert len(out["peaks"]) == 1 and out["peaks"][0]["start"] == 290
    kept = detect(y, engine, config=RoiDetectorConfig(min_peak_height_sigma=None))
    assert len(kept["peaks"]) >= 2
