"""What the volume paths (CT, PET) share, light enough for ``sigstream --help``:

- their declaration: :class:`SliceModality` (what their live slices are), :class:`SliceSettings`
  (``run <path>`` options) and :func:`volume_path_spec`, the live slices served by
  :class:`~stream.paths.slices.SlicePath` (imported when the service starts);
- their ``sigstream denoise <path>`` commands: the options (inputs, ``--out``, ``--workers``,
  ``--ray``, ``--report``, ``--force``, ``--no-progress``) and the run of a
  :class:`~stream.batch.BatchJob` with its one-line summary and exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.cli_options import backend_option
from stream.errors import ConfigError
from stream.paths.deferred import deferred_gate, load_attribute
from stream.paths.spec import CliGroups, PathSpec, ServeOptions, ViewSpec

if TYPE_CHECKING:
    import numpy as np

    from engines.slices import SliceUnits
    from engines.spec import ModelSpec
    from stream.paths.slices import SlicePath

__all__ = [
    "SliceModality", "SliceSettings", "add_denoise_parser", "result_line", "run_denoise",
    "slice_server", "volume_path_spec",
]


@dataclass(frozen=True, kw_only=True)
class SliceModality:
    """What a volume path's live slices are. ``path``: the path's name (the slice kind is
    ``<path>-slice``); ``unit``: the values' unit; ``stored_dtypes``: the integer dtypes that
    come with a rescale; ``specs``: ``"module:ATTRIBUTE"`` of the path's model specs, and
    ``units``: of its :class:`~engines.slices.SliceUnits` (imported in the engine worker only).
    """

    path: str
    unit: str
    stored_dtypes: tuple[str, ...]
    specs: str
    units: str

    @property
    def kind(self) -> str:
        return f"{self.path}-slice"

    def load(self) -> tuple[dict[str, ModelSpec], SliceUnits]:
        """The path's model specs and units."""
        return load_attribute(self.specs), load_attribute(self.units)


@dataclass(frozen=True, kw_only=True)
class SliceSettings:
    """A live volume path's own settings: ``tile_px``, the engine's item in pixels a side
    (``None``: the model's), a multiple of 16 from 64 to 1024."""

    tile_px: int | None = None

    def __post_init__(self) -> None:
        t = self.tile_px
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t % 16
                              or not 64 <= t <= 1024):
            raise ConfigError(f"tile_px must be a multiple of 16 from 64 to 1024, got {t!r}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tile-px", type=int, default=None,
                            help="engine item, pixels a side (default: the model's)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Any) -> SliceSettings:
        return cls(tile_px=args.tile_px)


def slice_server(modality: SliceModality, default_model: str
                 ) -> Callable[[ServeOptions, SliceSettings], SlicePath]:
    """A volume path's :attr:`~stream.paths.spec.PathSpec.serve`: its live slices."""
    def serve(options: ServeOptions, settings: SliceSettings) -> SlicePath:
        from stream.paths.slices import SlicePath

        return SlicePath(modality=modality, model=options.model or default_model,
                         weights=options.weights, tile_px=settings.tile_px)

    return serve


def result_line(body: Mapping[str, Any]) -> str:
    """A slice result in one line: ``slice 512x512 int16``."""
    shape = "x".join(str(n) for n in body.get("shape") or [])
    return f"slice {shape} {body.get('dtype')}"


def volume_path_spec(*, modality: SliceModality, summary: str, models: tuple[str, ...],
                     default_model: str, max_batch: int, gate: str,
                     cli: Callable[[CliGroups], None]) -> PathSpec:
    """The :class:`~stream.paths.spec.PathSpec` of a volume path: its live slices served by
    :class:`~stream.paths.slices.SlicePath`, its engines built ``max_batch`` slices a call,
    ``gate`` (``"module:function"``) its task gate, ``cli`` its verbs."""
    def engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
        specs, _ = modality.load()
        return {spec.name: (spec, max_batch) for spec in specs.values()}

    return PathSpec(name=modality.path, summary=summary,
                    serve=slice_server(modality, default_model), settings=SliceSettings,
                    models=models, default_model=default_model, engine_models=engine_models,
                    task_gate=deferred_gate(gate), cli=cli, format_result=result_line,
                    view=ViewSpec(panel="slices", input_kind=modality.kind, unit=modality.unit,
                                  values="stream.paths.slice_view:values",
                                  digest="stream.paths.slice_view:digest"))


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
