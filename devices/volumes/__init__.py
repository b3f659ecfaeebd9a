"""CT and PET volumes in and out: DICOM series (single-frame slices or enhanced multi-frame,
compressed or not) and NIfTI files read into :class:`Volume` (float32 ``(z, y, x)`` in physical
units, spacing in mm), and derived volumes written back in the input's form, atomically.

Reading: :func:`find_inputs` turns the files and folders a user named into items (one per DICOM
series or NIfTI file); :func:`read_volumes` reads them one at a time and yields a
:class:`Volume` or, for an item that cannot be read, a :class:`VolumeFailure` with one line
naming the file and the fault. Writing: :func:`output_locations` maps each item to a place
under an output folder mirroring the input; :func:`write_volume` writes there (a new DICOM
series with new UIDs in the study of the input, or a float32 NIfTI with the input's affine).

Modules: :mod:`~devices.volumes.volume` (the types), :mod:`~devices.volumes.dicom_read`,
:mod:`~devices.volumes.dicom_write`, :mod:`~devices.volumes.nifti`,
:mod:`~devices.volumes.inputs`, :mod:`~devices.volumes.outputs`,
:mod:`~devices.volumes.atomic`. Faults are :class:`~devices.errors.VolumeError`. Needs
pydicom >= 3 (with pylibjpeg, pylibjpeg-openjpeg and pylibjpeg-libjpeg to decode compressed
pixel data) and nibabel; never imports torch or :mod:`stream`.
"""

from devices.errors import VolumeError
from devices.volumes.dicom_read import read_dicom_series
from devices.volumes.dicom_write import RescaleMode, write_dicom_file, write_dicom_series
from devices.volumes.inputs import find_inputs, read_source, read_volumes
from devices.volumes.nifti import read_nifti, write_nifti
from devices.volumes.outputs import output_location, output_locations, write_volume
from devices.volumes.volume import (
    DicomLayout,
    NiftiLayout,
    Volume,
    VolumeFailure,
    VolumeSource,
    WriteSummary,
)

__all__ = [
    "DicomLayout",
    "NiftiLayout",
    "RescaleMode",
    "Volume",
    "VolumeError",
    "VolumeFailure",
    "VolumeSource",
    "WriteSummary",
    "find_inputs",
    "output_location",
    "output_locations",
    "read_dicom_series",
    "read_nifti",
    "read_source",
    "read_volumes",
    "write_dicom_file",
    "write_dicom_series",
    "write_nifti",
    "write_volume",
]
