"""The PET path end to end: ``sigstream train pet --from`` fits a model to a site's own PET
DICOM series, ``sigstream denoise pet --weights`` denoises series and NIfTI files with it (per
slice slopes, units and decay-correction tags kept), non-PET input is refused, and live slices
through ``sigstream run pet`` come back as the batch denoiser computes them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset
from service_client import Client
from volume_files import write_nifti_file, write_series, write_slice

from devices.volumes import read_volumes
from engines.pet.denoise import PetDenoiser, pet_spec
from engines.pet.specs import PET_SPECS
from stream.cli import main
from stream.paths.volumes import SliceSettings
from stream.service import Service, ServiceConfig

SIDE = 64
MODEL = "n2v2_struct"


def _activity(z: int) -> np.ndarray:
    """A hot disc and a hotter spot over a warm background, noisy, Bq/ml."""
    rng = np.random.default_rng(z)
    y, x = np.mgrid[:SIDE, :SIDE]
    a = np.where((y - 32) ** 2 + (x - 30) ** 2 < 500, 2000.0, 0.0)
    a[(y - 28) ** 2 + (x - 36) ** 2 < 16] = 12000.0 * (1 + z)
    return np.maximum(a + rng.normal(0, 400, a.shape), 0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PET series as scanners write it: one RescaleSlope per slice, Bq/ml, decay-corrected."""
    folder = tmp_path_factory.mktemp("pet") / "scan"
    folder.mkdir()
    for z in range(4):
        a = _activity(z)
        path = folder / f"PT{z:03d}"
        write_slice(path, a, z_mm=2.0 * z, series="1.2.826.0.1.3680043.8.498.77",
                    modality="PT", slope=float(a.max()) / 32000, intercept=0.0, instance=z + 1)
        ds = pydicom.dcmread(path)
        ds.DecayCorrection, ds.CorrectedImage = "START", ["DECY", "ATTN", "SCAT"]
        info = Dataset()
        info.Radiopharmaceutical, info.RadionuclideTotalDose = "FDG", 3.7e8
        info.RadionuclideHalfLife = 6586.2
        ds.RadiopharmaceuticalInformationSequence = [info]
        ds.save_as(path)
    return folder


