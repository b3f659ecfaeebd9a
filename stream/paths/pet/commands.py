"""The PET path's command line: ``denoise pet`` (DICOM series and NIfTI files, on a local pool
or Ray), ``train pet`` (on the simulation, or ``--from`` a site's own scans), ``eval pet`` and
``nema`` (:mod:`.nema_command`)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from stream.cli_options import eval_options, train_options
from stream.errors import ConfigError
from stream.paths.pet.nema_command import add_nema_command
from stream.paths.spec import CliGroups, Environment
from stream.paths.volumes import add_denoise_parser, run_denoise

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PET_MODELS", "SERVED_MODEL", "add_commands", "activity_mask"]

# Keys of engines.pet.specs.PET_SPECS and its SERVED_MODEL (a test pins them).
PET_MODELS = ("n2n", "n2v", "n2v2", "n2v2_struct")
SERVED_MODEL = "n2n"
#: What ``train pet --from`` fits by default: the best model that needs no raw counts.
IMAGES_ONLY_MODEL = "n2v2_struct"
#: Where the statistics of a PET volume are taken: voxels above this fraction of the volume's
#: mean positive activity (the phantom or patient, not the air round it).
ACTIVE_FRACTION = 0.2


def activity_mask(values: np.ndarray) -> np.ndarray:
    """The voxels of ``values`` that hold activity (see :data:`ACTIVE_FRACTION`)."""
    import numpy as np

    v = np.asarray(values)
    positive = np.maximum(v, 0)
    return v > ACTIVE_FRACTION * float(positive.mean()) if positive.any() else v > 0


def add_commands(groups: CliGroups) -> None:
    denoise = add_denoise_parser(
        groups.denoise, "pet",
        help="denoise short-acquisition PET: DICOM series (files, folders) and NIfTI files",
        models=PET_MODELS, default_model=SERVED_MODEL,
        force_help="also denoise a non-PET modality")
    denoise.add_argument("--weights", type=Path, default=None,
                         help="weights for --model from `sigstream train pet --from` (a .pt "
                              "file with its .json card beside it)")
    denoise.set_defaults(func=_denoise)

    train = groups.train.add_parser(
        "pet", help="the self-supervised PET denoisers (on the simulation, or --from scans)")
    train.add_argument("--model", choices=PET_MODELS, default=None,
                       help=f"default {SERVED_MODEL}; with --from {IMAGES_ONLY_MODEL} "
                            "(n2n needs the raw counts of two half scans)")
    train.add_argument("--from", dest="inputs", nargs="+", type=Path, default=None,
                       metavar="INPUT", help="train on these noisy scans (DICOM files, folders, "
                                             "NIfTI) instead of the simulation; needs --out")
    train.add_argument("--force", action="store_true",
                       help="with --from: also read a non-PET modality")
    train.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: the shipped model's)")
    train.add_argument("--threads", type=int, default=2)
    train_options(train)
    train.set_defaults(func=_train)

    evaluate = groups.eval.add_parser(
        "pet", help="PSNR/NRMSE/SSIM and NEMA recovery vs 2-min, Gaussian, median, N2V")
    evaluate.add_argument("--quick", action="store_true", help="a small, fast run")
    eval_options(evaluate)
    evaluate.set_defaults(func=_evaluate)

    add_nema_command(groups)


def _denoise(args: argparse.Namespace, env: Environment) -> int:
    from engines.pet.denoise import PetDenoiser, pet_spec

    spec = pet_spec(args.model, args.weights)  # a bad name is refused before any work
    return run_denoise(args, modality="PT", description=f"sigstream denoise pet {args.model}",
                       denoiser=functools.partial(PetDenoiser, spec=spec, backend=args.backend,
                                                  cache_dir=env.cache_dir, threads=1),
                       foreground=activity_mask)


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.pet.train import train_pet

    model = args.model or (SERVED_MODEL if args.inputs is None else IMAGES_ONLY_MODEL)
    images = None
    if args.inputs is not None:
        from engines.pet.data import images_from

        if args.out is None:
            raise ConfigError("train pet --from needs --out DIR: weights fitted to your scans "
                              "must not replace the shipped ones")
        if model == "n2n":
            raise ConfigError("train pet --from: n2n learns from two half scans' raw counts, "
                              f"which images do not have; use a blind-spot model such as "
                              f"{IMAGES_ONLY_MODEL}")
        images = images_from(args.inputs, force=args.force)
    card = train_pet(model, args.seed, args.out, images=images, steps=args.steps,
                     threads=args.threads)
    where = args.out or "the shipped weights folder"
    print(f"{card['name']}: {card['steps']} steps on {card['data']['slices']} slices in "
          f"{card['wall_s']:.0f} s; weights and card in {where}")
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.pet.evaluate import evaluate_pet

    evaluate_pet(json_path=args.json, quick=args.quick)
    return 0
