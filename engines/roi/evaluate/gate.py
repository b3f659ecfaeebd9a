"""The task gate of the ROI models (:mod:`engines.gates`): peak F1 on 300 simulated test
spectra, within 0.005 of eager."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from devices.spectra_sim import SpectrumSimConfig
from engines.engine import Engine
from engines.gates import Infer, TaskGate, compare, eager_infer
from engines.roi.detector import RoiDetector, RoiDetectorConfig
from engines.roi.evaluate.protocol import simulate_spectra, stream_rng
from engines.roi.evaluate.scoring import run_model, score
from engines.roi.metrics import peak_summary
from engines.roi.specs import detector_config
from engines.spec import ModelSpec

__all__ = ["roi_gate", "task_metric"]


def task_metric(infer: Callable[[np.ndarray], np.ndarray], *, batch: int, n: int = 300,
                seed: int = 0, detector: RoiDetectorConfig | None = None) -> float:
    """Peak F1 of the detector (``detector``, default settings if None) on ``n`` test spectra
    when the model's outputs for its windows ``(B, 1, 512) -> (B, C, 512)`` are computed by
    ``infer`` (batches of at most ``batch``): the task metric an engine must leave unchanged
    (:mod:`engines.gates`)."""
    data = simulate_spectra(n, SpectrumSimConfig(), stream_rng(seed, "test"), "test")

    def module(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(infer(np.ascontiguousarray(x.numpy())))

    run = run_model(module, RoiDetector(detector), data, batch)  # type: ignore[arg-type]
    f1 = peak_summary(score(data, run).peaks)["peak_f1"]
    return float("nan") if f1 is None else float(f1)


def roi_gate(spec: ModelSpec, engine: Engine) -> TaskGate:
    key = spec.name.removeprefix("roi_")

    def metric(f: Infer) -> float:
        return task_metric(f, batch=engine.max_batch, detector=detector_config(key))

    return compare("peak F1", metric, eager_infer(spec), engine, 0.005)