@pytest.fixture(scope="module")
def weights(scans: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights")
    assert main(["train", "pet", "--model", MODEL, "--from", str(scans), "--out", str(out),
                 "--steps", "3", "--threads", "1", "--seed", "1"]) == 0
    card = json.loads((out / f"pet_{MODEL}.json").read_text())
    assert card["data"]["slices"] == 4 and card["steps"] == 3
    return out / f"pet_{MODEL}.pt"


def _expected(weights: Path, values: np.ndarray) -> np.ndarray:
    with PetDenoiser(spec=pet_spec(MODEL, weights), backend="eager") as denoiser:
        return denoiser.denoise(values)


def test_scans_denoised_with_weights_trained_on_them(scans: Path, weights: Path,
                                                     tmp_path: Path) -> None:
    nifti = tmp_path / "study.nii.gz"
    write_nifti_file(nifti, np.stack([_activity(z) for z in range(2)], axis=-1))
    out, report = tmp_path / "out", tmp_path / "run.json"
    rc = main(["denoise", "pet", str(scans), str(nifti), "--out", str(out), "--model", MODEL,
               "--weights", str(weights), "--backend", "eager", "--report", str(report),
               "--no-progress"])
    assert rc == 0
    items = json.loads(report.read_text())["items"]
    assert [i["status"] for i in items] == ["ok", "ok"]
    (before,) = read_volumes([scans], modality="PT")
    (series,) = [v for v in read_volumes([out]) if getattr(v, "dicom", None) is not None]
    assert before.dicom is not None and series.dicom is not None and series.unit == "BQML"
    assert series.dicom.slopes == before.dicom.slopes  # stored with the input's slopes
    want = _expected(weights, before.values)
    step = np.array(before.dicom.slopes)[:, None, None]
    assert np.all(np.abs(series.values - want) <= step / 2 + 1e-3)
    written = pydicom.dcmread(next(out.rglob("PT000")))
    original = pydicom.dcmread(sorted(scans.iterdir())[0])
    assert written.SeriesInstanceUID != original.SeriesInstanceUID
    assert written.StudyInstanceUID == original.StudyInstanceUID
    assert written.DecayCorrection == "START" and "DECY" in written.CorrectedImage
    assert written.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife == 6586.2
    assert "DERIVED" in written.ImageType


def test_training_from_scans_needs_an_output_folder_and_a_blind_spot_model(scans: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "pet", "--from", str(scans), "--steps", "1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "pet", "--model", "n2n", "--from", str(scans), "--out", "x"]) == 2
    assert "half scans" in capsys.readouterr().err


def test_ct_is_refused_one_line_and_the_others_finish_on_a_pool(scans: Path, weights: Path,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "ct", n=2)
    rc = main(["denoise", "pet", str(tmp_path / "ct"), str(scans), "--out", str(tmp_path / "o"),
               "--model", MODEL, "--weights", str(weights), "--backend", "eager",
               "--workers", "2", "--no-progress"])  # a local pool: the job pickles
    assert rc == 1
    out = capsys.readouterr()
    assert "modality CT" in out.err and "denoised 1 of 2 series" in out.out


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    path = tmp_path_factory.mktemp("live") / "pet.pt"
    torch.manual_seed(0)
    torch.save(PET_SPECS[MODEL].build().state_dict(), path)
    config = ServiceConfig(
        path="pet", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*", backend="eager",
        model=MODEL, weights=path, settings=SliceSettings(tile_px=SIDE), workers=1,
        max_batch=4, deadline_ms=60_000, stats_interval_s=0.1, stop_timeout_s=20.0,
    )
    with Service(config) as svc:
        yield svc, path


def test_live_slices_come_back_denoised_and_bad_ones_are_answered(
        service: tuple[Service, Path]) -> None:
    svc, path = service
    spec = dataclasses.replace(pet_spec(MODEL, path), input_shape=(1, SIDE, SIDE),
                               output_shape=(1, SIDE, SIDE))
    stored = np.round(_activity(0) / 0.5).astype(np.int16)
    floats = np.float32(_activity(1)[:40])
    client = Client(svc.bound_ingest, svc.bound_publish)
    try:
        client.send("bed-1", 0, stored, kind="pet-slice", t_ns=0, slope=0.5, intercept=0.0)
        client.send("bed-2", 0, floats, kind="pet-slice", t_ns=0)
        client.send("bed-2", 1, stored, kind="pet-slice", t_ns=0)  # no rescale
        client.send("bed-2", 2, np.zeros((8, 8), np.float64), kind="pet-slice", t_ns=0)
        answers = client.settle(svc, {"bed-1": 1, "bed-2": 3})
    finally:
        client.close()
    by_key = {(m.stream, m.seq): m.payload for m in answers}
    with PetDenoiser(spec=spec, backend="eager") as denoiser:
        want_stored = denoiser.denoise(stored.astype(np.float32) * 0.5)
        want_floats = denoiser.denoise(floats)
    body = by_key["bed-1", 0]
    assert body["dtype"] == "int16" and body["slope"] == 0.5
    got = np.frombuffer(body["pixels"], np.int16).reshape(SIDE, SIDE) * 0.5
    np.testing.assert_allclose(got, np.clip(want_stored, -16384, 16383), atol=0.25 + 1e-3)
    body = by_key["bed-2", 0]
    got = np.frombuffer(body["pixels"], np.float32).reshape(floats.shape)
    np.testing.assert_allclose(got, want_floats, rtol=1e-4, atol=1e-2)
    assert by_key["bed-2", 1]["code"] == "bad_field"
    assert by_key["bed-2", 2]["code"] == "bad_dtype"


@pytest.mark.parametrize("name", ["ct", "pet"])
def test_a_volume_path_declares_an_engine_and_a_gate_per_model(name: str) -> None:
    from stream.paths import path_specs

    (spec,) = [s for s in path_specs() if s.name == name]
    engines = spec.engine_models(64)
    assert set(engines) == {f"{name}_{model}" for model in spec.models}
    assert all(batch == 8 and model.input_shape[0] == 1 for model, batch in engines.values())
    assert spec.serve is not None and spec.task_gate is not None
