"""CT/PET volume I/O on real files: synthetic DICOM series written with pydicom and NIfTI files
written with nibabel in tmp_path, read back and written again; compressed and real CT slices
from pydicom's and pydicom-data's test files (tests that need pydicom-data skip without it)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
)
from volume_files import SHAPE_YX, slice_hu, write_nifti_file, write_series, write_slice

import devices.volumes as volumes
from devices.errors import SigstreamError, VolumeError
from devices.volumes import (
    Volume,
    VolumeFailure,
    find_inputs,
    output_locations,
    read_dicom_series,
    read_nifti,
    read_volumes,
    write_dicom_file,
    write_dicom_series,
    write_nifti,
    write_volume,
)

SUFFIX = "sigstream denoise ct red_cnn 25%"


def _testdata(name: str) -> str:
    """A pydicom or pydicom-data test file, never downloaded; skip when it is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} ships with pydicom-data, which is not installed")
    return str(path)


def _one(results: list[Volume | VolumeFailure]) -> Volume:
    assert len(results) == 1
    assert isinstance(results[0], Volume), results[0]
    return results[0]


def _load(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


# -- reading -------------------------------------------------------------------------------

def test_slices_are_ordered_by_position_whatever_their_file_names(tmp_path: Path) -> None:
    # File names sort opposite to position; no suffix: found by the DICM marker.
    uid, hu = write_series(tmp_path / "scan", names=["d", "c", "b", "a"])
    (tmp_path / "scan" / "README.txt").write_text("not an image")
    volume = _one(list(read_volumes([tmp_path / "scan"], modality="CT")))
    np.testing.assert_array_equal(volume.values, hu)
    assert volume.values.dtype == np.float32
    assert volume.spacing_mm == pytest.approx((2.5, 0.7, 0.8))
    assert (volume.modality, volume.unit, volume.series_uid) == ("CT", "HU", uid)
    assert volume.description == "ABDOMEN 5mm"
    assert volume.dicom is not None
    assert [volume.dicom.files[f].name for f, _ in volume.dicom.slices] == ["d", "c", "b", "a"]


def test_order_follows_the_slice_normal_not_z(tmp_path: Path) -> None:
    """Sagittal slices: the normal is -x, so the slice with the largest x comes first."""
    folder = tmp_path / "sag"
    folder.mkdir()
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    for z, x in enumerate([10.0, 13.0, 7.0]):
        write_slice(folder / f"s{z}.dcm", slice_hu(z), z_mm=0.0, series="1.2.3.4", position=[
            x, -90.0, 50.0], orientation=sagittal)
    volume = read_dicom_series(sorted(folder.iterdir()))
    np.testing.assert_array_equal(volume.values, np.stack([slice_hu(1), slice_hu(0), slice_hu(2)]))
    assert volume.spacing_mm[0] == pytest.approx(3.0)


def test_unsigned_pixels_with_a_half_slope(tmp_path: Path) -> None:
    _, hu = write_series(tmp_path / "u16", dtype=np.uint16, slope=0.5, intercept=-1024.0,
                    bits_stored=12)
    volume = read_dicom_series(sorted((tmp_path / "u16").iterdir()), modality="ct")
    np.testing.assert_array_equal(volume.values, hu)
    assert volume.dicom is not None
    assert (volume.dicom.stored_dtype, volume.dicom.bits_stored) == (np.uint16, 12)
    assert set(volume.dicom.slopes) == {0.5}


@pytest.mark.parametrize(("plain", "compressed"), [
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("693_UNCR.dcm", "693_J2KR.dcm"),  # a CT slice, JPEG 2000 lossless (pydicom-data)
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),  # 10 frames, no per-frame groups
])
def test_compressed_pixels_decode_to_the_uncompressed_values(plain: str, compressed: str) -> None:
    paths = [_testdata(plain), _testdata(compressed)]
    results = list(read_volumes(paths))
    if "emri" in plain:  # legacy multi-frame MR: refused the same way, compressed or not
        assert all(isinstance(r, VolumeFailure) and "per-frame positions" in r.message
                   for r in results)
        return
    a, b = (r for r in results if isinstance(r, Volume))
    np.testing.assert_array_equal(a.values, b.values)
    assert a.spacing_mm == b.spacing_mm


