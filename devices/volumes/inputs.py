"""What the user named, as items to read (:func:`find_inputs`), and reading them one at a time,
a bad item reported and the others read (:func:`read_volumes`).

Inputs: a DICOM file (one slice or an enhanced multi-frame image: one item), a NIfTI file
(``.nii``, ``.nii.gz``: one item), or a folder, walked recursively: its NIfTI files are items,
and its DICOM files are grouped into one item per SeriesInstanceUID (a series may span
sub-folders). In a folder a file counts as DICOM when it has the "DICM" marker at byte 128
or a ``.dcm``/``.dicom``/``.ima`` suffix; other files (notes, DICOMDIR, hidden files and
folders, such as this package's temporary outputs) are ignored. A DICOM file whose header
cannot be read is its own item, so :func:`read_volumes` reports it with its reason.

pydicom reads only headers here; no pixel data, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from devices.errors import VolumeError
from devices.volumes.dicom_read import read_dicom_header, read_dicom_series
from devices.volumes.nifti import is_nifti, read_nifti
from devices.volumes.volume import Volume, VolumeFailure, VolumeSource

__all__ = ["find_inputs", "read_source", "read_volumes"]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICM_OFFSET = 128


def _looks_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            f.seek(_DICM_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False  # unreadable non-DICOM-named files are not ours to report


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder``, sorted, hidden files and folders skipped, links not followed
    into folders (a link loop would never end)."""
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(parent) / name


def _series_uid(path: Path) -> str | None:
    """The file's SeriesInstanceUID ("" when it has none), None when its header is bad."""
    try:
        return str(read_dicom_header(path, pixels=False).get("SeriesInstanceUID", "") or "")
    except (VolumeError, OSError):
        return None


def _folder_sources(folder: Path) -> list[VolumeSource]:
    series: dict[str, list[Path]] = {}
    alone: list[VolumeSource] = []
    for path in _walk(folder):
        if is_nifti(path):
            alone.append(VolumeSource(kind="nifti", root=folder, files=(path,),
                                      from_folder=True))
        elif path.name.upper() != "DICOMDIR" and _looks_dicom(path):
            uid = _series_uid(path)
            if uid:
                series.setdefault(uid, []).append(path)
            else:  # unreadable, or no UID to group by: an item of its own
                alone.append(VolumeSource(kind="dicom", root=folder, files=(path,),
                                          from_folder=True))
    found = alone + [VolumeSource(kind="dicom", root=folder, files=tuple(files), series_uid=uid,
                                  from_folder=True) for uid, files in series.items()]
    if not found:
        return [VolumeSource(kind="dicom", root=folder, files=(), from_folder=True)]
    return sorted(found, key=lambda s: s.files[0])


def find_inputs(paths: Iterable[str | Path]) -> list[VolumeSource]:
    """The items to read from the files and folders the user named, in argument order (a
    folder's items sorted by their first file). Never raises for a bad path: a missing path,
    an empty folder or an unreadable file becomes an item that :func:`read_volumes` reports."""
    sources: list[VolumeSource] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            sources.extend(_folder_sources(path))
        elif is_nifti(path):
            sources.append(VolumeSource(kind="nifti", root=path, files=(path,)))
        else:
            uid = _series_uid(path) if path.is_file() else None
            sources.append(VolumeSource(kind="dicom", root=path, files=(path,),
                                        series_uid=uid or ""))
    return sources


def read_source(source: VolumeSource, *, modality: str | None = None,
                force: bool = False) -> Volume:
    """Read one item; its faults raise (:class:`VolumeError`, or the ``OSError`` of a file
    that cannot be opened)."""
    if source.kind == "nifti":
        return read_nifti(source, modality=modality)
    return read_dicom_series(source, modality=modality, force=force)


def read_volumes(
    inputs: Iterable[VolumeSource | str | Path],
    *,
    modality: str | None = None,
    force: bool = False,
) -> Iterator[Volume | VolumeFailure]:
    """Read each item (paths are expanded with :func:`find_inputs` first) and yield its
    :class:`Volume`, or a :class:`VolumeFailure` whose ``message`` is one line naming the
    file and the fault; a failure never stops the items after it. One volume is read at a
    time (memory: one series). ``modality``/``force``: see :func:`read_dicom_series`."""
    for given in inputs:
        sources = [given] if isinstance(given, VolumeSource) else find_inputs([given])
        for source in sources:
            result: Volume | VolumeFailure
            try:
                result = read_source(source, modality=modality, force=force)
            except VolumeError as exc:
                result = VolumeFailure(source=source, message=str(exc))
            except OSError as exc:
                where = exc.filename or source.label
                result = VolumeFailure(source=source, message=f"{where}: {exc.strerror or exc}")
            yield result
