"""Batch denoising of volumes (:mod:`stream.batch`) with the CT denoiser on real DICOM and NIfTI
files: in this process, on a local pool of worker processes and on a fresh local Ray cluster;
bad items reported one line each while the others finish; a failed item tried once more."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_files import write_nifti_file, write_series

from devices.volumes import find_inputs, read_source
from engines.ct.denoise import CtDenoiser
from engines.ct.specs import CT_SPECS
from engines.spec import ModelSpec
from stream.batch import BatchJob, noise_sd, run_batch
from stream.paths.ct.commands import body_mask

TILE = 32


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """RED-CNN with seeded random weights, served on a 32² tile (the volumes are 32²)."""
    folder = tmp_path_factory.mktemp("weights")
    base = CT_SPECS["red_cnn"]
    torch.manual_seed(0)
    torch.save(base.build().state_dict(), folder / "ct_red_cnn.pt")
    return dataclasses.replace(base, weights_dir=folder, input_shape=(1, TILE, TILE),
                               output_shape=(1, TILE, TILE))


def _job(spec: ModelSpec, **overrides: Any) -> BatchJob:
    settings: dict[str, Any] = {
        "modality": "CT", "description": "sigstream denoise ct test",
        "denoiser": functools.partial(CtDenoiser, spec=spec, backend="eager", threads=1),
        "foreground": body_mask,
    }
    settings.update(overrides)
    return BatchJob(**settings)


def _inputs(root: Path) -> list[Path]:
    """Two CT series in one folder tree, and one NIfTI file."""
    write_series(root / "scans" / "a", n=3)
    write_series(root / "scans" / "b", n=2)
    data = np.stack([np.full((TILE, TILE), 40.0) for _ in range(2)], axis=-1)
    write_nifti_file(root / "c.nii.gz", data)
    return [root / "scans", root / "c.nii.gz"]


def _expected(spec: ModelSpec, inputs: list[Path]) -> list[np.ndarray]:
    with CtDenoiser(spec=spec, backend="eager") as denoiser:
        return [denoiser.denoise(read_source(s).values) for s in find_inputs(inputs)]


def test_every_item_is_denoised_in_its_input_form_with_a_report(spec: ModelSpec,
                                                                 tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    report = run_batch(inputs, tmp_path / "out", _job(spec), report_path=tmp_path / "r.json",
                       progress=False)
    assert [item.status for item in report.items] == ["ok"] * 3
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["ok"] == 3 and written["failed"] == 0
    assert [item["slices"] for item in written["items"]] == [3, 2, 2]
    for item in written["items"]:
        assert set(item["before"]) == {"mean", "sd", "p1", "p99", "noise_sd"}
    outputs = [Path(item.output) for item in report.items]
    assert outputs[0].parent == tmp_path / "out" / "a" and outputs[0].is_dir()
    assert outputs[2] == tmp_path / "out" / "c.nii.gz"
    for output, want in zip(outputs, _expected(spec, inputs), strict=True):
        got = read_source(find_inputs([output])[0]).values
        step = 1.0 if output.is_dir() else 1e-4  # DICOM stores whole HU (slope 1)
        np.testing.assert_allclose(got, want, atol=step)
    nifti = nib.load(outputs[2])
    np.testing.assert_array_equal(nifti.affine, nib.load(inputs[1]).affine)


def test_bad_items_get_one_line_each_and_the_others_finish(
        spec: ModelSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "in" / "good", n=2)
    write_series(tmp_path / "in" / "mr", n=2, modality="MR")
    write_series(tmp_path / "in" / "broken", n=2)
    truncated = tmp_path / "in" / "broken" / "IM0001"
    truncated.write_bytes(truncated.read_bytes()[:-700])
    values = np.full((TILE, TILE, 2), 40.0, np.float32)
    values[3, 4, 1] = np.nan
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "nan.nii")
    report = run_batch([tmp_path / "in", tmp_path / "nan.nii"], tmp_path / "out", _job(spec),
                       progress=False)
    status = {Path(item.input).name: item.status for item in report.items}
    assert status == {"good": "ok", "mr": "failed", "broken": "failed", "nan.nii": "failed"}
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(": " in line for line in lines)
    errors = {Path(item.input).name: item.error for item in report.items if item.error}
    assert "MR" in errors["mr"] and "nan" in errors["nan.nii"].lower()
    assert "IM0001" in errors["broken"]
    assert all(item.attempts == 1 for item in report.items)  # refused input: not retried
    assert not (tmp_path / "out" / "mr").exists()


def test_an_output_folder_that_cannot_be_made_is_refused(spec: ModelSpec, tmp_path: Path
                                                         ) -> None:
    from devices.errors import VolumeError

    (tmp_path / "file").write_text("")
    with pytest.raises(VolumeError, match="cannot make the output folder"):
        run_batch([tmp_path], tmp_path / "file" / "out", _job(spec), progress=False)


class FlakyDenoiser(CtDenoiser):
    """Fails the first time it meets each volume (a worker that ran out of memory, say)."""

    def __init__(self, marks: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marks = marks

    def denoise(self, hu: np.ndarray, spacing_mm: Any = None) -> np.ndarray:
        mark = self.marks / f"{hu.shape[0]}-{float(hu.sum()):.0f}"
        if not mark.exists():
            mark.write_text("")
            raise RuntimeError("out of memory")
        return super().denoise(hu, spacing_mm)


def test_a_failed_item_is_tried_once_more_on_a_local_pool(spec: ModelSpec, tmp_path: Path
                                                           ) -> None:
    inputs = _inputs(tmp_path)
    (tmp_path / "marks").mkdir()
    flaky = functools.partial(FlakyDenoiser, tmp_path / "marks", spec=spec, backend="eager",
                              threads=1)
    report = run_batch(inputs, tmp_path / "out", _job(spec, denoiser=flaky), workers=2,
                       progress=False)
    assert report.runner == "local"
    assert [(item.status, item.attempts) for item in report.items] == [("ok", 2)] * 3
    for item, want in zip(report.items, _expected(spec, inputs), strict=True):
        got = read_source(find_inputs([item.output])[0]).values
        np.testing.assert_allclose(got, want, atol=1.0)


def test_progress_shows_each_series_slices_as_they_are_denoised(
        spec: ModelSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "in" / "a", n=20)  # 3 chunks of slices: 8, 16, 20
    write_series(tmp_path / "in" / "b", n=3)
    report = run_batch([tmp_path / "in"], tmp_path / "out", _job(spec), workers=2,
                       progress=True)
    assert [item.status for item in report.items] == ["ok", "ok"]
    err = capsys.readouterr().err
    assert "  a:" in err and "8/20" in err and "16/20" in err  # the series' own bar
    assert "series: 100%" in err and "slices: 23slice" in err


def test_a_fresh_local_ray_cluster_denoises_two_series(spec: ModelSpec, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    write_series(tmp_path / "in" / "a", n=2)
    write_series(tmp_path / "in" / "b", n=3)
    report = run_batch([tmp_path / "in"], tmp_path / "out", _job(spec), workers=2, ray="local",
                       progress=False)
    assert report.runner == "ray"
    assert [(item.status, item.slices) for item in report.items] == [("ok", 2), ("ok", 3)]
    want = _expected(spec, [tmp_path / "in"])
    for item, expected in zip(report.items, want, strict=True):
        got = read_source(find_inputs([item.output])[0]).values
        np.testing.assert_allclose(got, expected, atol=1.0)


def test_noise_estimate_follows_the_noise() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    smooth = 100.0 * np.sin(x / 9.0) + 50.0 * np.cos(y / 7.0)
    for sd in (5.0, 20.0):
        assert noise_sd(smooth + rng.normal(0, sd, smooth.shape)) == pytest.approx(sd, rel=0.15)