def test_jpeg_lossless_process_14_decodes() -> None:
    volume = _one(list(read_volumes([_testdata("JPEG-LL.dcm")])))
    assert volume.shape == (1, 1024, 256) and volume.modality == "NM"
    assert volume.values.min() == 0 and volume.values.max() == 278


def test_real_ct_slices_read_in_hu() -> None:
    small = read_dicom_series([_testdata("CT_small.dcm")], modality="CT")
    assert small.shape == (1, 128, 128) and small.spacing_mm[1:] == pytest.approx((0.661468,) * 2)
    assert -1024 <= small.values.min() and small.values.max() < 3072
    assert abs(float(np.median(small.values))) < 100  # mostly soft tissue: water is 0 HU
    for name in ("693_UNCR.dcm", "explicit_VR-UN.dcm"):
        volume = read_dicom_series([_testdata(name)], modality="CT")
        inside = volume.values[volume.values > -2000]  # 693 pads outside the field of view
        assert np.mean(np.abs(inside + 1000) < 60) > 0.4, name  # air is -1000 HU
        assert np.mean(np.abs(inside) < 100) > 0.15, name  # soft tissue near 0 HU
    assert read_dicom_series([_testdata("693_UNCR.dcm")]).values.min() == -3024  # padding


def test_enhanced_multiframe_ct_is_a_volume_and_round_trips(tmp_path: Path) -> None:
    path = _testdata("eCT_Supplemental.dcm")
    volume = read_dicom_series([path], modality="CT")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32) - 1024  # shared intercept
    assert volume.shape == (2, 512, 512) and volume.spacing_mm[0] == pytest.approx(10.0)
    np.testing.assert_array_equal(volume.values, raw[::-1])  # frame 2 lies lower (z -159)
    summary = write_volume(volume, volume.values + 0.4, tmp_path / "ect.dcm",
                           description_suffix=SUFFIX)
    back = read_dicom_series([summary.path])
    np.testing.assert_array_equal(back.values, volume.values)
    out = pydicom.dcmread(summary.path)
    assert out.NumberOfFrames == 2 and out.ImageType[0] == "DERIVED"
    frame_type = out.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence[0].FrameType
    assert frame_type[0] == "DERIVED"


NEMA_PET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pet-nema-iq"


def test_pet_slices_with_their_own_slopes(tmp_path: Path) -> None:
    """PET stores one RescaleSlope per slice (scaled to each slice's maximum)."""
    folder = tmp_path / "pet"
    folder.mkdir()
    activity = [np.clip(slice_hu(z), 0, None) * (z + 1) * 10 for z in range(3)]  # Bq/ml
    slopes = [float(a.max()) / 32767 for a in activity]
    for z in range(3):
        write_slice(folder / f"PT{z}", activity[z], z_mm=3.0 * z, series="1.2.3.5",
                     modality="PT", slope=slopes[z], intercept=0.0)
    volume = read_dicom_series(sorted(folder.iterdir()), modality="PET")
    assert volume.dicom is not None and volume.dicom.slopes == pytest.approx(slopes)
    assert volume.unit == "BQML"
    for z in range(3):
        np.testing.assert_allclose(volume.values[z], activity[z], atol=slopes[z] / 2 + 1e-3)
    summary = write_dicom_series(volume, volume.values * 0.8, tmp_path / "out",
                                 description_suffix="sigstream denoise pet n2v")
    back = read_dicom_series(summary.files)
    assert back.dicom is not None and back.dicom.slopes == volume.dicom.slopes
    for z in range(3):
        np.testing.assert_allclose(back.values[z], volume.values[z] * 0.8,
                                   atol=slopes[z] / 2 + 1e-3)


