"""The TensorRT backend: torch-tensorrt's dynamo path on a CUDA device, fp32 or fp16.

Build (once per cache key): ``torch.export`` the module with a dynamic batch dimension
``Dim("batch", 1, max_batch)``, compile it with ``torch_tensorrt.dynamo.compile`` against one
explicit ``torch_tensorrt.Input(min_shape=(1, ...), opt_shape=(opt_batch, ...),
max_shape=(max_batch, ...))`` profile, and serialise the compiled program with
``torch_tensorrt.save(..., output_format="exported_program")``. A restart loads it with
``torch.export.load(path).module()`` (after ``import torch_tensorrt``, which registers the
TensorRT runtime ops) and does not recompile.

Precision: fp32 disables TF32 (otherwise Ampere+ GPUs would run fp32 layers in TF32 and miss
the 1e-4 gate). fp16 wraps the module so that it computes in half (weights and activations)
while the engine's input and output stay float32; TensorRT is told so with explicit typing
where the installed version supports it, else by enabling fp16 kernels (weak typing).

Run: each engine owns a CUDA stream and pinned host buffers of ``max_batch`` rows; a call
copies the batch into the pinned input buffer, uploads it asynchronously on the engine's stream,
runs the program, downloads into the pinned output buffer, synchronises the stream and returns
a copy. Loading warms up at batch 1, ``opt_batch`` and ``max_batch``.

``torch_tensorrt`` is imported lazily: importing this module needs neither it nor CUDA, and a
missing one raises :class:`~engines.errors.BackendUnavailableError` saying what to install.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from engines.cache import library_versions
from engines.engine import CompiledEngine
from engines.errors import BackendUnavailableError, EngineError

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["DEFAULT_OPT_BATCH", "TensorRTEngine", "require_tensorrt"]

logger = logging.getLogger(__name__)

#: Batch size TensorRT tunes kernels for (clamped to max_batch): the batch the dynamic batcher
#: typically forms under moderate load; other sizes in [1, max_batch] run on the same profile.
DEFAULT_OPT_BATCH = 8
_WARMUP_ROUNDS = 3


def require_tensorrt() -> ModuleType:
    """Import and return ``torch_tensorrt``; raise BackendUnavailableError if it cannot run.

    Checks, in order: torch_tensorrt importable (it also needs the TensorRT libraries), then a
    CUDA device visible to torch.
    """
    try:
        trt = importlib.import_module("torch_tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(
            "the tensorrt backend needs torch-tensorrt built for this torch"
            f" ({torch.__version__}): pip install 'sigstream[gpu]'; use backend='onnxruntime'"
            f" on CPU ({exc})"
        ) from exc
    except OSError as exc:  # TensorRT shared libraries missing or mismatched
        raise BackendUnavailableError(
            f"torch-tensorrt is installed but its TensorRT libraries cannot be loaded: {exc}"
        ) from exc
    if not torch.cuda.is_available():
        cuda = torch.version.cuda or "none (CPU-only torch build)"
        raise BackendUnavailableError(
            "the tensorrt backend needs a CUDA device, but torch.cuda.is_available() is False"
            f" (torch CUDA version: {cuda}); use backend='onnxruntime' on CPU"
        )
    return trt


class _HalfCompute(torch.nn.Module):
    """Runs ``module`` in float16 with float32 input and output (the engine's contract)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


def _compile_settings(trt: ModuleType, precision: str) -> dict[str, Any]:
    """Keyword settings for ``torch_tensorrt.dynamo.compile`` that this version understands."""
    fields: set[str] = set()
    settings_cls = getattr(getattr(trt, "dynamo", None), "CompilationSettings", None)
    if settings_cls is not None and dataclasses.is_dataclass(settings_cls):
        fields = {f.name for f in dataclasses.fields(settings_cls)}
    kwargs: dict[str, Any] = {"min_block_size": 1}
    if "use_explicit_typing" in fields:
        # Strong typing: layer precisions follow the module's dtypes (fp32 or the half wrapper).
        kwargs["use_explicit_typing"] = True
    else:
        kwargs["enabled_precisions"] = (
            {torch.float32} if precision == "fp32" else {torch.float16, torch.float32}
        )
    if precision == "fp32" and (not fields or "disable_tf32" in fields):
        kwargs["disable_tf32"] = True
    return kwargs


class TensorRTEngine(CompiledEngine):
    """A torch-tensorrt compiled program on one CUDA device, with its own stream.

    Construct with :meth:`from_artifact` (a saved ``.ep`` program) or through
    :func:`engines.engine.load_engine`. ``threads`` is accepted for interface symmetry and
    ignored (host work is a memcpy).
    """

    backend: ClassVar[str] = "tensorrt"
    artifact_suffix: ClassVar[str] = ".ep"

    def __init__(
        self,
        spec: ModelSpec,
        program: torch.nn.Module,
        *,
        max_batch: int = 64,
        precision: str = "fp32",
        device: torch.device | None = None,
        opt_batch: int | None = None,
        warmup: bool = True,
    ) -> None:
        require_tensorrt()
        super().__init__(spec, max_batch=max_batch, precision=precision)
        self._device = device or torch.device("cuda", torch.cuda.current_device())
        self._program: torch.nn.Module | None = program
        self._stream: torch.cuda.Stream | None = torch.cuda.Stream(device=self._device)
        rows = self.max_batch
        self._host_in: torch.Tensor | None = torch.empty(
            (rows, *spec.input_shape), dtype=torch.float32
        ).pin_memory()
        self._host_out: torch.Tensor | None = torch.empty(
            (rows, *spec.output_shape), dtype=torch.float32
        ).pin_memory()
        if warmup:
            opt = _opt_batch(max_batch, opt_batch)
            for b in sorted({1, opt, max_batch}):
                for _ in range(_WARMUP_ROUNDS):
                    self._run(np.zeros((b, *spec.input_shape), dtype=np.float32))

    # -- CompiledEngine ------------------------------------------------------------------------

    @classmethod
    def check_available(cls, precision: str = "fp32") -> None:
        require_tensorrt()
        if precision not in ("fp32", "fp16"):
            raise BackendUnavailableError(f"tensorrt supports fp32 and fp16, not {precision}")

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        versions = library_versions("torch", "torch_tensorrt")
        try:
            versions["tensorrt"] = str(importlib.import_module("tensorrt").__version__)
        except (ImportError, OSError, AttributeError):
            versions.update(library_versions("tensorrt"))
        versions["cuda"] = str(torch.version.cuda)
        return versions

    @classmethod
    def device_name(cls) -> str:
        if not torch.cuda.is_available():
            return "no cuda device"
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"

    @classmethod
    def build_options(cls, *, max_batch: int, precision: str) -> dict[str, Any]:
        return {
            "opt_batch": _opt_batch(max_batch, None),
            "ir": "dynamo",
            "format": "exported_program",
        }

    @classmethod
    def build_artifact(
        cls,
        module: torch.nn.Module,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int,
        precision: str = "fp32",
        opt_batch: int | None = None,
    ) -> None:
        """Compile ``module`` for this GPU and save the program to ``path``."""
        trt = require_tensorrt()
        device = torch.device("cuda", torch.cuda.current_device())
        _compile_program(
            trt,
            module,
            spec,
            path,
            device=device,
            max_batch=max_batch,
            precision=precision,
            opt_batch=opt_batch,
        )

    @classmethod
    def from_artifact(
        cls,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int = 64,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> TensorRTEngine:
        """Load a saved program (no recompilation) and warm it up."""
        require_tensorrt()  # registers the TensorRT runtime ops before loading
        try:
            program = torch.export.load(str(path)).module()
        except Exception as exc:
            raise EngineError(f"{spec.name}: cannot load TensorRT program {path}: {exc}") from exc
        return cls(spec, program, max_batch=max_batch, precision=precision)

    # -- Engine --------------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self._program is not None and self._stream is not None
        assert self._host_in is not None and self._host_out is not None
        n = batch.shape[0]
        host_in = self._host_in[:n]
        host_out = self._host_out[:n]
        np.copyto(host_in.numpy(), batch)
        with torch.cuda.stream(self._stream), torch.inference_mode():
            x = host_in.to(self._device, non_blocking=True)
            y = self._program(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            host_out.copy_(y, non_blocking=True)
        self._stream.synchronize()
        # The pinned buffer is reused by the next call: hand the caller its own array.
        return host_out.numpy().copy()

    def _release(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._program = None
        self._stream = None
        self._host_in = None
        self._host_out = None


def _compile_program(
    trt: ModuleType,
    module: torch.nn.Module,
    spec: ModelSpec,
    path: Path,
    *,
    device: torch.device,
    max_batch: int,
    precision: str,
    opt_batch: int | None = None,
) -> None:
    """export -> torch_tensorrt.dynamo.compile -> torch_tensorrt.save, for ``trt`` on ``device``.

    Separate from :meth:`TensorRTEngine.build_artifact` so that everything up to the CUDA work
    can be exercised on CPU with a stand-in ``trt`` module.
    """
    opt = _opt_batch(max_batch, opt_batch)
    item = tuple(spec.input_shape)
    # A copy: the caller keeps the fp32 CPU module as the accuracy gate's reference.
    work = copy.deepcopy(module).eval().to(device)
    if precision == "fp16":
        work = _HalfCompute(work).eval()
    # torch.export specialises size-1 dims, so trace at the opt batch (>= 2 when possible).
    example = torch.randn((max(opt, 2) if max_batch >= 2 else 1, *item), device=device)
    dynamic_shapes = None
    if max_batch >= 2:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    inputs = [
        trt.Input(
            min_shape=(1, *item),
            opt_shape=(opt, *item),
            max_shape=(max_batch, *item),
            dtype=torch.float32,
        )
    ]
    try:
        with torch.no_grad():
            exported = torch.export.export(
                work, (example,), dynamic_shapes=dynamic_shapes, strict=False
            )
            compiled = trt.dynamo.compile(
                exported, arg_inputs=inputs, **_compile_settings(trt, precision)
            )
            _save(trt, compiled, path, example, dynamic_shapes)
    except Exception as exc:  # torch-tensorrt raises many types; keep the native message
        raise EngineError(f"{spec.name}: TensorRT compilation failed: {exc}") from exc


def _opt_batch(max_batch: int, opt_batch: int | None) -> int:
    opt = DEFAULT_OPT_BATCH if opt_batch is None else int(opt_batch)
    return max(1, min(opt, int(max_batch)))


def _save(
    trt: ModuleType,
    compiled: torch.nn.Module,
    path: Path,
    example: torch.Tensor,
    dynamic_shapes: tuple[dict[int, Any], ...] | None,
) -> None:
    """``torch_tensorrt.save`` as an ExportedProgram, keeping the dynamic batch dimension.

    Recent torch-tensorrt takes ``dynamic_shapes`` on save; older releases keep the symbolic
    batch from the compiled graph's metadata when saved without retracing.
    """
    # the same program, path and example input both ways
    save = functools.partial(
        trt.save, compiled, str(path), output_format="exported_program", arg_inputs=[example]
    )
    try:
        save(dynamic_shapes=dynamic_shapes, retrace=True)
    except TypeError as exc:
        if "dynamic_shapes" not in str(exc):
            raise
        save(retrace=False)
