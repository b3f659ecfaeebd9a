"""The types the volume readers and writers share: where a volume came from
(:class:`VolumeSource`), the volume itself (:class:`Volume`) with what is needed to write it back
in its input's form (:class:`DicomLayout`, :class:`NiftiLayout`), a per-item failure
(:class:`VolumeFailure`) and what a writer did (:class:`WriteSummary`).

Axes are ``(z, y, x)`` everywhere: slices, rows, columns. Pure numpy; no torch, no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pydicom and nibabel are imported only by the modules that read files
    from nibabel.nifti1 import Nifti1Header
    from pydicom.dataset import Dataset

__all__ = [
    "DicomLayout",
    "NiftiLayout",
    "SourceKind",
    "Volume",
    "VolumeFailure",
    "VolumeSource",
    "WriteSummary",
    "expected_modality",
]

SourceKind = Literal["dicom", "nifti"]

# DICOM's code for PET is "PT"; users say "PET".
_MODALITY_ALIASES = {"PET": "PT"}


def expected_modality(modality: str | None) -> str | None:
    """A user's modality name as DICOM writes it (``"pet"`` -> ``"PT"``, ``"ct"`` -> ``"CT"``)."""
    if modality is None:
        return None
    upper = modality.strip().upper()
    return _MODALITY_ALIASES.get(upper, upper)


@dataclass(frozen=True, kw_only=True)
class VolumeSource:
    """One item to read: a DICOM series (one or more files) or one NIfTI file.

    ``root`` is the path the user named (a file or a folder), ``files`` the files of this item
    (sorted by path; empty for a folder that holds nothing readable), ``series_uid`` the
    SeriesInstanceUID that grouped them ("" when unknown: a NIfTI, an unreadable header).
    ``from_folder`` says whether the item was found by walking a folder (its output is then a
    series folder mirroring the input tree) or named as a file by itself (its output is a file).
    """

    kind: SourceKind
    root: Path
    files: tuple[Path, ...]
    series_uid: str = ""
    from_folder: bool = False

    @property
    def folder(self) -> Path:
        """The deepest folder holding every file of this item (``root`` when there are none)."""
        if not self.files:
            return self.root
        return Path(os.path.commonpath([f.parent for f in self.files]))

    @property
    def label(self) -> str:
        """The path to name in messages: the only file, else the series' folder."""
        return str(self.files[0] if len(self.files) == 1 else self.folder)


@dataclass(frozen=True, kw_only=True, eq=False)
class DicomLayout:
    """How a DICOM volume is stored, to write a derived series in the same form.

    ``headers`` are the input datasets (one per file, in ``files`` order) with the pixel data
    dropped; ``slices[z] = (file index, frame index)`` places slice ``z`` (frame 0 for
    single-frame files). ``stored_dtype`` and ``bits_stored`` describe the stored pixels;
    ``slopes[z]``/``intercepts[z]`` give ``value = stored * slope + intercept`` per slice (PET
    often has one slope per slice). ``rescaled`` is False when the input had no rescale tags
    (read with ``force``; slope 1, intercept 0 then, and none are written back).
    """

    headers: tuple[Dataset, ...]
    files: tuple[Path, ...]
    slices: tuple[tuple[int, int], ...]
    stored_dtype: np.dtype
    bits_stored: int
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    rescaled: bool

    @property
    def multiframe(self) -> bool:
        """True when one file holds several slices as frames (enhanced CT/PET)."""
        return len(self.files) == 1 and len(self.slices) > 1

    @property
    def stored_range(self) -> tuple[int, int]:
        """Smallest and largest stored value ``bits_stored`` bits allow (signed or not)."""
        if np.issubdtype(self.stored_dtype, np.signedinteger):
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1


@dataclass(frozen=True, kw_only=True, eq=False)
class NiftiLayout:
    """How a NIfTI volume is stored: its 4x4 voxel-to-world ``affine`` (mm), its ``header``
    (a copy) and the ``shape`` of its data as stored (2-D, 3-D or 4-D with one volume)."""

    affine: np.ndarray
    header: Nifti1Header
    shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True, eq=False)
class Volume:
    """One volume read from a DICOM series or a NIfTI file.

    ``values``: float32 ``(z, y, x)`` in physical units (``unit``: "HU" for CT; PET's Units
    tag such as "BQML", or "" when unknown). ``spacing_mm``: ``(z, y, x)`` in mm; z is the
    distance between slice positions along the slice normal. ``modality``: the DICOM code
    ("CT", "PT", ...; "" for a NIfTI read without an expected modality). Exactly one of
    ``dicom``/``nifti`` holds what is needed to write a derived volume back in the same form.
    """

    values: np.ndarray
    spacing_mm: tuple[float, float, float]
    modality: str
    unit: str
    series_uid: str
    description: str
    source: VolumeSource
    dicom: DicomLayout | None = None
    nifti: NiftiLayout | None = None

    def __post_init__(self) -> None:
        if self.values.dtype != np.float32 or self.values.ndim != 3:
            raise ValueError(f"values must be float32 (z, y, x), got {self.values.dtype} "
                             f"{self.values.shape}")
        if (self.dicom is None) == (self.nifti is None):
            raise ValueError("a Volume needs exactly one of dicom= and nifti=")
        if self.dicom is not None and len(self.dicom.slices) != self.values.shape[0]:
            raise ValueError(f"{len(self.dicom.slices)} slices in the layout, "
                             f"{self.values.shape[0]} in values")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` voxels."""
        z, y, x = self.values.shape
        return z, y, x


@dataclass(frozen=True, kw_only=True)
class VolumeFailure:
    """An item that could not be read; ``message`` is one line naming the file and the fault."""

    source: VolumeSource
    message: str


@dataclass(frozen=True, kw_only=True)
class WriteSummary:
    """What a writer produced: the output ``path`` (series folder or file), the ``files``
    written, the new ``series_uid`` ("" for NIfTI) and the voxels clipped to the stored
    dtype's range (``clipped_voxels``; always 0 for float32 NIfTI)."""

    path: Path
    files: tuple[Path, ...]
    series_uid: str
    clipped_voxels: int
