"""``sigstream nema INPUT``: the NEMA NU-2 image-quality analysis of a PET scan of the NEMA IEC
body phantom (:mod:`engines.pet.nema`), and with ``--reference`` its PSNR / NRMSE / SSIM
against a reference scan (:mod:`engines.pet.metrics`).

INPUT and REF are a DICOM series (a folder holding one series, or a file) or a NIfTI file, read
as PET (a DICOM series of another modality is refused unless ``--force``; NIfTI does not say).
What the true activities allow (Bq/ml at scan time, in the image's unit):
``--sphere-activity`` gives absolute recovery coefficients and the EARL check; with
``--background-activity`` or ``--ratio`` also NU-2 contrast recovery; ``--ratio`` alone gives
contrast recovery and recovery coefficients against ratio x the measured background; nothing
gives recovery coefficients relative to the 37 mm sphere and background variability.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from stream.paths.spec import CliGroups, Environment

__all__ = ["add_nema_command"]


def add_nema_command(groups: CliGroups) -> None:
    """Add ``sigstream nema`` to the top-level command group."""
    nema = groups.top.add_parser(
        "nema", help="NEMA NU-2 image quality of a PET scan of the NEMA IEC body phantom: "
                     "recovery coefficients, contrast, background variability, EARL bands",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    nema.add_argument("input", type=Path,
                      help="the PET scan: a DICOM series (folder or file) or a NIfTI file")
    nema.add_argument("--reference", type=Path, default=None, metavar="REF",
                      help="also compare INPUT with this scan (same shape): PSNR, NRMSE, SSIM")
    nema.add_argument("--sphere-activity", type=float, default=None, metavar="BQML",
                      help="true sphere activity concentration at scan time, Bq/ml")
    truth = nema.add_mutually_exclusive_group()
    truth.add_argument("--background-activity", type=float, default=None, metavar="BQML",
                       help="true background activity concentration at scan time, Bq/ml")
    truth.add_argument("--ratio", type=float, default=None, metavar="R",
                       help="true sphere:background activity ratio (e.g. 4 or 10)")
    nema.add_argument("--json", type=Path, default=None, metavar="PATH",
                      help="also write the full analysis here as JSON")
    nema.add_argument("--force", action="store_true",
                      help="read a DICOM series of another modality as PET")
    nema.set_defaults(func=_nema)


def _read_pet(path: Path, force: bool) -> Any:
    """The one volume at ``path`` (a :class:`~devices.volumes.Volume`), read as PET."""
    from devices.errors import VolumeError
    from devices.volumes import find_inputs, read_source

    sources = find_inputs([path])
    if len(sources) != 1:
        raise VolumeError(f"{path}: holds {len(sources)} series or files; name one of them")
    return read_source(sources[0], modality="PT", force=force)


def _compare(image: Any, reference: Any) -> dict[str, float]:
    """PSNR / NRMSE / SSIM of two volumes of one shape (SSIM slice by slice when too thin for
    a 7-voxel 3-D window)."""
    import numpy as np

    from engines.pet.metrics import nrmse_percent, psnr_db, ssim

    a, r = image.values, reference.values
    if a.shape[0] == 1:
        similarity = ssim(a[0], r[0])
    elif a.shape[0] < 7:
        similarity = float(np.mean([ssim(a[z], r[z]) for z in range(a.shape[0])]))
    else:
        similarity = ssim(a, r)
    return {"psnr_db": psnr_db(a, r), "nrmse_percent": nrmse_percent(a, r), "ssim": similarity}


def _nema(args: argparse.Namespace, env: Environment) -> int:
    from devices.errors import VolumeError
    from engines.pet.nema import NemaActivities, analyse_nema
    from engines.pet.nema_locate import NemaError

    activities = NemaActivities(sphere_bqml=args.sphere_activity,
                                background_bqml=args.background_activity, ratio=args.ratio)
    volume = _read_pet(args.input, args.force)
    label = volume.source.label
    try:
        report = analyse_nema(volume.values, volume.spacing_mm, activities)
    except NemaError as exc:
        raise NemaError(f"{label}: {exc}") from exc
    comparison: dict[str, float] | None = None
    if args.reference is not None:
        reference = _read_pet(args.reference, args.force)
        if reference.shape != volume.shape:
            raise VolumeError(f"{reference.source.label}: shape {reference.shape} (z, y, x) "
                              f"differs from the input's {volume.shape}; the reference must "
                              f"match voxel for voxel")
        comparison = _compare(volume, reference)

    unit = volume.unit or "unknown unit"
    print(f"{label}: {volume.shape[0]} x {volume.shape[1]} x {volume.shape[2]} voxels of "
          f"{' x '.join(f'{s:.3g}' for s in volume.spacing_mm)} mm, {unit}")
    if activities.mode != "relative" and volume.unit not in ("BQML", ""):
        print(f"note: the image is in {volume.unit}, the given activities in Bq/ml")
    print(report.format_table())
    if comparison is not None:
        print(f"vs {args.reference}: PSNR {comparison['psnr_db']:.2f} dB, NRMSE "
              f"{comparison['nrmse_percent']:.2f} %, SSIM {comparison['ssim']:.4f}")
    if args.json is not None:
        # JSON has no infinity: identical images (PSNR inf) are written as null.
        figures = None if comparison is None else {
            key: value if math.isfinite(value) else None for key, value in comparison.items()}
        document = {"input": label, "unit": volume.unit, "nema": report.to_dict(),
                    "reference": None if figures is None else
                    {"path": str(args.reference), **figures}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return 0
