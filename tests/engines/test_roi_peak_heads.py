"""Tests of the peak heads (engines.roi.peak_heads) and their read-out over model windows
(engines.roi.peak_readout, engines.roi.detector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devices.spectra_sim import PEAK_DTYPE, SpectrumSimConfig, simulate
from engines.roi.detector import RoiDetector, RoiDetectorConfig
from engines.roi.peak_decode import N_HEADS, decode_peaks, peak_targets
from engines.roi.peak_heads import RoiPeakNet, peak_loss


def _peaks(centres: list[float], widths: list[int], heights: list[float]) -> np.ndarray:
    p = np.zeros(len(centres), PEAK_DTYPE)
    p["center"], p["width"], p["height"] = centres, widths, heights
    return p


def _heads(length: int, peaks: np.ndarray) -> np.ndarray:
    """What a perfect model outputs for ``peaks``: the targets, heatmap as logits."""
    dense, regress, _ = peak_targets([peaks], np.zeros((1, length), bool))
    heat = np.clip(dense[0, 1], 1e-6, 1 - 1e-6)
    out = np.concatenate([dense[0, :1], np.log(heat / (1 - heat))[None], regress[0]])
    return out.astype(np.float32)


def test_targets_mark_each_centre() -> None:
    p = _peaks([10.5, 40.2], [7, 20], [0.5, 0.9])
    dense, regress, centres = peak_targets([p], np.zeros((1, 64), bool))
    assert np.flatnonzero(centres[0]).tolist() == [11, 40]  # round half up: 10.5 -> 11
    assert dense[0, 1, [11, 40]].tolist() == [1.0, 1.0]
    assert regress[0, 0, [11, 40]] == pytest.approx([-0.5, 0.2])
    assert regress[0, 1, [11, 40]] == pytest.approx(np.log([7, 20]))
    assert regress[0, 2, [11, 40]] == pytest.approx([0.5, 0.9])


def test_decode_keeps_local_maxima_above_threshold() -> None:
    p = _peaks([10.5, 13.2, 40.0, 90.0], [7, 9, 20, 5], [0.5, 0.4, 0.9, 0.2])
    heads = _heads(128, p)
    found = decode_peaks(heads)
    assert found["index"] == pytest.approx([10.5, 13.2, 40.0, 90.0], abs=1e-5)
    assert found["width"] == pytest.approx([7, 9, 20, 5], rel=1e-5)
    assert found["height"] == pytest.approx([0.5, 0.4, 0.9, 0.2], abs=1e-6)
    heads[1, 90] = -5.0  # below the threshold now
    assert 90.0 not in decode_peaks(heads)["index"]
    with pytest.raises(ValueError):
        decode_peaks(heads[:3])


def test_loss_prefers_the_truth_and_trains() -> None:
    torch.manual_seed(0)
    b = simulate(4, config=SpectrumSimConfig(), rng=np.random.default_rng(0))
    dense, regress, centres = (torch.from_numpy(a) for a in peak_targets(b.peaks, b.roi))
    perfect = torch.cat([torch.where(dense[:, :1] > 0, 9.0, -9.0),
                         torch.logit(dense[:, 1:2].clamp(1e-4, 1 - 1e-4)), regress], dim=1)
    good, _ = peak_loss(perfect, dense, regress, centres)
    net = RoiPeakNet((4, 8, 8, 8, 8))
    x = torch.from_numpy(b.spectra).unsqueeze(1)
    out = net(x)
    assert out.shape == (4, N_HEADS, 512)
    bad, parts = peak_loss(out, dense, regress, centres)
    assert good.item() < bad.item()
    assert set(parts) == {"focal", "roi_bce", "offset", "width", "height"}
    bad.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("fit", [None, "pvoigt"])
@pytest.mark.parametrize("length", [300, 512, 1300])
def test_each_peak_is_read_once_across_windows(length: int, fit: str | None) -> None:
    """Peaks in window overlaps are reported by the one window that owns them, in spectrum
    samples, with heights in the spectrum's own units."""
    rng = np.random.default_rng(length)
    centres = np.sort(rng.choice(np.arange(20, length - 20, 9), size=length // 60, replace=False))
    x = np.arange(length, dtype=np.float64)
    y = 5.0 + np.zeros(length)
    for c in centres:
        y += 2.0 * np.exp(-0.5 * ((x - c) / 2.0) ** 2)
    det = RoiDetector(RoiDetectorConfig(peak_fit=fit))  # type: ignore[arg-type]
    windows, plan = det.prepare(y)
    scale = 512 / length if plan.strategy == "resample" else 1.0
    heads = []
    for k in range(len(windows)):
        start = 0 if plan.strategy == "resample" else int(plan.starts[k]) - plan.pad_left
        local = (centres + 0.5) * scale - 0.5 if scale != 1.0 else centres - start
        inside = (local >= 0) & (local <= 511)
        span = float(np.ptp(y if scale != 1.0 else y[start : start + 512]))
        p = _peaks(list(local[inside]), [9] * int(inside.sum()), [2.0 / span] * int(inside.sum()))
        heads.append(_heads(512, p))
    result = det.finish(y, np.stack(heads), plan)
    got = np.array([p["index"] for p in result["peaks"]])
    assert got == pytest.approx(centres, abs=0.01 if scale == 1.0 else 0.6)
    assert [p["height"] for p in result["peaks"]] == pytest.approx([2.0] * len(centres), rel=0.05)
    assert {"index_sd", "height_sd", "overlaps", "start", "end"} <= set(result["peaks"][0])
