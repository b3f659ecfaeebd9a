"""The CT evaluation on tiny data: its JSON layout, targets block, table and task metric."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_ct_denoise import tiny_unet_spec

from engines.ct.evaluate import EvalSizes, ct_report, format_table, task_metric
from engines.ct.evaluate.sets import phantom_set
from engines.ct.metrics import psnr_db
from engines.ct.specs import CT_SPECS
from engines.report import write_report

TINY = EvalSizes(size_px=128, n_test=1, n_validation=1, real_files=("CT_small.dcm",),
                 bm3d_crop_px=None)
FIGURES = {"psnr_db", "psnr_wide_db", "ssim", "rmse_hu", "hu_bias", "hu_bias_abs",
           "noise_sd_hu", "mtf50_lp_per_cm", "mtf50_ratio", "per_slice_psnr_db"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("pydicom.data")
    folder = tmp_path_factory.mktemp("ct_eval")
    specs = {"unet": tiny_unet_spec(folder, tile=128),
             "red_cnn": dataclasses.replace(CT_SPECS["red_cnn"], weights_dir=folder)}
    return ct_report(sizes=TINY, specs=specs, baselines=("gaussian",), threads=1,
                     progress=False)


def test_layout(report: dict[str, Any], tmp_path: Path) -> None:
    assert report["served"] == "unet"
    assert set(report["sets"]) == {"phantom", "real"}
    for name, block in report["sets"].items():
        assert list(block["doses"]) == ["0.1", "0.25", "0.5"]
        for entry in block["doses"].values():
            assert list(entry["methods"]) == ["low_dose", "gaussian", "unet"]
            for figures in entry["methods"].values():
                assert FIGURES <= set(figures), name
    assert block["slices"] == ["CT_small"]
    assert "no weights" in report["skipped"]["red_cnn"]
    assert set(report["tuned"]["gaussian"]["doses"]) == {"0.1", "0.25", "0.5"}
    # JSON-ready as it is (NaN already None)
    again = json.loads(write_report(report, tmp_path / "ct_eval.json").read_text())
    assert again == report


def test_figures_make_sense(report: dict[str, Any]) -> None:
    for block in report["sets"].values():
        low = [block["doses"][d]["methods"]["low_dose"]["psnr_db"] for d in ("0.1", "0.5")]
        assert low[1] > low[0]  # more dose, less noise
        for entry in block["doses"].values():
            m = entry["methods"]
            # the untrained residual UNet is the identity: the low-dose figures, to ~0.01 dB
            assert m["unet"]["psnr_db"] == pytest.approx(m["low_dose"]["psnr_db"], abs=0.01)
            assert m["gaussian"]["psnr_db"] > m["low_dose"]["psnr_db"]
            assert m["gaussian"]["noise_sd_hu"] < m["low_dose"]["noise_sd_hu"]


def test_targets_state_each_figure_and_verdict(report: dict[str, Any]) -> None:
    targets = report["targets"]
    assert (targets["model"], targets["dose"], targets["set"]) == ("unet", "0.25", "real")
    for key in ("psnr_gain_over_low_dose_db", "psnr_over_best_classical_db", "hu_bias_abs",
                "noise_sd_ratio", "mtf50_ratio"):
        assert isinstance(targets[key]["met"], bool), key
        assert "value" in targets[key]
    # an identity model gains nothing: the PSNR targets are not met
    assert targets["psnr_gain_over_low_dose_db"]["met"] is False
    assert targets["psnr_over_best_classical_db"]["best_classical"] == "gaussian"
    assert targets["noise_sd_ratio"]["value"] == pytest.approx(1.0, abs=0.01)


def test_table_prints_every_method(report: dict[str, Any]) -> None:
    table = format_table(report)
    for word in ("phantom", "real", "low_dose", "gaussian", "unet", "targets",
                 "skipped red_cnn"):
        assert word in table


def test_task_metric_of_the_identity_is_the_low_dose_psnr() -> None:
    slices = phantom_set("test", EvalSizes(size_px=128, n_test=1), doses=(0.25,))
    ev = slices[0]
    value = task_metric(lambda x: x.copy(), slices, tile=128, batch=1)
    assert value == pytest.approx(psnr_db(ev.low[0.25], ev.reference, mask=ev.body), abs=1e-3)
    assert np.isfinite(value)
