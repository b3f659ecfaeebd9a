"""The task gate of the PET denoisers (:mod:`engines.gates`): mean PSNR against the 10-minute
image on 3 simulated test slices (the standard sphere plane, 2-minute input), served through
the engine's tiles as :func:`engines.pet.denoise.denoise_volume` serves them, within 0.05 dB of
eager."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engines.engine import Engine
from engines.gates import Infer, TaskGate, compare, eager_infer
from engines.pet.metrics import psnr_db
from engines.pet.specs import PET_UNITS, TILE_MARGIN_PX
from engines.slices import denoise_slices
from engines.spec import ModelSpec

__all__ = ["GATE_TOLERANCE_DB", "pet_gate", "task_metric"]

GATE_TOLERANCE_DB = 0.05


def task_metric(infer: Callable[[np.ndarray], np.ndarray], short: np.ndarray, long: np.ndarray,
                *, tile: int, batch: int) -> float:
    """Mean PSNR (dB) of ``infer``'s output on ``short`` ``(n, H, W)`` against ``long``."""
    out = denoise_slices(infer, short, tile=tile, margin=min(TILE_MARGIN_PX, tile // 4),
                         batch=batch, units=PET_UNITS)
    return float(np.mean([psnr_db(o, r) for o, r in zip(out, long, strict=True)]))


def pet_gate(spec: ModelSpec, engine: Engine) -> TaskGate:
    from engines.pet.data import pairs_for

    pairs = pairs_for("test", 3)
    short = np.stack([p.short for p in pairs])
    long = np.stack([p.long for p in pairs])
    tile = int(spec.input_shape[-1])

    def metric(f: Infer) -> float:
        return task_metric(f, short, long, tile=tile, batch=engine.max_batch)

    return compare("PSNR dB", metric, eager_infer(spec), engine, GATE_TOLERANCE_DB)
