"""Write a derived DICOM series: the input's headers, new UIDs, the denoised pixels.

:func:`write_dicom_series` writes a series folder (one file per input file, same relative
names), :func:`write_dicom_file` the one file of a volume read from one file (a slice or an
enhanced multi-frame image). Each output file keeps every tag of its input file except:

- SeriesInstanceUID (one new UID for the series) and SOPInstanceUID (new per file,
  :func:`pydicom.uid.generate_uid`); StudyInstanceUID, FrameOfReferenceUID, patient and
  geometry tags are kept, so viewers show the result beside its input in the same study;
- ImageType ``DERIVED\\SECONDARY\\<input's values 3 and on>`` (FrameType of enhanced images
  starts with DERIVED), SeriesDescription ``"<input> | <description_suffix>"`` (64 characters
  at most), DerivationDescription, and a SourceImageSequence naming the input instance;
- the pixel data: stored uncompressed (Explicit VR Little Endian) in the input's stored dtype
  and BitsStored, as ``round((value - intercept) / slope)`` with the input's RescaleSlope and
  RescaleIntercept of each slice, so values round-trip within half a rescale step; stored
  values outside the BitsStored range are clipped and counted (``clipped_voxels``);
  Smallest/LargestImagePixelValue are dropped (they described the old pixels).

``rescale="widen"`` gives a file whose values do not fit a larger RescaleSlope instead (one
per file, intercept kept), so nothing clips; PET series, which store one slope per slice, are
the use. Writes are atomic and never overwrite (:mod:`devices.volumes.atomic`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from devices.errors import VolumeError
from devices.volumes.atomic import atomic_file, atomic_folder, check_target
from devices.volumes.dicom_read import one_line
from devices.volumes.volume import DicomLayout, Volume, WriteSummary

__all__ = ["RescaleMode", "write_dicom_file", "write_dicom_series"]

RescaleMode = Literal["input", "widen"]

_STALE = ("SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
          "LargestPixelValueInSeries")
_LO_CHARS = 64  # VR LO (SeriesDescription)
_ST_CHARS = 1024  # VR ST (DerivationDescription)


def write_dicom_series(
    volume: Volume,
    denoised_values: np.ndarray,
    out_dir: str | Path,
    *,
    description_suffix: str,
    derivation: str | None = None,
    series_number: int | None = None,
    rescale: RescaleMode = "input",
) -> WriteSummary:
    """Write ``denoised_values`` (float, ``volume.shape``, the volume's units) as a new DICOM
    series in the folder ``out_dir``, which must not exist (``FileExistsError``) and must not
    hold an input file (:class:`VolumeError`); its parents are created.

    ``description_suffix`` is appended to SeriesDescription (e.g. ``"sigstream denoise ct
    red_cnn 25%"``), ``derivation`` (default: the suffix) becomes DerivationDescription,
    ``series_number`` replaces SeriesNumber when given. NaN/Inf in a slice is a
    :class:`VolumeError` (nothing is left written). Returns the folder, its files (in input
    file order), the new SeriesInstanceUID and the number of clipped voxels.
    """
    layout = _layout(volume, denoised_values)
    out = Path(out_dir)
    check_target(out, layout.files)
    folder = volume.source.folder
    names = [f.relative_to(folder) if f.is_relative_to(folder) else Path(f.name)
             for f in layout.files]
    series_uid = generate_uid()
    clipped = 0
    with atomic_folder(out) as tmp:
        for index, ds, n_clipped in _derived(volume, layout, denoised_values, series_uid,
                                             description_suffix, derivation, series_number,
                                             rescale, out):
            path = tmp / names[index]
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(ds, path)
            clipped += n_clipped
    return WriteSummary(path=out, files=tuple(out / n for n in names), series_uid=series_uid,
                        clipped_voxels=clipped)


def write_dicom_file(
    volume: Volume,
    denoised_values: np.ndarray,
    out_path: str | Path,
    *,
    description_suffix: str,
    derivation: str | None = None,
    series_number: int | None = None,
    rescale: RescaleMode = "input",
) -> WriteSummary:
    """:func:`write_dicom_series` for a volume read from one file: writes the one file
    ``out_path`` (same rules: new UIDs, never overwrites, atomic)."""
    layout = _layout(volume, denoised_values)
    if len(layout.files) != 1:
        raise ValueError(f"write_dicom_file needs a volume read from one file, this one has "
                         f"{len(layout.files)}; use write_dicom_series")
    out = Path(out_path)
    check_target(out, layout.files)
    series_uid = generate_uid()
    with atomic_file(out) as tmp:
        ((_, ds, clipped),) = _derived(volume, layout, denoised_values, series_uid,
                                       description_suffix, derivation, series_number, rescale,
                                       out)
        _save(ds, tmp)
    return WriteSummary(path=out, files=(out,), series_uid=series_uid, clipped_voxels=clipped)


def _layout(volume: Volume, values: np.ndarray) -> DicomLayout:
    if volume.dicom is None:
        raise ValueError("this volume was not read from DICOM; write it with write_nifti")
    if values.shape != volume.shape:
        raise ValueError(f"denoised values have shape {values.shape}, the volume "
                         f"{volume.shape}")
    return volume.dicom


def _derived(volume: Volume, layout: DicomLayout, values: np.ndarray, series_uid: str,
             suffix: str, derivation: str | None, series_number: int | None,
             rescale: RescaleMode, out: Path) -> Iterator[tuple[int, Dataset, int]]:
    """``(file index, derived dataset, clipped voxels)`` per input file, one at a time so only
    one file's stored pixels are in memory."""
    lo, hi = layout.stored_range
    for index, header in enumerate(layout.headers):
        zs = sorted((frame, z) for z, (file, frame) in enumerate(layout.slices) if file == index)
        slab = np.empty((len(zs), *volume.shape[1:]), dtype=np.float64)
        for row, (_, z) in enumerate(zs):
            slab[row] = values[z]
            if not np.all(np.isfinite(slab[row])):
                raise VolumeError(f"{out}: the denoised values of slice {z} hold NaN or Inf")
        intercepts = np.array([layout.intercepts[z] for _, z in zs])[:, None, None]
        slopes = np.array([layout.slopes[z] for _, z in zs])[:, None, None]
        widened = ""
        if rescale == "widen":
            span = slab - intercepts  # the slope that makes the largest value fit [lo, hi]
            need = max(float(np.max(span)) / hi if hi > 0 else 0.0,
                       float(np.min(span)) / lo if lo < 0 else 0.0)
            if need > float(np.max(slopes)):
                # quantise with the slope as written (DS: 16 characters), rounded up
                widened = f"{need * (1 + 1e-9):.10g}"
                slopes = np.full_like(slopes, float(widened))
        stored = np.rint((slab - intercepts) / slopes)
        clipped = int(np.count_nonzero((stored < lo) | (stored > hi)))
        stored = np.clip(stored, lo, hi).astype(layout.stored_dtype.newbyteorder("<"))
        ds = copy.deepcopy(header)
        _retag(ds, header, series_uid, suffix, derivation, series_number)
        if widened:
            _set_slope(ds, widened, layout.intercepts[zs[0][1]])
        _set_pixels(ds, stored, layout)
        yield index, ds, clipped


def _retag(ds: Dataset, source: Dataset, series_uid: str, suffix: str, derivation: str | None,
           series_number: int | None) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    image_type = list(source.get("ImageType") or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    for item in _group_items(ds):
        for frame_type in item.get("CTImageFrameTypeSequence", []) or []:
            if frame_type.get("FrameType"):
                frame_type.FrameType = ["DERIVED", *list(frame_type.FrameType)[1:]]
    old = str(source.get("SeriesDescription", "") or "")
    ds.SeriesDescription = one_line(f"{old} | {suffix}" if old else suffix, _LO_CHARS)
    ds.DerivationDescription = one_line(derivation or suffix, _ST_CHARS)
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.get("SOPClassUID", "")
    reference.ReferencedSOPInstanceUID = source.get("SOPInstanceUID", "")
    ds.SourceImageSequence = DicomSequence([reference])
    if series_number is not None:
        ds.SeriesNumber = series_number
    for keyword in _STALE:
        if keyword in ds:
            del ds[keyword]
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID"))
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _group_items(ds: Dataset) -> list[Dataset]:
    """The items of an enhanced image's shared and per-frame functional groups."""
    return [*(ds.get("SharedFunctionalGroupsSequence") or []),
            *(ds.get("PerFrameFunctionalGroupsSequence") or [])]


def _set_slope(ds: Dataset, slope: str, intercept: float) -> None:
    """Put ``slope`` wherever this file's rescale lives (top level, or each functional group
    that transforms pixel values); add it at the top level when there was none."""
    placed = False
    for item in _group_items(ds):
        for transform in item.get("PixelValueTransformationSequence", []) or []:
            transform.RescaleSlope = slope
            placed = True
    if not placed or "RescaleSlope" in ds:
        ds.RescaleSlope = slope
        if "RescaleIntercept" not in ds:
            ds.RescaleIntercept = f"{intercept:.10g}"[:16]


def _set_pixels(ds: Dataset, stored: np.ndarray, layout: DicomLayout) -> None:
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = layout.bits_stored
    ds.HighBit = layout.bits_stored - 1
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB" if stored.dtype.itemsize == 1 else "OW"


def _save(ds: Dataset, path: Path) -> None:
    pydicom.dcmwrite(path, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
