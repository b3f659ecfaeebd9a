"""End-to-end smoke test of the ROI evaluation report (engines.roi.evaluate); slow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.roi.evaluate import DEFAULT_SEED, _rng, _simulate, evaluate_roi, ood_groups


def test_test_stream_is_the_training_modules_test_stream() -> None:
    from devices.spectra_sim import SpectrumSimConfig, simulate
    from engines.roi.train import ROI_TEST_SEED, roi_data_rng

    assert DEFAULT_SEED == ROI_TEST_SEED
    ours = _simulate(5, SpectrumSimConfig(), _rng(DEFAULT_SEED, "test"), "test")
    theirs = simulate(5, rng=roi_data_rng("test"))
    assert np.array_equal(np.stack(ours.spectra), theirs.spectra)


def test_smaller_test_sets_are_prefixes() -> None:
    from devices.spectra_sim import SpectrumSimConfig

    big = _simulate(1500, SpectrumSimConfig(), _rng(1, "test"), "test")
    small = _simulate(1000, SpectrumSimConfig(), _rng(1, "test"), "test")
    assert np.array_equal(np.stack(big.spectra[:1000]), np.stack(small.spectra))


def test_ood_groups_cover_the_brief() -> None:
    cfgs = dict(ood_groups())
    assert {c.shape for c in cfgs.values()} == {"hann", "gauss", "lorentz", "voigt"}
    assert min(c.length for c in cfgs.values()) == 256
    assert max(c.length for c in cfgs.values()) == 4096
    assert any(c.overlap == "force" for c in cfgs.values())
    assert any(c.spikes[1] > 0 for c in cfgs.values())
    assert any(c.width == (3, 61) for c in cfgs.values())


@pytest.mark.slow
def test_tiny_report_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "roi.json"
    report = evaluate_roi(
        json_path=path,
        n_test=40,
        models=(),
        n_ood=13,
        n_baseline=20,
        n_validation=6,
        n_peak_free_per_band=3,
        n_windowing_per_length=2,
        progress=False,
    )
    on_disk = json.loads(path.read_text())
    assert on_disk["sizes"]["n_test"] == 40
    assert set(on_disk["models"]) == {"arpls_find_peaks", "find_peaks_cwt"}
    for entry in on_disk["models"].values():
        assert {"roi_loss", "peak_f1", "by_snr"} <= set(entry)
        assert set(entry["by_snr"]) == {"low", "mid", "high"}
    assert "ROI evaluation" in capsys.readouterr().out
    assert report["seeds"]["root"] == DEFAULT_SEED
