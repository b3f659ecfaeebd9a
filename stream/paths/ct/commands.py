"""The CT path's command line: ``denoise ct`` (DICOM series and NIfTI files, on a local pool
or Ray), ``train|eval ct``."""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING

from stream.cli_options import eval_options, train_options
from stream.paths.spec import CliGroups, Environment
from stream.paths.volumes import add_denoise_parser, run_denoise

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CT_MODELS", "SERVED_MODEL", "add_commands", "body_mask"]

# Keys of engines.ct.specs.CT_SPECS and its SERVED_MODEL (a test pins them).
CT_MODELS = ("red_cnn", "unet")
SERVED_MODEL = "unet"
#: Where the statistics of a CT volume are taken: voxels above this are the body (air and the
#: lungs' darkest parts left out).
BODY_HU = -500.0


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The voxels of ``hu`` inside the body (above :data:`BODY_HU`)."""
    import numpy as np

    return np.asarray(hu) > BODY_HU


def add_commands(groups: CliGroups) -> None:
    denoise = add_denoise_parser(
        groups.denoise, "ct",
        help="denoise low-dose CT: DICOM series (files, folders) and NIfTI files",
        models=CT_MODELS, default_model=SERVED_MODEL,
        force_help="also denoise a non-CT modality, or CT without rescale tags")
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

    return run_denoise(args, modality="CT", description=f"sigstream denoise ct {args.model}",
                       denoiser=functools.partial(CtDenoiser, args.model, backend=args.backend,
                                                  cache_dir=env.cache_dir, threads=1),
                       foreground=body_mask)


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.ct.train import train_ct

    steps = {} if args.steps is None else {"steps": args.steps}
    train_ct(model=args.model, seed=args.seed, out_dir=args.out, workers=args.workers, **steps)
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.ct.evaluate import evaluate_ct

    evaluate_ct(json_path=args.json, quick=args.quick)
    return 0