def test_the_real_nema_pet_scan_reads_as_one_volume(tmp_path: Path) -> None:
    if not NEMA_PET.is_dir():
        pytest.skip(f"{NEMA_PET} is absent (the real NEMA IQ PET scan lives outside the repo)")
    (volume,) = read_volumes([NEMA_PET], modality="PET")
    assert isinstance(volume, Volume), volume
    assert volume.shape == (89, 192, 192) and volume.modality == "PT"
    assert volume.spacing_mm == pytest.approx((2.78, 2.0833, 2.0833), abs=1e-3)
    assert volume.values.min() >= 0 and volume.values.max() > 1000
    (target,) = output_locations(find_inputs([NEMA_PET]), tmp_path)
    summary = write_volume(volume, volume.values * 0.9, target, description_suffix="n2v")
    (back,) = read_volumes([target])
    assert isinstance(back, Volume) and summary.clipped_voxels == 0
    assert volume.dicom is not None
    ulp = float(np.spacing(volume.values.max()))  # float32 values near 38,000 Bq/ml
    step = max(volume.dicom.slopes)
    assert np.max(np.abs(back.values - volume.values * 0.9)) <= step / 2 + ulp


# -- writing DICOM -------------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "slope", "bits"), [(np.int16, 1.0, 16), (np.uint16, 0.5, 12)])
def test_dicom_round_trip_keeps_the_study_and_makes_a_new_series(
        tmp_path: Path, dtype: type, slope: float, bits: int) -> None:
    uid, hu = write_series(tmp_path / "in" / "scan", dtype=dtype, slope=slope, bits_stored=bits,
                      names=["x3", "x1", "x2", "x0"])
    volume = _one(list(read_volumes([tmp_path / "in"])))
    rng = np.random.default_rng(0)
    denoised = (hu + rng.uniform(-3, 3, hu.shape)).astype(np.float32)
    (target,) = output_locations(find_inputs([tmp_path / "in"]), tmp_path / "out")
    assert target == tmp_path / "out" / "scan" / uid
    summary = write_dicom_series(volume, denoised, target, description_suffix=SUFFIX)
    assert summary.clipped_voxels == 0 and summary.series_uid != uid
    assert sorted(p.name for p in target.iterdir()) == ["x0", "x1", "x2", "x3"]
    back = _one(list(read_volumes([target], modality="CT")))
    assert np.max(np.abs(back.values - denoised)) <= slope / 2 + 1e-4  # half a rescale step
    assert back.spacing_mm == pytest.approx(volume.spacing_mm)
    ins = {pydicom.dcmread(f).InstanceNumber: pydicom.dcmread(f) for f in volume.source.files}
    outs = [pydicom.dcmread(f) for f in summary.files]
    for ds in outs:
        original = ins[ds.InstanceNumber]
        assert ds.SeriesInstanceUID == summary.series_uid
        assert ds.SOPInstanceUID != original.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID",
                        "ImagePositionPatient", "RescaleSlope", "RescaleIntercept", "BitsStored"):
            assert ds[keyword].value == original[keyword].value, keyword
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.SeriesDescription == f"ABDOMEN 5mm | {SUFFIX}"
        assert ds.DerivationDescription == SUFFIX
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        assert ds.pixel_array.dtype == dtype
    assert len({ds.SOPInstanceUID for ds in outs}) == 4


def test_values_outside_the_stored_range_are_clipped_and_counted(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=2)
    volume = read_dicom_series(sorted((tmp_path / "in").iterdir()))
    denoised = volume.values.copy()
    denoised[0, :2, :3] = 40000.0  # stored 41024 > 32767
    denoised[1, 5, 5] = -40000.0
    summary = write_dicom_series(volume, denoised, tmp_path / "clip", description_suffix=SUFFIX)
    assert summary.clipped_voxels == 7
    back = read_dicom_series(summary.files)
    assert back.values[0, 0, 0] == 32767 - 1024 and back.values[1, 5, 5] == -32768 - 1024
    widened = write_dicom_series(volume, denoised, tmp_path / "widen", description_suffix=SUFFIX,
                                 rescale="widen")
    assert widened.clipped_voxels == 0
    back = read_dicom_series(widened.files)
    assert back.dicom is not None and back.dicom.slopes[0] > 1 and back.dicom.slopes[1] > 1
    assert np.max(np.abs(back.values - denoised)) <= max(back.dicom.slopes) / 2 + 1e-3


