"""The engine interface and :func:`load_engine`, which builds, caches and checks engines.

An :class:`Engine` turns a float32 batch ``(B, *spec.input_shape)`` into a float32 batch
``(B, *spec.output_shape)``. Backends (one module each under :mod:`engines.backends`):

``eager``
    torch eager in ``inference_mode``: the reference every other backend is checked against.
``onnxruntime``
    the CPU-compiled backend: the model is exported to ONNX (dynamic batch axis) and run by an
    ONNX Runtime ``InferenceSession`` with all graph optimisations (constant folding,
    Conv+BatchNorm fusion, layout transforms).
``tensorrt``
    torch-tensorrt (dynamo IR, explicit min/opt/max batch profile, fp32 or fp16) on CUDA.

``"auto"`` picks ``tensorrt`` when a CUDA device and torch-tensorrt are both present, else the
CPU-compiled backend, and logs the reason.

Why ONNX Runtime is the CPU-compiled backend (chosen by measurement)
-------------------------------------------------------------------
Measured on this project's machine (AMD EPYC, 1 intra-op thread, idle machine, torch 2.13,
onnxruntime 1.31) with a representative 1-D conv UNet (4 levels, widths 16-128, kernel 9,
BatchNorm, 1.86 M parameters, input ``(B, 1, 512)``); p50 latency:

==========================  ==========  ==========  =======================
backend                     batch 1     batch 64    build
==========================  ==========  ==========  =======================
eager                       3.93 ms     151 ms      -
onnxruntime (dynamo export) 2.40 ms     154 ms      4.2 s export, 5 ms load
onnxruntime (legacy export) 2.48 ms     153 ms      0.5 s export, 10 ms load
inductor (torch.compile)    4.29 ms     138 ms      30 s compile
inductor + freezing         4.01 ms     148 ms      15 s compile
==========================  ==========  ==========  =======================

ONNX Runtime is 1.6x faster than eager at batch 1 (eager pays ~1.5 ms of per-op dispatch
overhead that ORT's fused, pre-packed graph does not) and on par at batch 64, where both are
bound by the same convolution arithmetic. Inductor does not beat eager at batch 1 on CPU (it
keeps the aten/oneDNN convolutions and adds guard overhead), wins ~9 % at batch 64, compiles for
15-30 s per shape in every new process (no portable on-disk artifact without AOTInductor) and
would need a recompile or dynamic shapes per batch size.

The shipped ROI models are smaller (33-173 k parameters, kernel 3), so per-op overhead weighs
more and the gap widens. ``bench/engine_latency.py --with-inductor`` on the ROI UNet (1 thread, busy
machine, backends interleaved): speed-up over eager at batch 1 (p50) / batch-64 throughput
ratio: onnxruntime 3.1x / 1.65x, inductor 1.5x / 0.93x. Across the four ROI models onnxruntime
measured 2.8-3.4x at batch 1 and 1.1-2.1x at batch 64.

ONNX Runtime therefore is the default CPU backend and inductor is not implemented as a backend.

The exporter is torch's dynamo (``torch.export``-based) ONNX exporter: the resulting ORT graph
runs as fast as the legacy TorchScript exporter's (identical within noise) and the legacy one is
deprecated since torch 2.9; the legacy exporter remains as a logged fallback for a model the
dynamo exporter cannot trace.

Accuracy gate
-------------
With ``check=True`` (the default) every non-eager engine is run against eager on fixed seeded
inputs (``N(0, 1)``, seed 0) at batch sizes 1, 3 and ``max_batch``; the largest absolute
difference of the outputs (logits) must not exceed :data:`ACCURACY_TOLERANCE` for the precision
(fp32: 1e-4, fp16: 2e-2) or :class:`~engines.errors.AccuracyGateError` is raised with the
measured error, and a cached artifact that failed is removed. A cached artifact that passed
records the result in its cache entry; loading that entry again (another worker, another run)
reuses it instead of running the gate again — the entry's key covers the weights, shapes,
precision, backend and library versions, and its sha256 is verified on every load, so the same
bytes would give the same answer. (Measured: the gate of a 512² CT model at batch 8 takes 7 s
for the UNet and ~2 min for RED-CNN on 2 cores, once per pool worker or Ray actor before.)

Threads: one engine is called by one thread at a time (a worker). ``threads`` sets the backend's
intra-op thread count (for eager, torch's process-wide count).
"""

