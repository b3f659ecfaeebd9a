"""Tests of the ECG evaluation report (engines.ecg.evaluate) on tiny sizes.

The identity sections run on freshly initialised (untrained) models whose weights are written
to a temporary folder, so the plumbing (enrolment through the template store, genuine /
impostor bookkeeping, fusion, JSON) is checked without shipped weights; the figures of the
shipped models are checked by the last test when those weights exist.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from checks import shipped_report

from engines.ecg.evaluate import (
    DETECTION_FS_HZ,
    DETECTION_NOISE,
    EvalSizes,
    ecg_report,
    format_table,
)
from engines.ecg.evaluate.identity import _fused, _windows
from engines.ecg.specs import WEIGHTS_DIR
from engines.report import publish_report

TINY = EvalSizes(
    test_fs_hz=(128.0, 500.0),
    enrol_s=40.0,
    test_s=16.0,
    n_open_set=3,
    n_impostors=3,
    detection_subjects=(0,),
    detection_s=10.0,
)


def test_table_of_the_shipped_report() -> None:
    """The table is read from the report alone: the shipped report's figures, as printed."""
    report = shipped_report(WEIGHTS_DIR / "ecg_eval.json")
    lines = format_table(report).splitlines()
    assert lines[0] == f"ECG evaluation — cohort seed {report['seeds']['cohort']}"
    cs = report["closed_set"]
    ours, paper = 100 * cs["accuracy"], 100 * cs["paper"]["accuracy"]
    assert f"  {'accuracy':<10}{ours:>8.2f} %{paper:>8.1f} %" in lines
    r_peaks = next(i for i, x in enumerate(lines) if x.startswith("R peaks"))
    assert lines[r_peaks + 1].split() == ["fs", *report["r_peaks"]["by_noise"]]
    for key, target in report["targets"].items():
        state = "met" if target["met"] else "NOT met"
        assert any(x.startswith(f"target {key} ") and x.endswith(f"-> {state}") for x in lines)
    assert lines[-1] == f"total {report['timing_s']['total']:.0f} s"


def test_windows_never_straddle_records() -> None:
    record = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    assert _windows(record, 3).tolist() == [0, 3, 4]
    assert _windows(record, 1).tolist() == list(range(8))
    assert _windows(record, 5).size == 0
    assert _windows(np.zeros(0, np.int64), 2).size == 0


def test_fused_probes_are_the_matchers_fusion() -> None:
    from engines.ecg.matcher import fuse

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 4)).astype(np.float32)
    record = np.array([0, 0, 0, 0, 0, 0, 1])
    probes, last = _fused(emb, record, 5)
    assert last.tolist() == [4, 5]
    np.testing.assert_array_equal(probes[1], fuse(emb[1:6]))


def test_r_peak_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ecg.json"
    report = ecg_report(sections=("r_peaks",), sizes=TINY, progress=False)
    publish_report(report, format_table(report), path, tag="eval ecg")
    on_disk = json.loads(path.read_text())
    assert on_disk == report
    # computed first, then formatted: what is printed is the table of the returned report
    assert capsys.readouterr().out == format_table(report) + "\n"
    rp = report["r_peaks"]
    assert len(rp["cells"]) == len(DETECTION_FS_HZ) * len(DETECTION_NOISE)
    mix = {f"mix_{v}dB" for v in (30, 20, 15, 10)}
    muscle = {f"muscle_{v}dB" for v in (30, 20, 15, 10, 5, 0)}
    assert set(rp["by_noise"]) == {"session"} | mix | muscle
    # the session's mix is mostly baseline wander, which the QRS band removes; muscle noise
    # at the same broadband SNR leaves far more noise in that band
    band = {k: v["qrs_band_snr_db_median"] for k, v in rp["by_noise"].items()}
    assert band["muscle_10dB"] < band["mix_10dB"] - 6.0
    assert band["mix_10dB"] < band["mix_20dB"] < band["mix_30dB"]
    o = rp["overall"]
    n_cells = len(DETECTION_FS_HZ) * 5  # session + 4 mix levels make the target pool
    assert o["tp"] + o["fn"] >= 5 * n_cells  # 10 s of beats per cell
    assert rp["muscle_stress"]["tp"] > 0
    assert o["sensitivity"] > 0.95 and o["ppv"] > 0.95
    assert o["timing_error_ms_p95"] <= 50.0
    assert report["targets"]["r_peak_sensitivity"]["target_min"] == 0.995
    assert report["meta"]["versions"]["numpy"] == np.__version__
    assert "closed_set" not in report and "models" not in report


