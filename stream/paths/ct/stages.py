"""Live CT slices: a reconstruction workstation pushes 2-D slices as it makes them
(``kind="ct-slice"``, one series per stream) and gets each back denoised
(``kind="result.ct"``), the slices of many series batched together on the engines.

- :class:`SliceStage` (ingest or shard process, numpy only) checks a slice once: 2-D, at most
  :data:`MAX_SIDE_PX` a side, ``int16``/``uint16`` with its rescale (``slope``, ``intercept``
  in the header: HU = stored x slope + intercept) or ``float32`` in HU, finite.
- :class:`SliceWorker` (engine worker) cuts it into the engine's tiles
  (:func:`engines.ct.tiles.cut_tiles`), and stitches the outputs back; the result carries the
  denoised slice in the input's dtype and rescale, so HU round-trip within one rescale step.

:class:`CtPath` ties them together as a :class:`~stream.stages.ServedPath`.
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
    from engines.ct.tiles import TilePlan

__all__ = ["MAX_SIDE_PX", "SLICE_KIND", "CtPath", "SliceStage", "SliceWorker"]

SLICE_KIND = "ct-slice"
MAX_SIDE_PX = 2048
_INTEGER_DTYPES = ("int16", "uint16")


def _rescale(msg: Message) -> tuple[float, float]:
    """``(slope, intercept)`` of a slice: the header's for stored integers, ``(1, 0)`` for HU."""
    if msg.payload.dtype.name not in _INTEGER_DTYPES:
        return 1.0, 0.0
    slope, intercept = msg.header.get("slope"), msg.header.get("intercept")
    for name, value in (("slope", slope), ("intercept", intercept)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise InputError("bad_field", f"a {msg.payload.dtype.name} slice needs a finite "
                             f"'{name}' in its header (HU = stored x slope + intercept), got "
                             f"{value!r}", stream=msg.stream, seq=msg.seq)
    if slope == 0:
        raise InputError("bad_field", "slope must not be 0", stream=msg.stream, seq=msg.seq)
    return float(slope), float(intercept)  # type: ignore[arg-type]


class SliceStage:
    """Per-stream stage: the one check of a slice (see the module docstring)."""

    __slots__ = ("stream",)

    def __init__(self, stream: str) -> None:
        self.stream = stream

    def process(self, msg: Message) -> Sequence[Message]:
        x = msg.payload
        if not isinstance(x, np.ndarray) or x.dtype.name not in (*_INTEGER_DTYPES, "float32"):
            raise InputError("bad_dtype", "a CT slice is int16 or uint16 (with slope and "
                             f"intercept) or float32 HU, got {getattr(x, 'dtype', type(x))}",
                             stream=msg.stream, seq=msg.seq)
        if x.ndim != 2 or min(x.shape) < 1:
            raise InputError("bad_shape", f"a CT slice is 2-D (rows, columns), got shape "
                             f"{list(x.shape)}", stream=msg.stream, seq=msg.seq)
        if max(x.shape) > MAX_SIDE_PX:
            raise InputError("too_long", f"a CT slice is at most {MAX_SIDE_PX} pixels a side, "
                             f"got {list(x.shape)}", stream=msg.stream, seq=msg.seq)
        _rescale(msg)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise InputError("input_contract", f"the slice has {int((~np.isfinite(x)).sum())} "
                             "NaN or infinite pixels", stream=msg.stream, seq=msg.seq)
        return (msg,)

    def flush(self) -> Sequence[Message]:
        return ()


class SliceWorker:
    """Engine half: tiles in, slices out (``engine``: ``(B, 1, T, T) -> (B, 1, T, T)``)."""

    def __init__(self, engine: Any, *, tile: int, margin: int) -> None:
        self.engine, self.tile, self.margin = engine, tile, margin

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        from engines.ct.tiles import cut_tiles

        slope, intercept = _rescale(msg)
        hu = msg.payload.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        tiles, plan = cut_tiles(hu, tile=self.tile, margin=self.margin)
        return tiles, (plan, slope, intercept)

    def run(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine(rows))

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        from engines.ct.tiles import stitch_tiles

        tiles_plan: TilePlan
        tiles_plan, slope, intercept = plan
        hu = stitch_tiles(outputs, tiles_plan)
        dtype = msg.payload.dtype
        if dtype.kind == "f":
            stored = hu.astype(dtype)
        else:
            info = np.iinfo(dtype)
            stored = np.clip(np.rint((hu - intercept) / slope), info.min, info.max).astype(dtype)
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
class CtPath:
    """The live CT path as the runtime needs it. ``model``: a key of
    :data:`engines.ct.specs.CT_SPECS`; ``weights``: a file instead of the shipped weights;
    ``tile_px``: the engine's item (``None``: the spec's, a whole 512² slice; smaller tiles cost
    less per call for small slices, larger slices are cut into overlapping tiles)."""

    model: str
    weights: Path | None = None
    tile_px: int | None = None

    name: str = dataclasses.field(default="ct", init=False)
    input_kind: str = dataclasses.field(default=SLICE_KIND, init=False)
    time_series: bool = dataclasses.field(default=False, init=False)
    sticky_streams: bool = dataclasses.field(default=False, init=False)

    def stream_stage(self, stream: str) -> SliceStage:
        return SliceStage(stream)

    def load_worker(self, *, backend: str, max_batch: int, cache_dir: Path | None,
                    threads: int | None) -> SliceWorker:
        import torch

        from engines.ct.specs import CT_SPECS
        from engines.engine import load_engine

        if threads is not None:
            torch.set_num_threads(threads)
        spec = CT_SPECS[self.model]
        if self.weights is not None:
            spec = dataclasses.replace(spec, weights=str(Path(self.weights).resolve()))
        if self.tile_px is not None:
            shape = (1, self.tile_px, self.tile_px)
            spec = dataclasses.replace(spec, input_shape=shape, output_shape=shape)
        engine = load_engine(spec, backend, max_batch=max_batch, cache_dir=cache_dir,
                             threads=threads)
        tile = int(spec.input_shape[-1])
        worker = SliceWorker(engine, tile=tile,
                             margin=min(int(spec.extra.get("tile_margin_px", 0)), tile // 4))
        worker.warm_up(max_batch)
        return worker
