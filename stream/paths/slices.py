"""Live 2-D slices of a volume path (CT, PET): a reconstruction workstation pushes slices as it
makes them (``kind="<path>-slice"``, one series per stream) and gets each back denoised
(``kind="result.<path>"``), the slices of many series batched together on the engines.

- :class:`SliceStage` (ingest or shard process, numpy only) checks a slice once: 2-D, at most
  :data:`MAX_SIDE_PX` a side, a stored integer dtype with its rescale (``slope``, ``intercept``
  in the header: value = stored x slope + intercept) or ``float32`` in the modality's unit,
  finite.
- :class:`SliceWorker` (engine worker) cuts it into the engine's tiles
  (:func:`engines.slices.cut_tiles`) and stitches the outputs back; the result carries the
  denoised slice in the input's dtype and rescale, so values round-trip within one rescale step.

:class:`SlicePath` ties them together as a :class:`~stream.stages.ServedPath` for one
:class:`SliceModality`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import ConfigError, InputError
from stream.wire import Message

if TYPE_CHECKING:
    from engines.slices import SliceUnits, TilePlan
    from engines.spec import ModelSpec
    from stream.paths.spec import CliGroups, PathSpec, ServeOptions

__all__ = [
    "MAX_SIDE_PX", "SliceModality", "SlicePath", "SliceSettings", "SliceStage", "SliceWorker",
    "result_line", "slice_server", "volume_path_spec",
]

MAX_SIDE_PX = 2048


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
        return _attribute(self.specs), _attribute(self.units)


def _attribute(ref: str) -> Any:
    """The object ``"module:NAME"`` names (imported on first use: the engine side only)."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


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


