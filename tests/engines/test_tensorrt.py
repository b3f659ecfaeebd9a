"""Tests of the TensorRT backend: CPU-side behaviour (availability errors, auto choice, compile
settings, export with a dynamic batch up to the CUDA work) and, behind ``gpu``, a real build."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_net import LENGTH, TinyNet, tiny_spec

import engines.backends.tensorrt as trt_backend
from engines.engine import ACCURACY_TOLERANCE, load_engine, resolve_backend
from engines.errors import BackendUnavailableError
from engines.spec import ModelSpec


@pytest.fixture()
def spec(tmp_path: Path) -> ModelSpec:
    torch.manual_seed(0)
    return tiny_spec(TinyNet(), tmp_path / "tiny.pt")


def has_gpu_stack() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("torch_tensorrt") is not None


def fake_trt(fields: tuple[str, ...] = ("use_explicit_typing",)) -> types.ModuleType:
    """A stand-in torch_tensorrt that records its calls; compile returns the ExportedProgram."""
    module = types.ModuleType("torch_tensorrt")
    calls: dict[str, Any] = {}

    class Input:
        def __init__(self, **kwargs: Any) -> None:
            calls["input"] = kwargs

    def compile_(exported: Any, *, arg_inputs: list[Any], **settings: Any) -> Any:
        calls["compile"] = {"exported": exported, "inputs": arg_inputs, "settings": settings}
        return exported

    def save(program: Any, path: str, **kwargs: Any) -> None:
        calls["save"] = kwargs
        torch.export.save(program, path)

    settings_cls = dataclasses.make_dataclass(
        "CompilationSettings", [(f, bool, False) for f in (*fields, "min_block_size")]
    )
    module.Input = Input  # type: ignore[attr-defined]
    module.save = save  # type: ignore[attr-defined]
    module.dynamo = types.SimpleNamespace(  # type: ignore[attr-defined]
        compile=compile_, CompilationSettings=settings_cls
    )
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_missing_torch_tensorrt_is_backend_unavailable(monkeypatch, spec) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # import raises ImportError
    with pytest.raises(BackendUnavailableError, match="torch-tensorrt"):
        trt_backend.require_tensorrt()
    with pytest.raises(BackendUnavailableError, match="torch-tensorrt"):
        load_engine(spec, "tensorrt")


def test_missing_cuda_is_backend_unavailable(monkeypatch, spec) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake_trt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="CUDA device"):
        trt_backend.require_tensorrt()
    with pytest.raises(BackendUnavailableError, match="CUDA device"):
        load_engine(spec, "tensorrt", precision="fp16")


@pytest.mark.skipif(has_gpu_stack(), reason="CUDA and torch_tensorrt are present")
def test_tensorrt_is_unavailable_here(spec) -> None:
    with pytest.raises(BackendUnavailableError):
        load_engine(spec, "tensorrt")
    with pytest.raises(BackendUnavailableError):
        trt_backend.TensorRTEngine(spec, TinyNet())


def test_auto_picks_tensorrt_when_cuda_and_torch_tensorrt_are_present(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "torch_tensorrt" else real_find_spec(name, *a),
    )
    name, reason = resolve_backend("auto")
    assert name == "tensorrt" and "Fake GPU" in reason


def test_auto_without_torch_tensorrt_says_so(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch_tensorrt" else 1
    )
    name, reason = resolve_backend("auto")
    assert name == "onnxruntime" and "torch_tensorrt not installed" in reason
    assert "no CUDA" not in reason


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_compile_settings_with_explicit_typing(precision: str) -> None:
    settings = trt_backend._compile_settings(
        fake_trt(("use_explicit_typing", "disable_tf32")), precision
    )
    assert settings["use_explicit_typing"] is True and "enabled_precisions" not in settings
    assert settings["min_block_size"] == 1
    # fp32 must not silently run in TF32, which would miss the 1e-4 gate.
    assert settings.get("disable_tf32") is (True if precision == "fp32" else None)


def test_compile_settings_with_weak_typing() -> None:
    old = fake_trt(("enabled_precisions", "disable_tf32"))
    assert trt_backend._compile_settings(old, "fp32")["enabled_precisions"] == {torch.float32}
    fp16 = trt_backend._compile_settings(old, "fp16")["enabled_precisions"]
    assert fp16 == {torch.float16, torch.float32}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_compile_program_exports_a_dynamic_batch_up_to_cuda(
    precision: str, spec: ModelSpec, tmp_path: Path
) -> None:
    trt = fake_trt()
    module = spec.load()
    path = tmp_path / "tiny.ep"
    trt_backend._compile_program(
        trt,
        module,
        spec,
        path,
        device=torch.device("cpu"),
        max_batch=16,
        precision=precision,
    )
    calls = trt.calls  # type: ignore[attr-defined]
    assert calls["input"] == {
        "min_shape": (1, 1, LENGTH),
        "opt_shape": (8, 1, LENGTH),
        "max_shape": (16, 1, LENGTH),
        "dtype": torch.float32,
    }
    assert calls["save"]["output_format"] == "exported_program"
    assert calls["save"]["dynamic_shapes"] is not None
    # The caller's reference module stays fp32 (the fp16 build works on a copy).
    assert next(module.parameters()).dtype == torch.float32
    program = torch.export.load(str(path)).module()
    reference = spec.load()
    tol = ACCURACY_TOLERANCE[precision]
    for n in (1, 5, 16):  # one program serves every batch size in [1, max_batch]
        x = torch.rand(n, 1, LENGTH)
        with torch.no_grad():
            got, want = program(x), reference(x)
        assert got.dtype == torch.float32 and got.shape == (n, 1, LENGTH)
        assert float((got - want).abs().max()) <= tol


def test_opt_batch_is_clamped() -> None:
    assert trt_backend._opt_batch(64, None) == trt_backend.DEFAULT_OPT_BATCH
    assert trt_backend._opt_batch(4, None) == 4
    assert trt_backend._opt_batch(4, 0) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu_stack(), reason="needs a CUDA device and torch_tensorrt")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_checks_and_reloads_without_recompiling(
    precision: str, spec: ModelSpec, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with load_engine(spec, "tensorrt", precision=precision, max_batch=16, cache_dir=cache) as e:
        assert e.backend == "tensorrt" and e.info is not None
        assert e.info.cache_hit is False
        assert e.info.max_abs_error is not None
        assert e.info.max_abs_error <= ACCURACY_TOLERANCE[precision]
        first_build_s = e.info.build_s
        x = np.random.default_rng(0).uniform(0, 1, (16, 1, LENGTH)).astype(np.float32)
        out = e(x)
    with load_engine(spec, "tensorrt", precision=precision, max_batch=16, cache_dir=cache) as e:
        assert e.info is not None and e.info.cache_hit is True
        assert e.info.build_s < first_build_s
        np.testing.assert_allclose(e(x), out, atol=ACCURACY_TOLERANCE[precision])
        for n in (1, 7, 16):
            assert e(x[:n]).shape == (n, 1, LENGTH)
