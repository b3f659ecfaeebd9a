"""Task-metric gates: a compiled engine must leave its task's metric where eager puts it.

The accuracy gate of :func:`engines.engine.load_engine` bounds the largest output difference
on random inputs. This gate asks the question a user cares about: does the path still work as
well? Each model family has one metric, computed with the eager module and with the engine on
the same data, and the engine passes when the two differ by at most the family's tolerance:

=====================  ===============================================  =========
model                  metric (same data for both)                      tolerance
=====================  ===============================================  =========
``roi_*``              peak F1 on 300 simulated test spectra            0.005
``ecg_embedding``      single-beat EER on the cohort's session 1        0.002
``ecg_cnn``            closed-set accuracy on the cohort's session 1    0.002
``codec_*_encoder``    mean PESQ-WB on the real speech (engine encodes) 0.05
``codec_*_decoder``    mean PESQ-WB on the real speech (engine decodes) 0.05
=====================  ===============================================  =========

Used by ``sigstream engines build --task-gate``; an engine that fails is refused for that
precision. A run takes from a few seconds (codec) to a minute (ECG, beats are simulated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.engine import Engine
from engines.spec import ModelSpec

__all__ = ["TaskGate", "task_gate"]

Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TaskGate:
    metric: str
    eager: float
    engine: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return math.isfinite(self.engine) and abs(self.engine - self.eager) <= self.tolerance

    def __str__(self) -> str:
        return (f"{self.metric} {self.engine:.4f} vs eager {self.eager:.4f} "
                f"(|diff| {abs(self.engine - self.eager):.4f}, tolerance {self.tolerance})")


def _eager(spec: ModelSpec) -> Infer:
    import torch

    module = spec.load()

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return infer


def task_gate(spec: ModelSpec, engine: Engine) -> TaskGate | None:
    """The gate of ``spec``'s family for ``engine``; ``None`` for a model without one."""
    name = spec.name
    eager = _eager(spec)
    if name.startswith("roi_"):
        from engines.roi.evaluate import task_metric as roi_metric

        def metric(f: Infer) -> float:
            return roi_metric(f, batch=engine.max_batch)

        return _run("peak F1", metric, eager, engine, 0.005)
    if name in ("ecg_embedding", "ecg_cnn"):
        from engines.ecg.evaluate import task_metric as ecg_metric

        model = name.removeprefix("ecg_")

        def ecg(f: Infer) -> float:
            return ecg_metric(model, f, batch=engine.max_batch)

        return _run("EER" if model == "embedding" else "accuracy", ecg, eager, engine, 0.002)
    if name.startswith("codec_"):
        from engines.codec.evaluate import task_metric as codec_metric
        from engines.codec.specs import CODECS

        key = next(k for k, c in CODECS.items() if name in (c.encoder.name, c.decoder.name))
        other = _eager(CODECS[key].decoder if name.endswith("_encoder") else CODECS[key].encoder)

        def codec(f: Infer) -> float:
            enc, dec = (f, other) if name.endswith("_encoder") else (other, f)
            return codec_metric(enc, dec, key=key)

        return _run("PESQ-WB", codec, eager, engine, 0.05)
    return None


def _run(metric: str, compute: Callable[[Infer], float], eager: Infer, engine: Engine,
         tolerance: float) -> TaskGate:
    return TaskGate(metric, compute(eager), compute(engine), tolerance)
