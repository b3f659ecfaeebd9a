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
:class:`~stream.paths.volumes.SliceModality` (a volume path's declaration, in
:mod:`stream.paths.volumes`, imports this module only when the service starts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import InputError
from stream.wire import Message

if TYPE_CHECKING:
    from engines.slices import SliceUnits, TilePlan
    from stream.paths.volumes import SliceModality

__all__ = ["MAX_SIDE_PX", "SlicePath", "SliceStage", "SliceWorker"]

MAX_SIDE_PX = 2048


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
        from engines.engine import load_engine

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