def test_writes_never_overwrite(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=2)
    volume = _one(list(read_volumes([tmp_path / "in"])))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_dicom_series(volume, volume.values, tmp_path / "taken", description_suffix=SUFFIX)
    with pytest.raises(VolumeError, match="would overwrite the input file"):
        write_dicom_series(volume, volume.values, tmp_path / "in", description_suffix=SUFFIX)
    single = read_dicom_series([tmp_path / "in" / "IM0000"])
    with pytest.raises(VolumeError, match="would overwrite the input file"):
        write_dicom_file(single, single.values, tmp_path / "in" / "IM0000",
                         description_suffix=SUFFIX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "taken"]


def test_a_write_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=4)
    volume = read_dicom_series(sorted((tmp_path / "in").iterdir()))
    denoised = volume.values.copy()
    denoised[3, 7, 7] = np.nan  # found at the last file, after three were written
    with pytest.raises(VolumeError, match=r"out/series: .* slice 3 hold NaN"):
        write_dicom_series(volume, denoised, tmp_path / "out" / "series",
                           description_suffix=SUFFIX)
    assert list((tmp_path / "out").iterdir()) == []  # no series, no temporary folder


def test_an_unwritable_output_folder_is_a_clear_os_error(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=1)
    volume = read_dicom_series([tmp_path / "in" / "IM0000"])
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="cannot create the output folder") as info:
        write_dicom_series(volume, volume.values, tmp_path / "file" / "sub" / "series",
                           description_suffix=SUFFIX)
    assert str(tmp_path / "file") in str(info.value)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root (or Windows) ignores folder permissions")
def test_a_read_only_output_folder_is_a_clear_os_error(tmp_path: Path) -> None:
    write_series(tmp_path / "in", n=1)
    volume = read_dicom_series([tmp_path / "in" / "IM0000"])
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="cannot write in the output folder"):
        write_dicom_series(volume, volume.values, tmp_path / "ro" / "s", description_suffix=SUFFIX)


# -- NIfTI ---------------------------------------------------------------------------------

def test_nifti_round_trip_keeps_affine_and_header(tmp_path: Path) -> None:
    data = np.stack([slice_hu(z).T for z in range(3)], axis=-1)  # (x, y, z)
    affine = write_nifti_file(tmp_path / "ct.nii.gz", data, slope=0.5, inter=-1024.0)
    volume = read_nifti(tmp_path / "ct.nii.gz", modality="CT")
    np.testing.assert_array_equal(volume.values, np.stack([slice_hu(z) for z in range(3)]))
    assert volume.spacing_mm == pytest.approx((2.5, 0.7, 0.8)) and volume.unit == "HU"
    denoised = volume.values + np.float32(0.25)
    (target,) = output_locations(find_inputs([tmp_path / "ct.nii.gz"]), tmp_path / "out")
    assert target == tmp_path / "out" / "ct.nii.gz"
    write_nifti(volume, denoised, target, description_suffix=SUFFIX)
    back, original = _load(target), _load(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(back.affine, original.affine)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)  # NIfTI stores float32
    assert back.get_data_dtype() == np.float32
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (
        int(original.header["qform_code"]), 2)
    assert back.header["descrip"].item() == f"ct phantom | {SUFFIX}".encode()
    np.testing.assert_array_equal(read_nifti(target).values, denoised)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ct.nii.gz"]  # no temporary


def test_nifti_shapes(tmp_path: Path) -> None:
    write_nifti_file(tmp_path / "slice.nii", slice_hu(0).T)
    assert read_nifti(tmp_path / "slice.nii").shape == (1, *SHAPE_YX)
    write_nifti_file(tmp_path / "one.nii", slice_hu(0).T[:, :, None, None])
    one = read_nifti(tmp_path / "one.nii")
    assert one.shape == (1, *SHAPE_YX)
    write_nifti(one, one.values, tmp_path / "one_out.nii.gz")
    assert _load(tmp_path / "one_out.nii.gz").shape == (32, 32, 1, 1)  # stored shape kept


# -- bad input: one clear line each, the other items still read ----------------------------

