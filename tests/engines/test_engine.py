"""Tests of the Engine interface and load_engine: eager vs onnxruntime, input contract, auto
backend choice, accuracy gate, lifecycle. Small throwaway models with weights in tmp dirs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_net import LENGTH, TinyNet, tiny_spec

import engines.engine as engine_module
import engines.errors as errors
from engines.backends.eager import EagerEngine
from engines.backends.onnxruntime import OnnxRuntimeEngine
from engines.cache import cache_key
from engines.engine import (
    ACCURACY_TOLERANCE,
    DEFAULT_CPU_BACKEND,
    Engine,
    cache_components,
    check_accuracy,
    load_engine,
    resolve_backend,
)
from engines.spec import ModelSpec

MAX_BATCH = 8


def make_spec(root: Path, seed: int = 0) -> ModelSpec:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # non-trivial running statistics, so BN folding is exercised
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return tiny_spec(net, root / f"tiny_{seed}.pt")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, Path, Engine]:
    """One onnxruntime build for the whole module (an ONNX export takes seconds)."""
    root = tmp_path_factory.mktemp("tiny")
    spec = make_spec(root)
    cache = root / "cache"
    engine = load_engine(spec, "onnxruntime", max_batch=MAX_BATCH, cache_dir=cache, threads=1)
    yield spec, cache, engine
    engine.close()


@pytest.fixture()
def eager(built: tuple[ModelSpec, Path, Engine]) -> Engine:
    spec = built[0]
    return EagerEngine.from_spec(spec, max_batch=MAX_BATCH)


def batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, LENGTH)).astype(np.float32)


def test_onnxruntime_agrees_with_eager(built, eager) -> None:
    _, _, ort_engine = built
    assert isinstance(ort_engine, OnnxRuntimeEngine) and ort_engine.backend == "onnxruntime"
    for n in (1, 5, MAX_BATCH):
        x = batch(n, seed=n)
        got, want = ort_engine(x), eager(x)
        assert got.shape == want.shape == (n, 1, LENGTH) and got.dtype == np.float32
        assert np.max(np.abs(got - want)) <= ACCURACY_TOLERANCE["fp32"]
    info = ort_engine.info
    assert info is not None and info.cache_hit is False
    assert info.max_abs_error is not None and info.max_abs_error <= 1e-4
    assert info.tolerance == ACCURACY_TOLERANCE["fp32"]


def test_second_load_is_a_cache_hit_that_reuses_the_gate(built) -> None:
    spec, cache, first = built
    with load_engine(spec, "onnxruntime", max_batch=MAX_BATCH, cache_dir=cache) as second:
        assert second.info is not None and second.info.cache_hit is True
        assert second.info.cache_key == first.info.cache_key
        # The gate ran when the entry was built; its result is in the entry, not run again.
        assert second.info.check_s == 0.0
        assert second.info.max_abs_error == first.info.max_abs_error
        x = batch(3)
        np.testing.assert_array_equal(second(x), first(x))


_LOAD_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from engines.engine import load_engine
from engines.spec import ModelSpec, deferred_build
weights, cache = Path(sys.argv[1]), sys.argv[2]
spec = ModelSpec(name="tiny", build=deferred_build("tiny_net:TinyNet"), input_shape=(1, 64),
                 output_shape=(1, 64), weights=weights.name, weights_dir=weights.parent)
engine = load_engine(spec, "auto", max_batch=8, cache_dir=cache, threads=1)
import numpy as np
out = engine(np.zeros((2, 1, 64), np.float32))
print(json.dumps({"torch": "torch" in sys.modules, "hit": engine.info.cache_hit,
                  "gate_s": engine.info.check_s, "shape": list(out.shape)}))
"""


@pytest.mark.parametrize("start", ["warm", "cold"])
def test_a_warm_start_imports_no_torch(built, start: str, tmp_path: Path) -> None:
    # A cache entry that passed its gate is all a worker needs; a cold start builds the
    # artifact and gates it against the eager module, so it must load torch.
    spec, cache, _ = built
    cache_dir = cache if start == "warm" else tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, str(spec.weights_path), str(cache_dir)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["shape"] == [2, 1, LENGTH]
    if start == "warm":
        assert report == {"torch": False, "hit": True, "gate_s": 0.0, "shape": [2, 1, LENGTH]}
    else:
        assert report["torch"] is True and report["hit"] is False and report["gate_s"] > 0