from __future__ import annotations

import abc
import functools
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from devices.lifecycle import ClosesOnExit
from engines.cache import EngineCache, cache_key
from engines.errors import AccuracyGateError, EngineError, InputContractError

if TYPE_CHECKING:
    import torch

    from engines.spec import ModelSpec

__all__ = [
    "ACCURACY_TOLERANCE",
    "BACKENDS",
    "DEFAULT_CPU_BACKEND",
    "PRECISIONS",
    "CompiledEngine",
    "Engine",
    "EngineInfo",
    "cache_components",
    "check_accuracy",
    "load_engine",
    "resolve_backend",
]

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("eager", "onnxruntime", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
#: The CPU-compiled backend, chosen by measurement (see the module docstring).
DEFAULT_CPU_BACKEND = "onnxruntime"
#: Largest allowed max-abs difference from eager on the outputs, per precision.
ACCURACY_TOLERANCE: Mapping[str, float] = MappingProxyType({"fp32": 1e-4, "fp16": 2e-2})
_GATE_SEED = 0


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """How an engine came to be: which backend and why, cache use, timings, gate result.

    ``build_s`` is the wall time of :func:`load_engine` before the accuracy gate (a cache hit
    makes it a load time); ``check_s`` the gate's time; ``max_abs_error`` the gate's measured
    error (``None`` for eager or when unchecked).
    """

    backend: str
    reason: str
    precision: str
    max_batch: int
    cache_hit: bool | None = None
    cache_key: str | None = None
    artifact: str | None = None
    build_s: float = 0.0
    check_s: float = 0.0
    max_abs_error: float | None = None
    tolerance: float | None = None


class Engine(abc.ABC, ClosesOnExit):
    """A loaded model that maps float32 batches to float32 batches.

    Call it with ``batch: np.ndarray`` float32 of shape ``(B, *spec.input_shape)``,
    ``1 <= B <= max_batch``, finite values; it returns a new float32 array
    ``(B, *spec.output_shape)`` that the caller owns. A bad batch raises
    :class:`~engines.errors.InputContractError` before the backend sees it.

    ``close()`` releases the backend (safe to call twice); the engine is also a context manager.
    Not thread-safe: call one engine from one thread at a time.
    """

    backend: ClassVar[str] = ""

    def __init__(self, spec: ModelSpec, *, max_batch: int = 64, precision: str = "fp32") -> None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self._spec = spec
        self._max_batch = int(max_batch)
        self._precision = precision
        self._item_shape = tuple(int(d) for d in spec.input_shape)
        self._out_item_shape = tuple(int(d) for d in spec.output_shape)
        self._closed = False
        self._info: EngineInfo | None = None

    # -- properties ----------------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def info(self) -> EngineInfo | None:
        """Set by :func:`load_engine`; ``None`` for an engine constructed directly."""
        return self._info

    # -- calling -------------------------------------------------------------------------------

    def validate(self, batch: Any) -> np.ndarray:
        """Check ``batch`` against the input contract; returns it C-contiguous (no copy if it is).

        Raises :class:`~engines.errors.InputContractError` naming what is wrong.
        """
        name = self._spec.name
        if not isinstance(batch, np.ndarray):
            raise InputContractError(f"{name}: expected a numpy array, got {type(batch).__name__}")
        expected_ndim = 1 + len(self._item_shape)
        if batch.ndim != expected_ndim:
            raise InputContractError(
                f"{name}: expected a {expected_ndim}-D batch (B, *{self._item_shape}),"
                f" got shape {batch.shape}"
            )
        if tuple(batch.shape[1:]) != self._item_shape:
            raise InputContractError(
                f"{name}: item shape {tuple(batch.shape[1:])} != {self._item_shape}"
            )
        if batch.dtype != np.float32:
            raise InputContractError(f"{name}: dtype {batch.dtype} != float32")
        n = batch.shape[0]
        if not 1 <= n <= self._max_batch:
            raise InputContractError(f"{name}: batch size {n} outside [1, {self._max_batch}]")
        if not np.isfinite(batch).all():
            raise InputContractError(f"{name}: batch holds NaN or infinite values")
        return np.ascontiguousarray(batch)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise EngineError(f"{self._spec.name}: {self.backend} engine is closed")
        batch = self.validate(batch)
        out = self._run(batch)
        expected = (batch.shape[0], *self._out_item_shape)
        if out.shape != expected or out.dtype != np.float32:
            raise EngineError(
                f"{self._spec.name}: {self.backend} returned {out.dtype}{out.shape},"
                f" expected float32{expected}"
            )
        return out

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run a validated, C-contiguous float32 batch; return a float32 array the caller owns."""

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the backend's resources. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook, most backends only drop refs
        """Backend-specific release; called once by :meth:`close`."""

    def __enter__(self) -> Engine:
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {self._spec.name} backend={self.backend}"
            f" precision={self._precision} max_batch={self._max_batch} {state}>"
        )


class CompiledEngine(Engine):
    """An engine backed by a compiled artifact that :func:`load_engine` builds and caches.

    Subclasses (onnxruntime, tensorrt) say whether they can run here, what their artifacts
    depend on (library versions, device, options: parts of the cache key), how to build an
    artifact file from an eager module and how to load one.
    """

    artifact_suffix: ClassVar[str] = ""

    @classmethod
    @abc.abstractmethod
    def check_available(cls, precision: str = "fp32") -> None:
        """Raise BackendUnavailableError if the library, device or precision is unsupported."""

    @classmethod
    @abc.abstractmethod
    def library_versions(cls) -> dict[str, str]:
        """Versions of the libraries an artifact depends on."""

    @classmethod
    @abc.abstractmethod
    def device_name(cls) -> str:
        """The device an artifact is built for (CPU model, or GPU name and compute capability)."""

    @classmethod
    @abc.abstractmethod
    def build_options(cls, *, max_batch: int, precision: str) -> dict[str, Any]:
        """Build settings that change the artifact (exporter, opt batch, ...)."""

    @classmethod
    @abc.abstractmethod
    def build_artifact(
        cls,
        module: torch.nn.Module,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int,
        precision: str = "fp32",
    ) -> None:
        """Compile ``module`` and write the complete artifact to ``path``."""

    @classmethod
    @abc.abstractmethod
    def from_artifact(
        cls,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int = 64,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> CompiledEngine:
        """Load an artifact written by :meth:`build_artifact`."""


def resolve_backend(backend: str = "auto") -> tuple[str, str]:
    """``(backend, reason)``: the concrete backend for ``backend`` and why it was chosen."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from auto, {BACKENDS}")
        return backend, "requested explicitly"
    # No CUDA query (torch) without torch_tensorrt: a process that loads a cached CPU engine
    # never imports torch.
    if importlib.util.find_spec("torch_tensorrt") is None:
        missing = "torch_tensorrt not installed"
    else:
        import torch

        if torch.cuda.is_available():
            return "tensorrt", (
                f"CUDA device {torch.cuda.get_device_name()} and torch_tensorrt are available"
            )
        missing = "no CUDA device"
    return DEFAULT_CPU_BACKEND, (
        f"{missing}; {DEFAULT_CPU_BACKEND} is the CPU backend chosen by"
        " measurement (fastest at batch 1, on par with eager at batch 64)"
    )