def _bad_inputs(root: Path) -> dict[str, str]:
    """Write one good series and one bad item of each kind under ``root``; returns
    ``{folder or file name: pattern its failure message must match}``."""
    write_series(root / "good")
    write_series(root / "truncated")
    data = (root / "truncated" / "IM0002").read_bytes()
    (root / "truncated" / "IM0002").write_bytes(data[: len(data) - 300])
    (root / "notdicom").mkdir()
    (root / "notdicom" / "scan.dcm").write_text("this is not a DICOM file\n" * 20)
    write_series(root / "nopixels", n=1)
    ds = pydicom.dcmread(root / "nopixels" / "IM0000")
    del ds.PixelData
    ds.save_as(root / "nopixels" / "IM0000")
    write_series(root / "mixed", n=2, series="1.2.826.0.1.3680043.8.498.10")
    write_slice(root / "mixed" / "IM0009", slice_hu(2), z_mm=-95.0, modality="MR",
                 series="1.2.826.0.1.3680043.8.498.10")
    uid = write_series(root / "gap", n=3)[0]
    write_slice(root / "gap" / "IM0003", slice_hu(3), z_mm=-100.0 + 2.5 * 4, series=uid)
    uid = write_series(root / "tilted", n=2)[0]
    write_slice(root / "tilted" / "IM0002", slice_hu(2), z_mm=-95.0, series=uid,
                 orientation=(1.0, 0.0, 0.0, 0.0, 0.9, 0.43589))
    uid = write_series(root / "duplicate", n=2)[0]
    write_slice(root / "duplicate" / "IM0002", slice_hu(2), z_mm=-97.5, series=uid)
    write_series(root / "norescale", n=2, rescale=False)
    write_series(root / "pet", n=2, modality="PT", dtype=np.uint16, slope=0.25, intercept=0.0)
    nan = np.stack([slice_hu(z).T for z in range(2)], axis=-1).astype(np.float32)
    nan[3, 3, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), root / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), root / "4d.nii")
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    pydicom.dcmread(_testdata("SC_rgb_jpeg_dcmtk.dcm")).save_as(root / "rgb.dcm")
    return {
        "truncated": r"truncated/IM0002: truncated pixel data \(\d+ of 2048 bytes\)",
        "notdicom": r"notdicom/scan.dcm: not a DICOM file",
        "nopixels": r"nopixels/IM0000: no Pixel Data",
        "mixed": r"mixed: one series with two values of Modality \('CT' in IM0000, 'MR' in",
        "gap": r"gap: uneven slice spacing: a step of 5.000 mm between IM0002 and IM0003",
        "tilted": r"tilted: ImageOrientationPatient differs between slices",
        "duplicate": r"duplicate: two slices at the same position .*IM0001, IM0002",
        "norescale": r"norescale: CT without RescaleSlope/RescaleIntercept.*--force",
        "pet": r"pet: modality PT, expected CT \(--force",
        "nan.nii.gz": r"nan.nii.gz: 1 NaN or Inf voxels of 2048",
        "4d.nii": r"4d.nii: a 4-D NIfTI of shape \(4, 4, 4, 3\)",
        "broken.nii.gz": r"broken.nii.gz: not a readable NIfTI file",
        "rgb.dcm": r"rgb.dcm: colour image \(YBR_FULL",
    }


def test_every_bad_item_fails_alone_with_one_clear_line(tmp_path: Path) -> None:
    expected = _bad_inputs(tmp_path / "in")
    results = list(read_volumes([tmp_path / "in"], modality="CT"))
    good = [r for r in results if isinstance(r, Volume)]
    assert len(good) == 1 and good[0].source.folder.name == "good"
    failures = {r.source.label: r.message for r in results if isinstance(r, VolumeFailure)}
    assert len(failures) == len(expected), failures
    for name, pattern in expected.items():
        (message,) = [m for label, m in failures.items()
                      if Path(label).name == name or Path(label).parent.name == name]
        assert "\n" not in message and str(tmp_path / "in") in message
        assert re.search(pattern, message), (name, message)


def test_force_reads_pet_as_ct_and_ct_without_rescale(tmp_path: Path) -> None:
    _, hu = write_series(tmp_path / "norescale", n=2, rescale=False)
    _, pet = write_series(tmp_path / "pet", n=2, modality="PT", dtype=np.uint16, slope=0.25,
                     intercept=0.0)
    flat, pt = read_volumes([tmp_path / "norescale", tmp_path / "pet"], modality="CT",
                            force=True)
    assert isinstance(flat, Volume) and isinstance(pt, Volume)
    np.testing.assert_array_equal(flat.values, hu)  # stored values, slope 1, intercept 0
    assert flat.dicom is not None and not flat.dicom.rescaled
    assert (pt.modality, pt.unit) == ("PT", "BQML")
    np.testing.assert_array_equal(pt.values, np.clip(pet, 0, None))  # uint16 cannot be < 0
    (named,) = read_volumes([tmp_path / "pet"], modality="PET")  # DICOM's "PT"
    assert isinstance(named, Volume)


