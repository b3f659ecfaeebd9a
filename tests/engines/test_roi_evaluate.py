"""End-to-end smoke test of the ROI evaluation report (engines.roi.evaluate); slow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from checks import shipped_report

from engines.report import publish_report
from engines.roi.evaluate import DEFAULT_SEED, format_table, ood_groups, roi_report
from engines.roi.evaluate.protocol import simulate_spectra, stream_rng
from engines.roi.specs import WEIGHTS_DIR


def test_table_of_the_shipped_report() -> None:
    """The table is read from the report alone: the shipped report's figures, as printed."""
    report = shipped_report(WEIGHTS_DIR / "roi_eval.json")
    lines = format_table(report).splitlines()
    sizes = report["sizes"]
    assert lines[0] == (
        f"ROI evaluation — {sizes['n_test']} paper-protocol test spectra "
        f"(baselines: first {sizes['n_baseline_subset']}), seed {report['seeds']['root']}"
    )
    table = lines[3 : lines.index("")]  # the model rows, up to the first blank line
    rows = [r for r in table if r.split() and r.split()[0] in report["models"]]
    assert [r.split()[0] for r in rows] == list(report["models"])
    for row, m in zip(rows, report["models"].values(), strict=True):
        if "skipped" not in m:
            assert row.split()[1] == f"{m['roi_loss']:.4f}"
            assert row.split()[6] == f"{m['peak_f1']:.3f}"
    for key, t in report["targets"].items():
        if isinstance(t, dict) and "met" in t:
            state = "met" if t["met"] else "NOT met"
            assert any(line.startswith(f"target {key}") and line.endswith(f"-> {state}")
                       for line in lines), key
    assert lines[-1] == f"total {report['timing_s']['total']:.0f} s"


def test_test_stream_is_the_training_modules_test_stream() -> None:
    from devices.spectra_sim import SpectrumSimConfig, simulate
    from engines.roi.train import ROI_TEST_SEED, roi_data_rng

    assert DEFAULT_SEED == ROI_TEST_SEED
    ours = simulate_spectra(5, SpectrumSimConfig(), stream_rng(DEFAULT_SEED, "test"), "test")
    theirs = simulate(5, rng=roi_data_rng("test"))
    assert np.array_equal(np.stack(ours.spectra), theirs.spectra)


def test_smaller_test_sets_are_prefixes() -> None:
    from devices.spectra_sim import SpectrumSimConfig

    big = simulate_spectra(1500, SpectrumSimConfig(), stream_rng(1, "test"), "test")
    small = simulate_spectra(1000, SpectrumSimConfig(), stream_rng(1, "test"), "test")
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
    report = roi_report(
        n_test=40,
        models=(),
        n_ood=13,
        n_baseline=20,
        n_validation=6,
        n_peak_free_per_band=3,
        n_windowing_per_length=2,
        progress=False,
    )
    publish_report(report, format_table(report), path, tag="eval roi")
    on_disk = json.loads(path.read_text())
    assert on_disk["sizes"]["n_test"] == 40
    assert set(on_disk["models"]) == {"arpls_find_peaks", "find_peaks_cwt"}
    for entry in on_disk["models"].values():
        assert {"roi_loss", "peak_f1", "by_snr"} <= set(entry)
        assert set(entry["by_snr"]) == {"low", "mid", "high"}
    # computed first, then formatted: what is printed is the table of the returned report
    assert capsys.readouterr().out == format_table(report) + "\n"
    assert report["seeds"]["root"] == DEFAULT_SEED