def test_real_recordings_skipped_with_a_reason(tmp_path: Path) -> None:
    report = ecg_report(
        sections=("real_recordings",), data_dir=tmp_path / "absent", progress=False
    )
    assert "skipped" in report["real_recordings"]
    assert report["real_recordings"]["skipped"]


def test_real_recordings_against_neurokit2() -> None:
    pytest.importorskip("neurokit2")
    from devices.ecg_recordings import DEFAULT_DATA_DIR, REAL_RECORDINGS

    data_dir = Path(__file__).resolve().parents[2] / DEFAULT_DATA_DIR
    if not all((data_dir / r.filename).is_file() for r in REAL_RECORDINGS.values()):
        pytest.skip("real recordings not extracted (make ecg-data)")
    report = ecg_report(sections=("real_recordings",), data_dir=data_dir, progress=False)
    real = report["real_recordings"]
    assert set(real["recordings"]) == set(REAL_RECORDINGS)
    for entry in real["recordings"].values():
        assert entry["beats_ours"] > 0 and entry["beats_neurokit2"] > 0
        assert entry["tp"] + entry["fn"] <= entry["beats_neurokit2"]
    # MIT-BIH 208 (300 s, many ectopic beats): both detectors count about the same beats
    mit = real["recordings"]["mitdb208"]
    assert abs(mit["beats_ours"] - mit["beats_neurokit2"]) < 0.05 * mit["beats_neurokit2"]
    assert real["overall"]["sensitivity"] > 0.8


def _random_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, card: dict[str, Any]) -> None:
    """Point ECG_SPECS at untrained weights in ``tmp_path`` (an absolute ``weights`` path
    replaces the weights folder)."""
    import torch

    from engines.ecg import specs

    torch.manual_seed(0)
    for key in ("cnn", "embedding"):
        spec = specs.ECG_SPECS[key]
        path = tmp_path / spec.weights
        torch.save(spec.build().state_dict(), path)
        if key == "embedding":
            path.with_suffix(".json").write_text(json.dumps(card))
        monkeypatch.setitem(specs.ECG_SPECS, key, dataclasses.replace(spec, weights=str(path)))


