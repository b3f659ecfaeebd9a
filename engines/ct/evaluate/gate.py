"""The task gate of the CT denoisers (:mod:`engines.gates`): mean PSNR on 3 held-out phantom
slices at dose 0.25 (512², soft-tissue window, inside the body), slices served through the
engine's tiles as :func:`engines.ct.denoise.denoise_volume` serves them, within 0.05 dB of
eager."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engines.ct.evaluate.protocol import TARGET_DOSE, EvalSizes
from engines.ct.evaluate.sets import EvalSlice, phantom_set
from engines.ct.metrics import psnr_db
from engines.ct.specs import CT_UNITS, TILE_MARGIN_PX
from engines.engine import Engine
from engines.gates import Infer, TaskGate, compare, eager_infer
from engines.slices import denoise_slices
from engines.spec import ModelSpec

__all__ = ["GATE_TOLERANCE_DB", "ct_gate", "gate_slices", "task_metric"]

GATE_TOLERANCE_DB = 0.05


def gate_slices(n: int = 3, size_px: int = 512) -> list[EvalSlice]:
    """The gate's data: the first ``n`` test phantoms at ``size_px``², dose 0.25."""
    return phantom_set("test", EvalSizes(size_px=size_px, n_test=n), doses=(TARGET_DOSE,))


def task_metric(infer: Callable[[np.ndarray], np.ndarray], slices: list[EvalSlice], *,
                tile: int, batch: int, margin: int = TILE_MARGIN_PX) -> float:
    """Mean PSNR (dB) of ``infer``'s output on ``slices`` at dose 0.25, tiles of ``tile``²."""
    stack = np.stack([ev.low[TARGET_DOSE] for ev in slices])
    out = denoise_slices(infer, stack, tile=tile, margin=min(margin, tile // 4), batch=batch,
                         units=CT_UNITS)
    return float(np.mean([psnr_db(o, ev.reference, mask=ev.body)
                          for o, ev in zip(out, slices, strict=True)]))


def ct_gate(spec: ModelSpec, engine: Engine) -> TaskGate:
    slices = gate_slices()
    tile = int(spec.input_shape[-1])

    def metric(f: Infer) -> float:
        return task_metric(f, slices, tile=tile, batch=engine.max_batch)

    return compare("PSNR dB", metric, eager_infer(spec), engine, GATE_TOLERANCE_DB)
