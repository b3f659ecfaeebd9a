"""NIfTI volumes: :func:`read_nifti` and :func:`write_nifti` (nibabel).

NIfTI stores voxels as ``(x, y, z)`` (i, j, k); a :class:`~devices.volumes.volume.Volume` holds
``(z, y, x)``, so the reader transposes and the writer transposes back. Values are the
header-scaled ones (``scl_slope``/``scl_inter`` applied), as float32.

Shapes: 3-D is a volume; 2-D is a one-slice volume; 4-D (or more) is read only when every
axis after the third has length 1 (one volume), and refused otherwise (a time series: split
it into 3-D files first). NaN or Inf voxels are refused: a denoiser would spread them.

The writer keeps the input's affine and header (qform/sform and their codes, units, intent,
``descrip`` with the suffix appended) and stores float32 with no scaling (``scl_slope`` unset):
re-quantising to the input's integer dtype would throw away what a denoiser bought below one
step, and float32 costs at most twice an int16 file. Writes are atomic (temporary sibling and
``os.replace``) and never overwrite.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from devices.errors import VolumeError
from devices.volumes.atomic import atomic_file, check_target
from devices.volumes.dicom_read import one_line
from devices.volumes.volume import (
    NiftiLayout,
    Volume,
    VolumeSource,
    WriteSummary,
    expected_modality,
)

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "nifti_stem", "read_nifti", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}
_DESCRIP_BYTES = 80


def is_nifti(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name (case-insensitive)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The name without ``.nii``/``.nii.gz``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nifti(path: str | Path | VolumeSource, *, modality: str | None = None) -> Volume:
    """Read a NIfTI-1/2 file as float32 ``(z, y, x)`` in its scaled units; ``spacing_mm``
    from the header's voxel sizes (converted to mm). ``modality`` (e.g. "CT": NIfTI does not
    say) sets ``Volume.modality`` and, for CT, ``unit="HU"``. A file that is not NIfTI, is
    truncated, has NaN/Inf or is a 4-D series is a :class:`VolumeError`."""
    if isinstance(path, VolumeSource):
        source = path
        if len(source.files) != 1:
            raise ValueError(f"a NIfTI source has one file, got {len(source.files)}")
    else:
        source = VolumeSource(kind="nifti", root=Path(path), files=(Path(path),))
    file = source.files[0]
    if not file.is_file():
        file.open("rb").close()  # the OSError open() gives: missing, a folder, no permission
    try:
        image = nib.load(file)
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeError(f"{file}: not a NIfTI image ({type(image).__name__})")
        shape = tuple(int(n) for n in image.shape)
        if not 2 <= len(shape) or any(n != 1 for n in shape[3:]):
            raise VolumeError(f"{file}: a {len(shape)}-D NIfTI of shape {shape}; a volume is "
                              f"3-D (2-D is read as one slice; split a 4-D series first)")
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except VolumeError:
        raise
    except Exception as exc:  # nibabel, gzip and numpy raise many kinds on a corrupt file
        raise VolumeError(f"{file}: not a readable NIfTI file "
                          f"({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    data = data.reshape(shape[:3] if len(shape) >= 3 else (*shape, 1))
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise VolumeError(f"{file}: {bad} NaN or Inf voxels of {data.size}")
    header = image.header.copy()
    to_mm = _TO_MM.get(str(header.get_xyzt_units()[0]), 1.0)
    zooms = [float(z) * to_mm for z in header.get_zooms()[:3]] + [1.0] * 3
    spacing = (zooms[2], zooms[1], zooms[0])
    if min(spacing) <= 0:
        raise VolumeError(f"{file}: voxel sizes must be positive, got {header.get_zooms()}")
    want = expected_modality(modality) or ""
    return Volume(
        values=np.ascontiguousarray(data.transpose(2, 1, 0)), spacing_mm=spacing, modality=want,
        unit="HU" if want == "CT" else "", series_uid="",
        description=_descrip(header), source=source,
        nifti=NiftiLayout(affine=np.array(image.affine, dtype=np.float64), header=header,
                          shape=shape))


def _descrip(header: nib.Nifti1Header) -> str:
    raw = header["descrip"].item()
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return text.rstrip("\x00").strip()


def write_nifti(
    volume: Volume,
    denoised_values: np.ndarray,
    out_path: str | Path,
    *,
    description_suffix: str = "",
) -> WriteSummary:
    """Write ``denoised_values`` (float, ``volume.shape``) as a float32 NIfTI at ``out_path``
    (``.nii.gz`` compresses), with the input's affine, header and stored shape; ``descrip``
    becomes ``"<input> | <description_suffix>"`` (80 bytes at most). Refuses an existing
    ``out_path`` (``FileExistsError``), an input file (:class:`VolumeError`) and NaN/Inf."""
    if volume.nifti is None:
        raise ValueError("this volume was not read from NIfTI; write it with write_dicom_series")
    if denoised_values.shape != volume.shape:
        raise ValueError(f"denoised values have shape {denoised_values.shape}, the volume "
                         f"{volume.shape}")
    out = Path(out_path)
    check_target(out, volume.source.files)
    if not np.all(np.isfinite(denoised_values)):
        raise VolumeError(f"{out}: the denoised values hold NaN or Inf")
    layout = volume.nifti
    data = np.asarray(denoised_values, dtype=np.float32).transpose(2, 1, 0).reshape(layout.shape)
    header = layout.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(None, None)  # float data, stored as is
    if description_suffix:
        old = volume.description
        text = f"{old} | {description_suffix}" if old else description_suffix
        header["descrip"] = text.encode("latin-1", "replace")[: _DESCRIP_BYTES - 1]
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = kind(data, layout.affine, header)
    with atomic_file(out) as tmp:
        nib.save(image, tmp)
    return WriteSummary(path=out, files=(out,), series_uid="", clipped_voxels=0)
