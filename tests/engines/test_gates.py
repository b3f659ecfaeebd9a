"""Task-metric gates: a faithful compiled engine passes, an engine that computes something
else (the same architecture with other weights) is caught by the task metric."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from engines.engine import load_engine
from engines.roi.evaluate.gate import roi_gate
from engines.roi.specs import ROI_SPECS
from engines.spec import ModelSpec


def _spec(name: str) -> ModelSpec:
    spec = ROI_SPECS[name]
    if not spec.weights_path.exists():
        pytest.skip(f"no shipped weights for {spec.name}")
    return spec


def test_compiled_engine_keeps_the_task_metric(tmp_path: Path) -> None:
    spec = _spec("cnn")
    with load_engine(spec, "onnxruntime", max_batch=32, cache_dir=tmp_path) as engine:
        gate = roi_gate(spec, engine)
    assert gate is not None and gate.metric == "peak F1"
    assert gate.passed, str(gate)
    assert 0.5 < gate.eager <= 1.0


def test_an_engine_that_computes_something_else_fails(tmp_path: Path) -> None:
    spec = _spec("cnn")
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(spec.build().state_dict(), other)  # same architecture, untrained weights
    impostor = dataclasses.replace(spec, weights=str(other))
    with load_engine(impostor, "eager", max_batch=32) as engine:
        gate = roi_gate(spec, engine)
    assert gate is not None and not gate.passed
    assert "tolerance" in str(gate)
