"""Read one DICOM series into a :class:`~devices.volumes.volume.Volume` (:func:`read_dicom_series`).

A series is one or more files: single-frame slices (classic CT/PET) or enhanced multi-frame
files whose per-frame positions live in the functional groups (``eCT_Supplemental.dcm``).
Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of
ImageOrientationPatient's row and column directions), never by file name or InstanceNumber.
Compressed pixel data (JPEG 2000, JPEG lossless, JPEG-LS, RLE) is decoded by pydicom's
pylibjpeg plugins.

Refused with a one-line :class:`~devices.errors.VolumeError` naming the file: not DICOM, corrupt
or truncated (header or pixel data), no pixel data, colour or float pixel data, legacy
multi-frame files without per-frame positions, files of one series that differ in modality,
size, stored dtype, pixel spacing or orientation, slices without positions (when there are
several), duplicate positions, slice steps that differ by more than 1 % or 0.01 mm (whichever
is larger), a modality other than the expected one, and CT without RescaleSlope/Intercept.
``force=True`` accepts the last two (and a missing PixelSpacing, read as 1 mm): CT without
rescale tags is then read as stored values, slope 1, intercept 0, which are HU only if the
scanner stored HU.

Pure numpy and pydicom; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from devices.errors import VolumeError
from devices.volumes.volume import DicomLayout, Volume, VolumeSource, expected_modality

__all__ = ["one_line", "read_dicom_header", "read_dicom_series"]

_ORIENTATION_TOL = 1e-3  # direction cosines: scanners write 5-6 decimals
_SPACING_REL_TOL = 0.01  # slice steps may differ by 1 % ...
_SPACING_ABS_TOL_MM = 0.01  # ... or 0.01 mm, whichever is larger (rounded positions)
_DUPLICATE_TOL_MM = 1e-3
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_PIXEL_ELEMENTS = ("PixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths")


def one_line(text: str, limit: int = 240) -> str:
    """``text`` on one line of at most ``limit`` characters (pydicom messages span lines)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_dicom_header(path: Path, *, pixels: bool = True) -> Dataset:
    """Read a DICOM file (its header only when ``pixels`` is False); a file that is not DICOM
    or is corrupt is a :class:`VolumeError` naming it; a missing or unreadable file raises the
    ``OSError`` that ``open()`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except InvalidDicomError as exc:
            raise VolumeError(f"{path}: not a DICOM file (no 'DICM' marker or file meta "
                              f"header)") from exc
        except OSError:
            raise
        except Exception as exc:  # pydicom raises many kinds on a corrupt header
            raise VolumeError(f"{path}: corrupt DICOM header "
                              f"({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    if pixels and "PixelData" not in ds:
        why = (f"truncated file? {one_line(str(caught[0].message), 120)}" if caught
               else "not an image, or a truncated file")
        kind = "float pixel data is not supported" if (
            "FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else f"no Pixel Data ({why})"
        raise VolumeError(f"{path}: {kind}")
    return ds


def _group_value(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` for ``frame`` of an enhanced image (per-frame group, else shared group),
    else from the top level of the dataset; None when absent."""
    for groups_keyword, index in (("PerFrameFunctionalGroupsSequence", frame),
                                  ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(groups_keyword)
        if groups is not None and len(groups) > index:
            items = groups[index].get(sequence)
            if items is not None and len(items) > 0 and keyword in items[0]:
                return items[0][keyword].value
    return ds.get(keyword)


def _floats(value: Any, n: int, path: Path, keyword: str) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    items = value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else [
        value]
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{path}: {keyword} is not numeric ({value!r})") from exc
    if len(out) != n or not all(np.isfinite(out)):
        raise VolumeError(f"{path}: {keyword} must be {n} finite numbers, got {value!r}")
    return out


@dataclass(frozen=True, kw_only=True)
class _Slice:
    """One frame of one file, with its geometry and rescale (positions in mm)."""

    file: int
    frame: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing_yx: tuple[float, ...] | None
    slope: float | None
    intercept: float | None


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """The stored pixels of ``ds`` as (frames, rows, columns), raw (not rescaled)."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeError(f"{path}: colour image ({ds.get('PhotometricInterpretation', '?')}, "
                          f"{ds.SamplesPerPixel} samples per pixel); CT/PET are greyscale")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = (int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * frames
                    * int(ds.get("BitsAllocated", 16)) // 8)
        if len(ds.PixelData) < expected:  # pydicom lets a one-byte shortfall through
            raise VolumeError(f"{path}: truncated pixel data ({len(ds.PixelData)} of "
                              f"{expected} bytes)")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # missing decoder plugin, corrupt codestream, bad group 0028
        raise VolumeError(f"{path}: cannot decode the pixel data "
                          f"({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    if raw.dtype.kind not in "iu":
        raise VolumeError(f"{path}: stored pixels of dtype {raw.dtype} are not supported")
    return raw.reshape(-1, raw.shape[-2], raw.shape[-1])


def _slices_of(ds: Dataset, path: Path, file: int, frames: int) -> list[_Slice]:
    enhanced = "PerFrameFunctionalGroupsSequence" in ds
    if frames > 1 and not enhanced:
        raise VolumeError(f"{path}: multi-frame image without per-frame positions (no "
                          f"PerFrameFunctionalGroupsSequence); not supported as a volume")
    out = []
    for frame in range(frames):
        def value(sequence: str, keyword: str, frame: int = frame) -> Any:
            return _group_value(ds, frame, sequence, keyword)

        spacing = value("PixelMeasuresSequence", "PixelSpacing")
        out.append(_Slice(
            file=file, frame=frame,
            position=_floats(value("PlanePositionSequence", "ImagePositionPatient"), 3, path,
                             "ImagePositionPatient"),
            orientation=_floats(value("PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                                path, "ImageOrientationPatient"),
            spacing_yx=_floats(spacing, 2, path, "PixelSpacing"),
            slope=_scalar(value("PixelValueTransformationSequence", "RescaleSlope"), path,
                          "RescaleSlope"),
            intercept=_scalar(value("PixelValueTransformationSequence", "RescaleIntercept"),
                              path, "RescaleIntercept")))
    return out


def _scalar(value: Any, path: Path, keyword: str) -> float | None:
    floats = _floats(value, 1, path, keyword)
    return None if floats is None else floats[0]


def _same(headers: Sequence[Dataset], files: Sequence[Path], keyword: str) -> Any:
    """The value of ``keyword`` shared by every header; a VolumeError naming two files that
    differ."""
    first = headers[0].get(keyword)
    for ds, path in zip(headers[1:], files[1:], strict=True):
        if ds.get(keyword) != first:
            raise VolumeError(f"{files[0].parent}: one series with two values of {keyword} "
                              f"({first!r} in {files[0].name}, {ds.get(keyword)!r} in "
                              f"{path.name})")
    return first


def read_dicom_series(
    files: Sequence[str | Path] | VolumeSource,
    *,
    modality: str | None = None,
    force: bool = False,
) -> Volume:
    """Read the files of one DICOM series (a :class:`VolumeSource` or paths) into a Volume.

    ``modality``: the modality the caller expects ("CT", "PT" or "PET"; None accepts any);
    another is refused unless ``force``. Returns float32 ``(z, y, x)`` values in physical
    units (``stored * RescaleSlope + RescaleIntercept`` per slice), slices in ascending
    position along the slice normal, the headers kept without their pixel data.
    """
    if isinstance(files, VolumeSource):
        source = files
    else:
        paths = tuple(sorted(Path(f) for f in files))
        source = VolumeSource(kind="dicom", root=paths[0] if paths else Path(), files=paths)
        if len(paths) > 1:  # several files: a series folder, as if found by walking it
            source = replace(source, root=source.folder, from_folder=True)
    if not source.files:
        raise VolumeError(f"{source.root}: no DICOM files found")
    headers, arrays, slices = [], [], []
    for index, path in enumerate(source.files):
        ds = read_dicom_header(path)
        raw = _decode(ds, path)
        for keyword in _PIXEL_ELEMENTS:  # keep the header only: the pixels live in `values`
            if keyword in ds:
                del ds[keyword]
        headers.append(ds)
        arrays.append(raw)
        slices.extend(_slices_of(ds, path, index, raw.shape[0]))
    files = source.files
    series_uid = str(_same(headers, files, "SeriesInstanceUID") or "")
    found = str(_same(headers, files, "Modality") or "")
    _same(headers, files, "PixelRepresentation")
    shapes = {a.shape[1:] for a in arrays}
    dtypes = {a.dtype for a in arrays}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise VolumeError(f"{source.label}: slices differ in size or stored dtype "
                          f"({sorted(shapes)}, {sorted(str(d) for d in dtypes)})")
    want = expected_modality(modality)
    if want is not None and found != want and not force:
        raise VolumeError(f"{source.label}: modality {found or 'missing'}, expected {want} "
                          f"(--force reads it anyway)")
    ordered, spacing_z = _order(slices, files, source.label, headers[0])
    spacing_yx = _pixel_spacing(ordered, source.label, force)
    rescaled = all(s.slope is not None and s.intercept is not None for s in ordered)
    if found == "CT" and not rescaled and not force:
        raise VolumeError(f"{source.label}: CT without RescaleSlope/RescaleIntercept, so "
                          f"values may not be HU (--force reads stored values as HU)")
    slopes = tuple(1.0 if s.slope is None else s.slope for s in ordered)
    intercepts = tuple(0.0 if s.intercept is None else s.intercept for s in ordered)
    if any(slope == 0.0 for slope in slopes):
        raise VolumeError(f"{source.label}: RescaleSlope is 0")
    values = np.empty((len(ordered), *next(iter(shapes))), dtype=np.float32)
    for z, s in enumerate(ordered):
        values[z] = arrays[s.file][s.frame].astype(np.float32) * np.float32(slopes[z])
        values[z] += np.float32(intercepts[z])
    unit = "HU" if found == "CT" else str(headers[0].get("Units", "") or "")
    layout = DicomLayout(
        headers=tuple(headers), files=files, slices=tuple((s.file, s.frame) for s in ordered),
        stored_dtype=next(iter(dtypes)),
        bits_stored=max(int(ds.get("BitsStored", a.dtype.itemsize * 8))
                        for ds, a in zip(headers, arrays, strict=True)),
        slopes=slopes, intercepts=intercepts, rescaled=rescaled)
    return Volume(values=values, spacing_mm=(spacing_z, *spacing_yx), modality=found, unit=unit,
                  series_uid=series_uid, description=str(headers[0].get("SeriesDescription", "")),
                  source=source, dicom=layout)


def _order(slices: list[_Slice], files: Sequence[Path], label: str,
           first: Dataset) -> tuple[list[_Slice], float]:
    """Slices sorted by position along the normal, and the step between them (mm)."""
    if len(slices) == 1:
        step = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        return slices, abs(float(step)) or 1.0
    orientations = [s.orientation for s in slices]
    if any(o is None for o in orientations) or any(s.position is None for s in slices):
        bad = next(s for s in slices if s.orientation is None or s.position is None)
        raise VolumeError(f"{files[bad.file]}: no ImagePositionPatient/ImageOrientationPatient;"
                          f" cannot order {len(slices)} slices")
    reference = np.asarray(orientations[0])
    for s in slices:
        if np.max(np.abs(np.asarray(s.orientation) - reference)) > _ORIENTATION_TOL:
            raise VolumeError(f"{label}: ImageOrientationPatient differs between slices "
                              f"({files[slices[0].file].name}: {orientations[0]}, "
                              f"{files[s.file].name}: {s.orientation})")
    normal = np.cross(reference[:3], reference[3:])
    depth = np.array([np.dot(np.asarray(s.position), normal) for s in slices])
    order = np.argsort(depth, kind="stable")
    ordered = [slices[i] for i in order]
    steps = np.diff(depth[order])
    if np.min(steps) < _DUPLICATE_TOL_MM:
        i = int(np.argmin(steps))
        raise VolumeError(f"{label}: two slices at the same position {depth[order][i]:.3f} mm "
                          f"({_name(files, ordered[i])}, {_name(files, ordered[i + 1])}); "
                          f"several acquisitions or phases in one series?")
    step = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > max(_SPACING_ABS_TOL_MM, _SPACING_REL_TOL * step):
        raise VolumeError(f"{label}: uneven slice spacing: a step of {steps[worst]:.3f} mm "
                          f"between {_name(files, ordered[worst])} and "
                          f"{_name(files, ordered[worst + 1])}, {step:.3f} mm elsewhere "
                          f"(a missing slice?)")
    return ordered, step


def _name(files: Sequence[Path], s: _Slice) -> str:
    return files[s.file].name + (f" frame {s.frame + 1}" if s.frame else "")


def _pixel_spacing(ordered: list[_Slice], label: str, force: bool) -> tuple[float, float]:
    spacings = {s.spacing_yx for s in ordered}
    if None in spacings:
        if not force:
            raise VolumeError(f"{label}: no PixelSpacing (--force reads it as 1 mm)")
        return 1.0, 1.0
    first = np.asarray(next(iter(spacings)), dtype=float)
    for spacing in spacings:
        if np.max(np.abs(np.asarray(spacing) - first) / first) > 1e-4:
            raise VolumeError(f"{label}: PixelSpacing differs between slices "
                              f"({sorted(str(s) for s in spacings)})")
    y, x = (float(v) for v in first)
    if y <= 0 or x <= 0:
        raise VolumeError(f"{label}: PixelSpacing must be positive, got {y}, {x}")
    return y, x
