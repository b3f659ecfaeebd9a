"""Where each item's output goes under ``--out DIR`` (:func:`output_locations`), mirroring the
input, and writing it there in its input's form (:func:`write_volume`).

=========================================  ==================================================
input                                      output
=========================================  ==================================================
a folder ``F``, series in ``F/a/b``        series folder ``DIR/a/b/<SeriesInstanceUID>/``
                                           holding files named as the input's
a NIfTI ``F/a/x.nii`` found in folder F    ``DIR/a/x.nii.gz``
a DICOM file ``p/x.dcm`` named by itself   ``DIR/x.dcm``
a NIfTI file ``p/x.nii[.gz]``              ``DIR/x.nii.gz``
=========================================  ==================================================

Series folders are named after the input series' UID (digits and dots, safe on every file
system), so several series in one folder never collide and a rerun gives the same names. A
DICOM file without a SeriesInstanceUID gets ``series-<file name>``. Two items that would
still share a location (the same file name under two named folders, say) are told apart by
``-2``, ``-3``, ... in item order, so the mapping is deterministic for the same arguments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from devices.volumes.dicom_write import RescaleMode, write_dicom_file, write_dicom_series
from devices.volumes.nifti import nifti_stem, write_nifti
from devices.volumes.volume import Volume, VolumeSource, WriteSummary

__all__ = ["output_location", "output_locations", "write_volume"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_CHARS = 120


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._")[:_NAME_CHARS]


def _relative(folder: Path, root: Path) -> Path:
    return folder.relative_to(root) if folder.is_relative_to(root) else Path()


def output_location(source: VolumeSource, out_dir: str | Path) -> Path:
    """The output path of one item under ``out_dir`` (before telling collisions apart): a
    series folder for DICOM found in a folder, else a file (see the table above)."""
    out = Path(out_dir)
    if not source.files:
        return out / (_safe(source.root.resolve().name) or "input")
    first = source.files[0]
    if source.kind == "nifti":
        folder = _relative(first.parent, source.root) if source.from_folder else Path()
        return out / folder / f"{nifti_stem(first)}.nii.gz"
    if not source.from_folder:
        return out / first.name
    name = _safe(source.series_uid) or f"series-{_safe(first.name) or 'unnamed'}"
    return out / _relative(source.folder, source.root) / name


def output_locations(sources: Sequence[VolumeSource], out_dir: str | Path) -> list[Path]:
    """:func:`output_location` of each item, made distinct with ``-2``, ``-3``, ... suffixes
    in item order (before ``.nii.gz`` or a file's suffix)."""
    seen: set[Path] = set()
    locations = []
    for source in sources:
        location = output_location(source, out_dir)
        n = 1
        candidate = location
        while candidate in seen:
            n += 1
            candidate = _numbered(location, n, folder=source.kind == "dicom"
                                  and source.from_folder)
        seen.add(candidate)
        locations.append(candidate)
    return locations


def _numbered(path: Path, n: int, *, folder: bool) -> Path:
    name = path.name
    if folder:  # a UID's dots are not a suffix
        return path.with_name(f"{name}-{n}")
    suffix = ".nii.gz" if name.endswith(".nii.gz") else path.suffix
    return path.with_name(f"{name[: len(name) - len(suffix)]}-{n}{suffix}")


def write_volume(
    volume: Volume,
    denoised_values: np.ndarray,
    out_path: str | Path,
    *,
    description_suffix: str,
    rescale: RescaleMode = "input",
) -> WriteSummary:
    """Write ``denoised_values`` in the volume's input form at ``out_path`` (from
    :func:`output_locations`): a NIfTI with :func:`~devices.volumes.nifti.write_nifti`, DICOM
    found in a folder as a series folder with
    :func:`~devices.volumes.dicom_write.write_dicom_series`, a DICOM file named by itself as one
    file with :func:`~devices.volumes.dicom_write.write_dicom_file`. ``rescale`` applies to
    DICOM only."""
    if volume.nifti is not None:
        return write_nifti(volume, denoised_values, out_path,
                           description_suffix=description_suffix)
    if volume.source.from_folder or volume.dicom is None or len(volume.dicom.files) != 1:
        return write_dicom_series(volume, denoised_values, out_path,
                                  description_suffix=description_suffix, rescale=rescale)
    return write_dicom_file(volume, denoised_values, out_path,
                            description_suffix=description_suffix, rescale=rescale)
