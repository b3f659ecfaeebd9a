"""Volume files for the tests: small synthetic CT (or PET) DICOM series written with pydicom,
and NIfTI files written with nibabel, in the layouts scanners and research pipelines use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SHAPE_YX = (32, 32)


def slice_hu(z: int, shape: tuple[int, int] = SHAPE_YX) -> np.ndarray:
    """A slice of air, water and bone-like HU that differs per slice (z: slice index)."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    hu = np.full(shape, -1000.0)
    hu[(y - 16) ** 2 + (x - 16) ** 2 < 120] = 40.0 + 10 * z
    hu[(y - 16) ** 2 + (x - 12) ** 2 < 9] = 900.0 + z
    return hu


def write_slice(path: Path, values: np.ndarray, *, z_mm: float, series: str, study: str = "",
                 modality: str = "CT", dtype: type = np.int16, slope: float = 1.0,
                 intercept: float = -1024.0, bits_stored: int = 16, rescale: bool = True,
                 orientation: Sequence[float] = AXIAL, position: Sequence[float] | None = None,
                 instance: int = 1) -> None:
    """One CT (or PET) slice as pydicom writes it: ``values`` in HU (or Bq/ml)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (PositronEmissionTomographyImageStorage if modality == "PT"
                                    else CTImageStorage)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.PatientID, ds.PatientName = "SIG-001", "Phantom^Water"
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, "ABDOMEN 5mm", 3
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = list(position) if position is not None else [-80.0, -90.0, z_mm]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 2.5
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if modality == "PT":
        ds.Units = "BQML"
    stored = np.round((values - (intercept if rescale else 0.0)) / (slope if rescale else 1.0))
    info = np.iinfo(dtype)
    ds.set_pixel_data(np.clip(stored, info.min, info.max).astype(dtype), "MONOCHROME2", bits_stored,
                      generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: Path, *, n: int = 4, step_mm: float = 2.5, names: Sequence[str] = (),
            **kwargs: object) -> tuple[str, np.ndarray]:
    """``n`` slices written in ``folder`` under ``names`` (slice z gets names[z]); returns the
    SeriesInstanceUID and the HU in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    series = str(kwargs.pop("series", "")) or generate_uid()
    names = list(names) or [f"IM{z:04d}" for z in range(n)]
    for z in range(n):
        write_slice(folder / names[z], slice_hu(z), z_mm=-100.0 + step_mm * z, series=series,
                     instance=z + 1, **kwargs)  # type: ignore[arg-type]
    return series, np.stack([slice_hu(z) for z in range(n)]).astype(np.float32)


def write_nifti_file(path: Path, data: np.ndarray, *, slope: float = 1.0, inter: float = 0.0,
           zooms: Sequence[float] = (0.8, 0.7, 2.5)) -> np.ndarray:
    """Write ``data`` ((x, y, z)...) as int16 NIfTI with scaling; returns its affine."""
    affine = np.diag([*zooms[:3], 1.0])
    affine[:3, 3] = [-12.0, 30.5, -80.0]
    image = nib.Nifti1Image(np.round((data - inter) / slope).astype(np.int16), affine)
    image.header.set_slope_inter(slope, inter)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"ct phantom"
    nib.save(image, path)
    return affine