def test_cache_key_follows_weights_batch_and_backend(built, tmp_path: Path) -> None:
    spec, _, first = built
    key = cache_key(cache_components(spec, "onnxruntime", max_batch=MAX_BATCH))
    assert key == first.info.cache_key
    other = make_spec(tmp_path, seed=1)
    assert other.weights_sha256() != spec.weights_sha256()
    assert cache_key(cache_components(other, "onnxruntime", max_batch=MAX_BATCH)) != key
    assert cache_key(cache_components(spec, "onnxruntime", max_batch=MAX_BATCH * 2)) != key
    assert cache_key(cache_components(spec, "tensorrt", max_batch=MAX_BATCH)) != key


BAD_INPUTS = {
    "list": [[0.0] * LENGTH],
    "2-D": np.zeros((1, LENGTH), np.float32),
    "item shape": np.zeros((1, 1, LENGTH + 1), np.float32),
    "float64": np.zeros((1, 1, LENGTH), np.float64),
    "empty batch": np.zeros((0, 1, LENGTH), np.float32),
    "too large batch": np.zeros((MAX_BATCH + 1, 1, LENGTH), np.float32),
    "NaN": np.full((1, 1, LENGTH), np.nan, np.float32),
    "inf": np.full((2, 1, LENGTH), np.inf, np.float32),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("which", ["eager", "onnxruntime"])
def test_input_contract_errors(case: str, which: str, built, eager) -> None:
    engine = eager if which == "eager" else built[2]
    with pytest.raises(errors.InputContractError):
        engine(BAD_INPUTS[case])
    assert issubclass(errors.InputContractError, ValueError)


def test_non_contiguous_and_read_only_inputs_are_accepted(built, eager) -> None:
    x = np.ascontiguousarray(batch(4)[:, :, ::-1])
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    assert not strided.flags.c_contiguous
    read_only = x.copy()
    read_only.flags.writeable = False
    for engine in (eager, built[2]):
        np.testing.assert_allclose(engine(strided), engine(x), atol=1e-6)
        np.testing.assert_allclose(engine(read_only), engine(x), atol=1e-6)


def test_auto_picks_the_cpu_backend_here_and_says_why(built, caplog) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: auto may pick tensorrt")
    name, reason = resolve_backend("auto")
    assert name == DEFAULT_CPU_BACKEND == "onnxruntime"
    assert "torch_tensorrt not installed" in reason and "measurement" in reason
    spec, cache, _ = built
    with caplog.at_level(logging.INFO, logger="engines.engine"):
        engine = load_engine(spec, max_batch=MAX_BATCH, cache_dir=cache, check=False)
    with engine:
        assert engine.backend == "onnxruntime"
        assert engine.info is not None and engine.info.reason == reason
    assert any("backend onnxruntime" in r.message and "torch_tensorrt not installed" in r.message
               for r in caplog.records)


def test_explicit_backend_and_bad_names() -> None:
    assert resolve_backend("eager") == ("eager", "requested explicitly")
    with pytest.raises(ValueError):
        resolve_backend("openvino")


def test_close_twice_context_manager_and_use_after_close(built) -> None:
    spec, cache, _ = built
    engine = load_engine(spec, "onnxruntime", max_batch=MAX_BATCH, cache_dir=cache, check=False)
    with engine as same:
        assert same is engine and not engine.closed
    assert engine.closed
    engine.close()  # safe twice
    with pytest.raises(errors.EngineError):
        engine(batch(1))
    eager = EagerEngine.from_spec(spec)
    eager.close()
    eager.close()
    assert "closed" in repr(eager)


def test_accuracy_gate_reports_the_measured_error(eager) -> None:
    spec = eager.spec
    other = spec.load()
    with torch.no_grad():
        other.head.bias += 0.01  # a model that differs from the engine by ~0.01 everywhere
    with pytest.raises(errors.AccuracyGateError, match=r"max abs 0\.01"):
        check_accuracy(eager, other)
    assert check_accuracy(eager, spec.load()) == 0.0


def test_gate_failure_removes_the_cache_entry(built, tmp_path: Path, monkeypatch) -> None:
    spec, cache, _ = built
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    monkeypatch.setattr(engine_module, "ACCURACY_TOLERANCE", {"fp32": -1.0, "fp16": -1.0})
    with pytest.raises(errors.AccuracyGateError, match="differs from eager"):
        load_engine(spec, "onnxruntime", max_batch=MAX_BATCH, cache_dir=copy)
    assert not list(copy.glob("*.onnx")), "an artifact that failed the gate is not kept"


def test_fp16_needs_tensorrt(built) -> None:
    spec = built[0]
    for backend in ("eager", "onnxruntime"):
        with pytest.raises(errors.BackendUnavailableError, match="fp16"):
            load_engine(spec, backend, precision="fp16")
    with pytest.raises(ValueError):
        load_engine(spec, "eager", precision="int4")


def test_missing_weights_are_not_weights_that_do_not_fit(tmp_path: Path) -> None:
    def spec(weights: Path) -> ModelSpec:
        return ModelSpec(name="ghost", build=TinyNet, input_shape=(1, LENGTH),
                         output_shape=(1, LENGTH), weights=weights.name,
                         weights_dir=weights.parent)

    for backend in ("eager", "onnxruntime"):
        with pytest.raises(errors.WeightsNotFoundError) as missing:
            load_engine(spec(tmp_path / "missing.pt"), backend)
        assert isinstance(missing.value, FileNotFoundError)
    other = tmp_path / "other.pt"  # another model's weights: a file that exists, wrong tensors
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for weights in (other, garbage):
        with pytest.raises(errors.WeightsMismatchError) as mismatch:
            load_engine(spec(weights), "eager")
        assert isinstance(mismatch.value, ValueError)
        assert not isinstance(mismatch.value, FileNotFoundError)
        assert isinstance(mismatch.value, errors.WeightsError)  # one clause catches both


def test_engine_checks_the_backend_output_shape(built) -> None:
    spec = built[0]
    wrong = dataclasses.replace(spec, output_shape=(2, LENGTH))
    engine = EagerEngine(wrong, spec.load())
    with pytest.raises(errors.EngineError, match="expected float32"):
        engine(batch(1))


def test_export_falls_back_to_the_legacy_exporter(built, eager, monkeypatch, tmp_path) -> None:
    import engines.backends.onnxruntime as ort_backend

    original = ort_backend._export

    def dynamo_fails(module, example, path, *, exporter, max_batch):
        if exporter == "dynamo":
            raise RuntimeError("cannot trace this model")
        return original(module, example, path, exporter=exporter, max_batch=max_batch)

    monkeypatch.setattr(ort_backend, "_export", dynamo_fails)
    spec = built[0]
    path = tmp_path / "legacy.onnx"
    used = ort_backend.export_onnx(spec.load(), spec.input_shape, path, max_batch=MAX_BATCH)
    assert used == "legacy"
    with OnnxRuntimeEngine(spec, path.read_bytes(), max_batch=MAX_BATCH, threads=1) as engine:
        x = batch(3)
        assert np.max(np.abs(engine(x) - eager(x))) <= ACCURACY_TOLERANCE["fp32"]
    with pytest.raises(errors.EngineError, match="ONNX export failed"):
        ort_backend.export_onnx(spec.load(), spec.input_shape, path, fallback=False)


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_the_exporters_chatter_only_in_debug_logs(built, level: int, tmp_path: Path,
                                                  caplog) -> None:
    import engines.backends.onnxruntime as ort_backend

    spec = built[0]
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        with caplog.at_level(level):
            ort_backend.export_onnx(spec.load(), spec.input_shape, tmp_path / "m.onnx",
                                    max_batch=MAX_BATCH)
    finally:
        root.setLevel(before)
    chatter = [r for r in caplog.records if r.name.startswith(ort_backend._EXPORTER_LOGGERS)]
    assert bool(chatter) is (level == logging.DEBUG), [r.getMessage() for r in chatter[:5]]
