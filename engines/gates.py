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
``ct_*``               PSNR on 3 held-out phantom slices, dose 0.25     0.05 dB
``pet_*``              PSNR vs 10 min on 3 simulated 2-minute slices    0.05 dB
=====================  ===============================================  =========

Each family's gate lives beside its model (``engines/<family>/gate.py``) and is declared by its
path (:attr:`stream.paths.PathSpec.task_gate`); this module holds what they share. Used by
``sigstream engines build --task-gate``; an engine that fails is refused for that precision. A
run takes from a few seconds (codec) to a minute (ECG, beats are simulated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.engine import Engine
from engines.spec import ModelSpec

__all__ = ["Infer", "TaskGate", "compare", "eager_infer"]

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


def eager_infer(spec: ModelSpec) -> Infer:
    """``spec``'s eager module with its shipped weights, as an array function."""
    import torch

    module = spec.load()

    def infer(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return infer


def compare(metric: str, compute: Callable[[Infer], float], eager: Infer, engine: Engine,
         tolerance: float) -> TaskGate:
    """Run ``compute`` with the eager module and with the engine: the gate of ``metric``."""
    return TaskGate(metric, compute(eager), compute(engine), tolerance)