def test_a_missing_path_and_an_empty_folder_are_failures(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    missing, empty = read_volumes([tmp_path / "nope.dcm", tmp_path / "empty"])
    assert isinstance(missing, VolumeFailure) and isinstance(empty, VolumeFailure)
    assert missing.message == f"{tmp_path / 'nope.dcm'}: No such file or directory"
    assert empty.message == f"{tmp_path / 'empty'}: no DICOM files found"


# -- finding inputs and naming outputs -----------------------------------------------------

def test_series_are_grouped_by_uid_and_outputs_never_collide(tmp_path: Path) -> None:
    a, _ = write_series(tmp_path / "in" / "p1", n=2, names=["1", "2"])
    b, _ = write_series(tmp_path / "in" / "p1", n=3, names=["3", "4", "5"])  # same folder
    c, _ = write_series(tmp_path / "in" / "p2" / "deep", n=1)
    (tmp_path / "in" / ".tmp-123-x").mkdir()  # a temporary output of a killed run: ignored
    write_series(tmp_path / "in" / ".tmp-123-x", n=1)
    (tmp_path / "in" / "p2" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    data = np.stack([slice_hu(0).T], axis=-1)
    write_nifti_file(tmp_path / "in" / "p2" / "vol.nii.gz", data)
    (tmp_path / "x").mkdir()
    write_nifti_file(tmp_path / "x" / "vol.nii.gz", data)
    sources = find_inputs([tmp_path / "in", tmp_path / "x" / "vol.nii.gz"])
    assert [(s.kind, s.series_uid, len(s.files)) for s in sources] == [
        ("dicom", a, 2), ("dicom", b, 3), ("dicom", c, 1), ("nifti", "", 1), ("nifti", "", 1)]
    out = tmp_path / "out"
    assert output_locations(sources, out) == [
        out / "p1" / a, out / "p1" / b, out / "p2" / "deep" / c, out / "p2" / "vol.nii.gz",
        out / "vol.nii.gz"]
    assert output_locations(sources, out) == output_locations(find_inputs(
        [tmp_path / "in", tmp_path / "x" / "vol.nii.gz"]), out)  # deterministic
    twice = find_inputs([tmp_path / "x" / "vol.nii.gz", tmp_path / "x" / "vol.nii.gz"])
    assert output_locations(twice, out) == [out / "vol.nii.gz", out / "vol-2.nii.gz"]


def test_write_volume_mirrors_each_input_form(tmp_path: Path) -> None:
    write_series(tmp_path / "in" / "scan", n=2)
    write_nifti_file(tmp_path / "in" / "vol.nii", np.stack([slice_hu(0).T], axis=-1))
    sources = find_inputs([tmp_path / "in", tmp_path / "in" / "scan" / "IM0001"])
    written = []
    for volume, target in zip(read_volumes(sources), output_locations(sources, tmp_path / "o"),
                              strict=True):
        assert isinstance(volume, Volume)
        written.append(write_volume(volume, volume.values, target, description_suffix=SUFFIX))
    assert [s.path.relative_to(tmp_path / "o").parts[:1] for s in written] == [
        ("scan",), ("vol.nii.gz",), ("IM0001",)]
    assert written[0].path.is_dir() and written[2].path.is_file()


# -- the package ---------------------------------------------------------------------------

def test_public_api_and_errors() -> None:
    assert sorted(volumes.__all__) == sorted([
        "DicomLayout", "NiftiLayout", "RescaleMode", "Volume", "VolumeError", "VolumeFailure",
        "VolumeSource", "WriteSummary", "find_inputs", "output_location", "output_locations",
        "read_dicom_series", "read_nifti", "read_source", "read_volumes", "write_dicom_file",
        "write_dicom_series", "write_nifti", "write_volume"])
    assert issubclass(VolumeError, SigstreamError) and issubclass(VolumeError, ValueError)