def test_identity_sections_bookkeeping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = {
        "accept_threshold": 0.9,
        "reject_threshold": 0.5,
        "fuse_beats": 5,
        "thresholds_by_k": {"1": {"accept_threshold": 0.95, "reject_threshold": 0.6}},
    }
    _random_weights(tmp_path, monkeypatch, card)
    path = tmp_path / "ecg.json"
    report = ecg_report(
        sections=("closed_set", "verification", "open_set"), sizes=TINY, progress=False
    )
    publish_report(report, format_table(report), path, tag="eval ecg")
    assert json.loads(path.read_text()) == report

    cs = report["closed_set"]
    assert cs["paper"]["accuracy"] == 0.932
    assert len(cs["confusion"]) == 18 and sum(map(sum, cs["confusion"])) == cs["n_beats"]
    assert cs["all_beats"]["n_beats"] >= cs["n_beats"] > 0
    assert set(cs["accuracy_by_fs_hz"]) == {"128", "500"}
    assert set(cs["accuracy_by_session"]) == {"1", "2"}

    ver = report["verification"]
    n_t = ver["n_templates"]
    assert n_t == 18 - len(ver["enrolment"]["not_enrolled"])
    for mode in ("single", "fused"):
        r = ver[mode]
        n_probes = ver[f"n_probes_{mode}"]
        assert r["n_genuine"] + r["n_impostor"] == n_probes * n_t
        assert 0.0 <= r["eer"] <= 1.0
        d = r["at_shipped_thresholds"]
        assert sum(d["genuine_decisions"].values()) == r["n_genuine"]
        assert sum(d["impostor_decisions"].values()) == r["n_impostor"]
        # single beats are decided with the card's k = 1 row, fused probes with its k = 5 one
        expected = (0.95, 0.6) if mode == "single" else (0.9, 0.5)
        assert (d["accept_threshold"], d["reject_threshold"]) == expected
    assert ver["n_probes_fused"] < ver["n_probes_single"]
    assert ver["enrolment"]["beats_per_subject_min"] >= 5

    op = report["open_set"]
    assert op["n_templates"] <= 3
    ident = op["impostor_identification"]
    assert ident["subjects"] == [2000, 2001, 2002]
    assert ident["single"]["gallery_size"] == n_t + op["n_templates"]
    assert 0.0 <= ident["single"]["accepted_as_anyone"] <= 1.0
    assert set(report["targets"]) >= {
        "closed_set_accuracy",
        "seen_eer_single",
        "seen_eer_fused",
        "open_set_eer_ratio_single",
        "impostor_identification_accept_fused",
    }
    assert report["models"]["embedding"]["weights_sha256"]


def test_degenerate_sizes_do_not_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _random_weights(tmp_path, monkeypatch, {"accept_threshold": 0.9, "reject_threshold": 0.5})
    tiny = EvalSizes(
        test_fs_hz=(250.0,), enrol_s=3.0, test_s=1.0, n_open_set=1, n_impostors=1
    )  # under 5 beats to enrol anyone, at most one beat to test
    report = ecg_report(
        sections=("closed_set", "verification", "open_set"), sizes=tiny, progress=False
    )
    assert json.dumps(report)
    ver = report["verification"]
    assert ver["n_templates"] == 0
    assert ver["enrolment"]["not_enrolled"] == [*range(18), 1000]
    assert "skipped" in ver["single"] and ver["worst_subject"] is None


def test_missing_weights_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.ecg import specs

    for key in ("cnn", "embedding"):
        spec = specs.ECG_SPECS[key]
        missing = dataclasses.replace(spec, weights=str(tmp_path / spec.weights))
        monkeypatch.setitem(specs.ECG_SPECS, key, missing)
    report = ecg_report(
        sections=("closed_set", "verification", "open_set"), sizes=TINY, progress=False
    )
    for name in ("closed_set", "verification", "open_set"):
        assert "skipped" in report[name]
    assert report["targets"] == {}


def test_thresholds_missing_from_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _random_weights(tmp_path, monkeypatch, {})
    report = ecg_report(sections=("verification",), sizes=TINY, progress=False)
    ver = report["verification"]
    assert "skipped" in ver["thresholds"]["single"] and "skipped" in ver["thresholds"]["fused"]
    assert "at_shipped_thresholds" not in ver["single"]
    assert ver["single"]["eer"] is not None


def test_unknown_section() -> None:
    with pytest.raises(ValueError):
        ecg_report(sections=("nope",), progress=False)


def test_quick_report_with_shipped_weights() -> None:
    from engines.ecg.specs import ECG_SPECS

    if not all(s.weights_path.is_file() for s in ECG_SPECS.values()):
        pytest.skip("no shipped ECG weights")
    report = ecg_report(
        quick=True,
        sections=("closed_set", "verification", "open_set", "r_peaks"),
        progress=False,
    )
    assert report["quick"] is True
    assert report["closed_set"]["accuracy"] > 0.5
    assert report["verification"]["single"]["eer"] < 0.25
    assert report["timing_s"]["total"] < 60