def _backend_class(name: str) -> type[CompiledEngine]:
    # Imported lazily: each backend pulls a heavy library (onnxruntime, torch_tensorrt).
    if name == "onnxruntime":
        from engines.backends.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine
    if name == "tensorrt":
        from engines.backends.tensorrt import TensorRTEngine

        return TensorRTEngine
    raise ValueError(f"{name!r} is not a compiled backend")


def load_engine(
    spec: ModelSpec,
    backend: str = "auto",
    *,
    max_batch: int = 64,
    cache_dir: str | os.PathLike[str] | EngineCache | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    check: bool = True,
    cache_max_bytes: int = 2 << 30,
) -> Engine:
    """Build (or load from the cache) an engine for ``spec`` on ``backend``.

    ``backend``: ``"auto"``, ``"eager"``, ``"onnxruntime"`` or ``"tensorrt"``.
    ``cache_dir``: directory (or :class:`EngineCache`) for compiled artifacts; ``None`` builds in
    a temporary directory every time. ``threads``: intra-op threads (``None``: library default).
    ``precision``: ``"fp32"`` or ``"fp16"`` (fp16 on tensorrt only).
    ``check``: run the accuracy gate against eager (see the module docstring).

    Raises :class:`~engines.errors.WeightsNotFoundError` (weights missing),
    :class:`~engines.errors.WeightsMismatchError` (weights that do not fit),
    :class:`~engines.errors.BackendUnavailableError` (library or device absent, precision not
    supported by the backend), :class:`~engines.errors.AccuracyGateError`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(max_batch) < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    name, reason = resolve_backend(backend)
    start = time.perf_counter()

    if name == "eager":
        from engines.backends.eager import EagerEngine

        engine: Engine = EagerEngine(
            spec, spec.load(), max_batch=max_batch, threads=threads, precision=precision
        )
        engine._info = EngineInfo(
            backend=name,
            reason=reason,
            precision=precision,
            max_batch=max_batch,
            build_s=time.perf_counter() - start,
        )
        _log_loaded(spec, engine._info)
        return engine

    cls = _backend_class(name)
    cls.check_available(precision)
    # The eager module (and torch) is loaded only to build an artifact or to gate one: a warm
    # start from a cache entry that already passed its gate needs neither.
    @functools.cache
    def eager_module() -> torch.nn.Module:
        if threads is not None:
            # Bounds the gate's eager run too, so that processes starting side by side do not
            # oversubscribe the cores (torch's thread count is process-wide).
            import torch

            torch.set_num_threads(int(threads))
        return spec.load()

    components = cache_components(spec, name, max_batch=max_batch, precision=precision)
    key = cache_key(components)

    def build(path: Path) -> None:
        t0 = time.perf_counter()
        cls.build_artifact(eager_module(), spec, path, max_batch=max_batch, precision=precision)
        logger.debug(
            "engine %s: built %s artifact in %.2f s", spec.name, name, time.perf_counter() - t0
        )

    cache: EngineCache | None
    if cache_dir is None:
        cache = None
    elif isinstance(cache_dir, EngineCache):
        cache = cache_dir
    else:
        cache = EngineCache(cache_dir, max_bytes=cache_max_bytes)

    hit: bool | None = None
    artifact: Path | None = None
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="sigstream-engine-") as tmp:
            path = Path(tmp) / f"{spec.name}{cls.artifact_suffix}"
            build(path)
            engine = cls.from_artifact(
                spec, path, max_batch=max_batch, threads=threads, precision=precision
            )
    else:
        metadata = {
            "model": spec.name,
            "backend": name,
            "precision": precision,
            "input_shape": list(spec.input_shape),
            "output_shape": list(spec.output_shape),
            "max_batch": int(max_batch),
            "versions": components["versions"],
            "device": components["device"],
        }
        artifact, hit = cache.get_or_build(
            key,
            suffix=cls.artifact_suffix,
            components=components,
            build=build,
            metadata=metadata,
        )
        logger.debug(
            "engine %s: %s cache entry %s", spec.name, "loaded" if hit else "wrote", artifact
        )
        engine = cls.from_artifact(
            spec, artifact, max_batch=max_batch, threads=threads, precision=precision
        )
    build_s = time.perf_counter() - start

    error: float | None = None
    check_s = 0.0
    recorded = cache.recorded_gate(key) if check and cache is not None and hit else None
    if recorded is not None and recorded.get("tolerance") == ACCURACY_TOLERANCE[precision]:
        error = float(recorded["max_abs_error"])
    elif check:
        t0 = time.perf_counter()
        try:
            error = check_accuracy(engine, eager_module(), precision=precision)
        except AccuracyGateError:
            engine.close()
            if cache is not None:
                cache.remove(key)
            raise
        check_s = time.perf_counter() - t0
        if cache is not None:
            cache.record_gate(key, {"max_abs_error": error,
                                    "tolerance": ACCURACY_TOLERANCE[precision]})
    engine._info = EngineInfo(
        backend=name,
        reason=reason,
        precision=precision,
        max_batch=max_batch,
        cache_hit=hit,
        cache_key=key,
        artifact=str(artifact) if artifact else None,
        build_s=build_s,
        check_s=check_s,
        max_abs_error=error,
        tolerance=ACCURACY_TOLERANCE[precision] if check else None,
    )
    _log_loaded(spec, engine._info)
    return engine


def _log_loaded(spec: ModelSpec, info: EngineInfo) -> None:
    """One line per engine a process loads: which backend and why, the cache, the gate."""
    how = ("loaded" if info.backend == "eager"
           else "built (no cache)" if info.cache_hit is None
           else "loaded from the cache" if info.cache_hit else "built and cached")
    line = (f"engine {spec.name}: backend {info.backend} ({info.reason}), {info.precision}, "
            f"max_batch {info.max_batch}: {how} in {info.build_s:.2f} s")
    if info.max_abs_error is not None:
        gate = (f"checked now in {info.check_s:.2f} s" if info.check_s
                else "checked when the entry was built")
        line += (f"; agrees with eager (max abs error {info.max_abs_error:.3g}, tolerance "
                 f"{info.tolerance:.3g}, {gate})")
    logger.info("%s", line)


def cache_components(
    spec: ModelSpec, backend: str, *, max_batch: int = 64, precision: str = "fp32"
) -> dict[str, Any]:
    """What a compiled artifact of ``spec`` depends on; its :func:`~engines.cache.cache_key`
    names the cache entry. ``backend`` is a compiled backend (``onnxruntime``, ``tensorrt``).

    Reads the weights file (sha256); raises WeightsNotFoundError if it is missing.
    """
    cls = _backend_class(backend)
    return {
        "model": spec.name,
        "weights_sha256": spec.weights_sha256(),
        "input_shape": list(spec.input_shape),
        "output_shape": list(spec.output_shape),
        "max_batch": int(max_batch),
        "precision": precision,
        "backend": backend,
        "versions": cls.library_versions(),
        "device": cls.device_name(),
        "options": cls.build_options(max_batch=max_batch, precision=precision),
    }


def check_accuracy(
    engine: Engine,
    reference: torch.nn.Module,
    *,
    precision: str | None = None,
    tolerance: float | None = None,
    batch_sizes: Sequence[int] | None = None,
    seed: int = _GATE_SEED,
) -> float:
    """Compare ``engine`` with the eager ``reference`` module on seeded ``N(0, 1)`` inputs.

    Batch sizes default to 1, 3 and ``engine.max_batch`` (those within the engine's range).
    Returns the largest absolute difference; raises :class:`~engines.errors.AccuracyGateError`
    if it exceeds ``tolerance`` (default :data:`ACCURACY_TOLERANCE` of the precision) or if the
    engine's output is not finite.
    """
    import torch

    precision = precision or engine.precision
    limit = ACCURACY_TOLERANCE[precision] if tolerance is None else float(tolerance)
    sizes = sorted(
        {b for b in (batch_sizes or (1, 3, engine.max_batch)) if 1 <= b <= engine.max_batch}
    )
    rng = np.random.default_rng(seed)
    worst = 0.0
    reference = reference.eval()
    for b in sizes:
        x = rng.standard_normal((b, *engine.spec.input_shape)).astype(np.float32)
        with torch.inference_mode():
            expected = reference(torch.from_numpy(x)).float().cpu().numpy()
        got = engine(x)
        if not np.isfinite(got).all():
            raise AccuracyGateError(
                f"{engine.spec.name}: {engine.backend} ({precision}) produced non-finite outputs"
                f" at batch {b}"
            )
        err = float(np.max(np.abs(got - expected)))
        worst = max(worst, err)
        if err > limit:
            raise AccuracyGateError(
                f"{engine.spec.name}: {engine.backend} ({precision}) differs from eager by"
                f" max abs {err:.3g} at batch {b} (tolerance {limit:.3g})"
            )
    return worst
