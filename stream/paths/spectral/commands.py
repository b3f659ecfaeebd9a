"""The spectral path's command line: ``source spectral-sim|replay``, ``train|eval roi``, and
its results as ``sigstream tap`` prints them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.cli_options import eval_options, push_link, source_options, train_options
from stream.errors import ConfigError
from stream.paths.spec import CliGroups, Environment

__all__ = [
    "DEFAULT_MODEL", "PEAK_FITS", "ROI_MODELS", "SpectralSettings", "add_commands",
    "format_result",
]

# Keys of engines.roi.specs.ROI_SPECS, spelled out so `--help` does not load torch (a test pins
# them to the specs).
ROI_MODELS = ("cnn", "resnet", "unet", "resnet_unet", "peaks", "peaks_mixed")
# The peak-head model trained on mixed shapes: peak F1 and out-of-distribution figures in
# README "Models, training and evaluation" (engines/roi/weights/roi_eval.json).
DEFAULT_MODEL = "peaks_mixed"
#: How a peak-head model's peaks are measured: the fit shape its spec names, one named, or no
#: fit (the heads' own measurements, the least CPU); see engines.roi.peak_fit.
PEAK_FITS = ("model", "pvoigt", "hann", "none")


@dataclass(frozen=True, kw_only=True)
class SpectralSettings:
    """The spectral service's own settings: ``peak_fit``, the joint fit that measures the
    peaks of a peak-head model (``"model"``: the shape its spec names; ``"none"``: the heads'
    own measurements, for the most spectra per second; ignored by the ROI segmenters)."""

    peak_fit: str = "model"

    def __post_init__(self) -> None:
        if self.peak_fit not in PEAK_FITS:
            raise ConfigError(f"peak_fit must be one of {', '.join(PEAK_FITS)}, "
                              f"got {self.peak_fit!r}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--peak-fit", choices=PEAK_FITS, default="model",
                            help="joint fit of a peak-head model's peaks: its own shape "
                                 "(model), pseudo-Voigt, Hann, or none (less CPU)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> SpectralSettings:
        return cls(peak_fit=args.peak_fit)


def add_commands(groups: CliGroups) -> None:
    sim = groups.source.add_parser("spectral-sim", help="spectrometer simulator (PAPERS.md §1)")
    sim.add_argument("--rate", type=float, default=100.0, help="spectra per second per stream")
    sim.add_argument("--stream", default="sim-1", help="stream id (prefix when --streams > 1)")
    sim.add_argument("--streams", type=int, default=1, help="simulated instruments")
    sim.add_argument("--count", type=int, default=None, help="stop after N spectra per stream")
    sim.add_argument("--length", type=int, default=512, help="samples per spectrum")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_spectral_sim)
    replay = groups.source.add_parser("replay",
                                      help="replay a CSV / NPY file, one spectrum per row")
    replay.add_argument("file", type=Path)
    replay.add_argument("--rate", type=float, default=10.0, help="spectra per second")
    replay.add_argument("--stream", default=None, help="stream id (default: the file's name)")
    replay.add_argument("--count", type=int, default=None)
    replay.add_argument("--loop", action="store_true", help="start again at the end")
    replay.add_argument(
        "--skip-rows", type=int, default=0,
        help="CSV rows to skip first (a numeric header, e.g. a wavenumber axis)",
    )
    replay.set_defaults(func=_replay)
    for parser in (sim, replay):
        source_options(parser)

    train = groups.train.add_parser("roi", help="the spectral ROI models")
    train.add_argument("--model", required=True, choices=ROI_MODELS)
    train.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: shipped)")
    train_options(train)
    train.set_defaults(func=_train)
    evaluate = groups.eval.add_parser("roi", help="peak F1 and ROI IoU vs classical pickers")
    evaluate.add_argument("--n-test", type=int, default=None,
                          help="test spectra (default 30000)")
    eval_options(evaluate)
    evaluate.set_defaults(func=_evaluate)


def _spectral_sim(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.spectral.sources import run_spectral_sim

    with push_link(args) as link:
        return run_spectral_sim(rate_hz=args.rate, stream=args.stream, streams=args.streams,
                                count=args.count, length=args.length, seed=args.seed, **link)


def _replay(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.spectral.sources import run_replay

    with push_link(args) as link:
        return run_replay(args.file, rate_hz=args.rate, stream=args.stream, count=args.count,
                          loop=args.loop, skip_rows=args.skip_rows, **link)


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.roi.train import train_roi

    steps = {} if args.steps is None else {"steps": args.steps}
    train_roi(model=args.model, seed=args.seed, out_dir=args.out, **steps)
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.report import publish_report
    from engines.roi.evaluate import format_table, roi_report

    n_test = {} if args.n_test is None else {"n_test": args.n_test}
    report = roi_report(**n_test)
    publish_report(report, format_table(report), args.json, tag="eval roi")
    return 0


def format_result(body: Mapping[str, Any]) -> str:
    """``roi=5  peaks=7  top@211.4 h=0.812 w=6.3``."""
    from stream.tap import number

    peaks = [p for p in body.get("peaks") or [] if isinstance(p, dict)]
    line = f"roi={len(body.get('roi') or [])}  peaks={len(peaks)}"
    heights = [p for p in peaks if isinstance(p.get("height"), (int, float))]
    if heights:
        top = max(heights, key=lambda p: p["height"])
        line += (f"  top@{number(top.get('index'), 1)} h={number(top.get('height'))}"
                 f" w={number(top.get('width'), 1)}")
    return line
