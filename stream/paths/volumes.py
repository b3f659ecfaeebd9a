"""What the volume paths' ``sigstream denoise <path>`` commands share: their options (inputs,
``--out``, ``--workers``, ``--ray``, ``--report``, ``--force``, ``--no-progress``) and the run
of a :class:`~stream.batch.BatchJob` with its one-line summary and exit status."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.cli_options import backend_option

__all__ = ["add_denoise_parser", "run_denoise"]


def add_denoise_parser(denoise: Any, name: str, *, help: str, models: tuple[str, ...],
                       default_model: str, force_help: str) -> argparse.ArgumentParser:
    """``sigstream denoise <name>`` with the options every volume path takes; the caller adds
    its own and sets ``func``."""
    parser: argparse.ArgumentParser = denoise.add_parser(name, help=help)
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="DICOM files, folders (searched for series) or NIfTI files")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder; mirrors the inputs (one new series per series)")
    parser.add_argument("--model", choices=models, default=default_model)
    backend_option(parser)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (or Ray actors), each loading the engine once")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run on Ray: a local cluster, or the cluster at ADDRESS "
                             "(pip install 'sigstream[ray]')")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the run's report here (JSON: per series slices, seconds, "
                             "statistics and noise before and after)")
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_denoise(args: argparse.Namespace, *, modality: str, denoiser: Callable[[], Any],
                description: str,
                foreground: Callable[[np.ndarray], np.ndarray] | None) -> int:
    """Run the batch job the parsed ``args`` describe; print one line; the exit status (1 if
    any series failed or none was found)."""
    from stream.batch import BatchJob, run_batch

    if args.ray is not None and args.ray != "local" and Path(args.ray).exists():
        # `--ray INPUT ...`: the optional address took an input; it was a local cluster.
        args.inputs.insert(0, Path(args.ray))
        args.ray = "local"
    job = BatchJob(modality=modality, denoiser=denoiser, description=description,
                   force=args.force, foreground=foreground)
    report = run_batch(args.inputs, args.out, job, workers=args.workers, ray=args.ray,
                       report_path=args.report, progress=not args.no_progress)
    ok = len(report.items) - report.failed
    print(f"denoised {ok} of {len(report.items)} series in {report.seconds:.1f} s "
          f"({report.runner}, {report.workers} worker{'s' if report.workers > 1 else ''})"
          + (f"; {report.failed} failed" if report.failed else ""))
    return 1 if report.failed or not report.items else 0
