"""The CT path's command line: ``denoise ct`` (DICOM series and NIfTI files, on a local pool
or Ray), ``train|eval ct``."""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.cli_options import backend_option, eval_options, train_options
from stream.errors import ConfigError
from stream.paths.spec import CliGroups, Environment

__all__ = ["CT_MODELS", "SERVED_MODEL", "CtSettings", "add_commands", "body_mask"]

# Keys of engines.ct.specs.CT_SPECS and its SERVED_MODEL (a test pins them).
CT_MODELS = ("red_cnn", "unet")
SERVED_MODEL = "unet"
#: Where the statistics of a CT volume are taken: voxels above this are the body (air and the
#: lungs' darkest parts left out).
BODY_HU = -500.0


@dataclass(frozen=True, kw_only=True)
class CtSettings:
    """The live CT service's own settings: ``tile_px``, the engine's item in pixels a side
    (``None``: the model's, a whole 512² slice), a multiple of 16 from 64 to 1024."""

    tile_px: int | None = None

    def __post_init__(self) -> None:
        t = self.tile_px
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t % 16
                              or not 64 <= t <= 1024):
            raise ConfigError(f"tile_px must be a multiple of 16 from 64 to 1024, got {t!r}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tile-px", type=int, default=None,
                            help="engine item, pixels a side (default: the model's, 512)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> CtSettings:
        return cls(tile_px=args.tile_px)


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The voxels of ``hu`` inside the body (above :data:`BODY_HU`)."""
    return np.asarray(hu) > BODY_HU


def add_commands(groups: CliGroups) -> None:
    denoise = groups.denoise.add_parser(
        "ct", help="denoise low-dose CT: DICOM series (files, folders) and NIfTI files")
    denoise.add_argument("inputs", nargs="+", type=Path,
                         help="DICOM files, folders (searched for series) or NIfTI files")
    denoise.add_argument("--out", type=Path, required=True,
                         help="output folder; mirrors the inputs (one new series per series)")
    denoise.add_argument("--model", choices=CT_MODELS, default=SERVED_MODEL)
    backend_option(denoise)
    denoise.add_argument("--workers", type=int, default=1,
                         help="worker processes (or Ray actors), each loading the engine once")
    denoise.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                         help="run on Ray: a local cluster, or the cluster at ADDRESS "
                              "(pip install 'sigstream[ray]')")
    denoise.add_argument("--report", type=Path, default=None,
                         help="write the run's report here (JSON: per series slices, seconds, "
                              "HU statistics and noise before and after)")
    denoise.add_argument("--force", action="store_true",
                         help="also denoise a non-CT modality, or CT without rescale tags")
    denoise.add_argument("--no-progress", action="store_true", help="no progress bars")
    denoise.set_defaults(func=_denoise)

    train = groups.train.add_parser("ct", help="the low-dose CT denoisers")
    train.add_argument("--model", required=True, choices=CT_MODELS)
    train.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: shipped)")
    train.add_argument("--workers", type=int, default=2,
                       help="processes simulating the training phantoms (once; then cached)")
    train_options(train)
    train.set_defaults(func=_train)
    evaluate = groups.eval.add_parser("ct", help="PSNR/SSIM/HU bias/noise/MTF50 vs baselines")
    evaluate.add_argument("--quick", action="store_true", help="a small, fast run")
    eval_options(evaluate)
    evaluate.set_defaults(func=_evaluate)


def _denoise(args: argparse.Namespace, env: Environment) -> int:
    from engines.ct.denoise import CtDenoiser
    from stream.batch import BatchJob, run_batch

    if args.ray is not None and args.ray != "local" and Path(args.ray).exists():
        # `--ray INPUT ...`: the optional address took an input; it was a local cluster.
        args.inputs.insert(0, Path(args.ray))
        args.ray = "local"

    job = BatchJob(
        modality="CT",
        denoiser=functools.partial(CtDenoiser, args.model, backend=args.backend,
                                   cache_dir=env.cache_dir, threads=1),
        description=f"sigstream denoise ct {args.model}",
        force=args.force, foreground=body_mask,
    )
    report = run_batch(args.inputs, args.out, job, workers=args.workers, ray=args.ray,
                       report_path=args.report, progress=not args.no_progress)
    ok = len(report.items) - report.failed
    print(f"denoised {ok} of {len(report.items)} series in {report.seconds:.1f} s "
          f"({report.runner}, {report.workers} worker{'s' if report.workers > 1 else ''})"
          + (f"; {report.failed} failed" if report.failed else ""))
    return 1 if report.failed or not report.items else 0


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.ct.train import train_ct

    steps = {} if args.steps is None else {"steps": args.steps}
    train_ct(model=args.model, seed=args.seed, out_dir=args.out, workers=args.workers, **steps)
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.ct.evaluate import evaluate_ct

    evaluate_ct(json_path=args.json, quick=args.quick)
    return 0