def _rescale(msg: Message, modality: SliceModality) -> tuple[float, float]:
    """``(slope, intercept)`` of a slice: the header's for stored integers, ``(1, 0)`` for
    values in the modality's unit."""
    if msg.payload.dtype.name not in modality.stored_dtypes:
        return 1.0, 0.0
    slope, intercept = msg.header.get("slope"), msg.header.get("intercept")
    for name, value in (("slope", slope), ("intercept", intercept)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise InputError("bad_field", f"a {msg.payload.dtype.name} slice needs a finite "
                             f"'{name}' in its header ({modality.unit} = stored x slope + "
                             f"intercept), got {value!r}", stream=msg.stream, seq=msg.seq)
    if slope == 0:
        raise InputError("bad_field", "slope must not be 0", stream=msg.stream, seq=msg.seq)
    return float(slope), float(intercept)  # type: ignore[arg-type]


class SliceStage:
    """Per-stream stage: the one check of a slice (see the module docstring)."""

    __slots__ = ("modality", "stream")

    def __init__(self, stream: str, modality: SliceModality) -> None:
        self.stream, self.modality = stream, modality

    def process(self, msg: Message) -> Sequence[Message]:
        m, x = self.modality, msg.payload
        what = f"a {m.path.upper()} slice"
        if not isinstance(x, np.ndarray) or x.dtype.name not in (*m.stored_dtypes, "float32"):
            raise InputError("bad_dtype", f"{what} is {' or '.join(m.stored_dtypes)} (with slope "
                             f"and intercept) or float32 {m.unit}, got "
                             f"{getattr(x, 'dtype', type(x))}", stream=msg.stream, seq=msg.seq)
        if x.ndim != 2 or min(x.shape) < 1:
            raise InputError("bad_shape", f"{what} is 2-D (rows, columns), got shape "
                             f"{list(x.shape)}", stream=msg.stream, seq=msg.seq)
        if max(x.shape) > MAX_SIDE_PX:
            raise InputError("too_long", f"{what} is at most {MAX_SIDE_PX} pixels a side, "
                             f"got {list(x.shape)}", stream=msg.stream, seq=msg.seq)
        _rescale(msg, m)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise InputError("input_contract", f"the slice has {int((~np.isfinite(x)).sum())} "
                             "NaN or infinite pixels", stream=msg.stream, seq=msg.seq)
        return (msg,)

    def flush(self) -> Sequence[Message]:
        return ()


class SliceWorker:
    """Engine half: tiles in, slices out (``engine``: ``(B, 1, T, T) -> (B, 1, T, T)``)."""

    def __init__(self, engine: Any, *, modality: SliceModality, units: SliceUnits, tile: int,
                 margin: int) -> None:
        self.engine, self.modality, self.units = engine, modality, units
        self.tile, self.margin = tile, margin

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        from engines.slices import cut_tiles

        slope, intercept = _rescale(msg, self.modality)
        values = msg.payload.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        tiles, plan = cut_tiles(values, tile=self.tile, margin=self.margin, units=self.units)
        return tiles, (plan, slope, intercept)

    def run(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine(rows))

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        from engines.slices import stitch_tiles

        tiles_plan: TilePlan
        tiles_plan, slope, intercept = plan
        values = stitch_tiles(outputs, tiles_plan)
        dtype = msg.payload.dtype
        if dtype.kind == "f":
            stored = values.astype(dtype)
        else:
            info = np.iinfo(dtype)
            stored = np.clip(np.rint((values - intercept) / slope), info.min,
                             info.max).astype(dtype)
        body: dict[str, Any] = {"dtype": dtype.name, "shape": list(stored.shape),
                                "pixels": stored.tobytes()}
        if dtype.kind != "f":
            body.update(slope=slope, intercept=intercept)
        return body

    def warm_up(self, max_batch: int) -> None:
        for batch in sorted({1, max_batch}):
            self.run(np.zeros((batch, 1, self.tile, self.tile), np.float32))

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True, kw_only=True)
class SlicePath:
    """A volume path's live slices as the runtime needs them. ``model``: a key of the
    modality's specs; ``weights``: a file instead of the shipped weights; ``tile_px``: the
    engine's item (``None``: the spec's; smaller tiles cost less per call for small slices,
    larger slices are cut into overlapping tiles)."""

    modality: SliceModality
    model: str
    weights: Path | None = None
    tile_px: int | None = None

    time_series: bool = dataclasses.field(default=False, init=False)
    sticky_streams: bool = dataclasses.field(default=False, init=False)

    @property
    def name(self) -> str:
        return self.modality.path

    @property
    def input_kind(self) -> str:
        return self.modality.kind

    def stream_stage(self, stream: str) -> SliceStage:
        return SliceStage(stream, self.modality)

    def load_worker(self, *, backend: str, max_batch: int, cache_dir: Path | None,
                    threads: int | None) -> SliceWorker:
        import torch

        from engines.engine import load_engine

        if threads is not None:
            torch.set_num_threads(threads)
        specs, units = self.modality.load()
        spec = specs[self.model]
        if self.weights is not None:
            spec = dataclasses.replace(spec, weights=str(Path(self.weights).resolve()))
        if self.tile_px is not None:
            shape = (1, self.tile_px, self.tile_px)
            spec = dataclasses.replace(spec, input_shape=shape, output_shape=shape)
        engine = load_engine(spec, backend, max_batch=max_batch, cache_dir=cache_dir,
                             threads=threads)
        tile = int(spec.input_shape[-1])
        worker = SliceWorker(engine, modality=self.modality, units=units, tile=tile,
                             margin=min(int(spec.extra.get("tile_margin_px", 0)), tile // 4))
        worker.warm_up(max_batch)
        return worker


def slice_server(modality: SliceModality, default_model: str
                 ) -> Callable[[ServeOptions, SliceSettings], SlicePath]:
    """A volume path's :attr:`~stream.paths.spec.PathSpec.serve`: its live slices."""
    def serve(options: ServeOptions, settings: SliceSettings) -> SlicePath:
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
    :class:`SlicePath`, its engines built ``max_batch`` slices a call, ``gate``
    (``"module:function"``) its task gate, ``cli`` its verbs."""
    from stream.paths.spec import PathSpec

    def engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
        specs, _ = modality.load()
        return {spec.name: (spec, max_batch) for spec in specs.values()}

    def task_gate(spec: ModelSpec, engine: Any) -> Any:
        return _attribute(gate)(spec, engine)

    return PathSpec(name=modality.path, summary=summary,
                    serve=slice_server(modality, default_model), settings=SliceSettings,
                    models=models, default_model=default_model, engine_models=engine_models,
                    task_gate=task_gate, cli=cli, format_result=result_line)
