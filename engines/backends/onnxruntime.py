"""The ONNX Runtime backend: the default CPU-compiled backend (see :mod:`engines.engine`).

Build: the module is exported to a single self-contained ONNX file (weights inline) with a
dynamic batch axis, by torch's dynamo exporter, falling back to the legacy TorchScript exporter
(logged) when the model cannot be traced by ``torch.export``.

Run: one ``InferenceSession`` per engine on the CPU execution provider with
``ORT_ENABLE_ALL`` graph optimisations (constant folding, Conv+BatchNorm+activation fusion,
NCHWc layout), sequential execution, ``intra_op_num_threads`` from ``threads`` (``None``: ORT's
default, one per physical core) and one inter-op thread. Batches are fed as the caller's numpy
array (C-contiguous float32, no copy); ORT allocates the output, which the caller owns.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engines.cache import cpu_name, library_versions
from engines.engine import CompiledEngine
from engines.errors import BackendUnavailableError, EngineError

if TYPE_CHECKING:
    import torch

    from engines.spec import ModelSpec

__all__ = ["EXPORTERS", "OnnxRuntimeEngine", "export_onnx"]

logger = logging.getLogger(__name__)

#: ONNX exporters in order of preference: torch.export-based, then legacy TorchScript-based.
EXPORTERS: tuple[str, ...] = ("dynamo", "legacy")
_INPUT_NAME = "x"
_OUTPUT_NAME = "y"
_LEGACY_OPSET = 17


def export_onnx(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    *,
    max_batch: int = 64,
    exporter: str = "dynamo",
    fallback: bool = True,
) -> str:
    """Export ``module`` (eval mode, float32) to one ONNX file at ``path``; dynamic batch axis.

    ``input_shape`` is one item's shape (without batch). Input is named ``x``, output ``y``.
    Returns the exporter that produced the file (``"dynamo"`` or ``"legacy"``). With
    ``fallback``, a dynamo export failure is logged and the legacy exporter is tried.
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    module = module.eval()
    # The example batch must not be 1: torch.export specialises size-1 dimensions.
    example = torch.zeros((2 if max_batch >= 2 else 1, *input_shape), dtype=torch.float32)
    order = [exporter] + ([e for e in EXPORTERS if e != exporter] if fallback else [])
    errors = []
    for name in order:
        try:
            _export(module, example, Path(path), exporter=name, max_batch=max_batch)
            onnx.checker.check_model(str(path))
        except Exception as exc:  # exporters raise many types; the last failure is re-raised
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            logger.warning("ONNX export with the %s exporter failed: %s", name, exc)
            continue
        if errors:
            logger.warning("ONNX export fell back to the %s exporter", name)
        return name
    raise EngineError("ONNX export failed: " + " | ".join(errors))


# The exporters log each optimisation pass at INFO and warn that torchvision's ops cannot be
# registered (no model here uses them): nothing a user can act on, shown only with debug logging.
_EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(
    module: torch.nn.Module, example: torch.Tensor, path: Path, *, exporter: str, max_batch: int
) -> None:
    import torch

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
            _quiet_exporters():
        # torch-internal deprecation noise from the exporters, not actionable here.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if exporter == "dynamo":
            dynamic = None
            if example.shape[0] > 1:
                batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
                dynamic = ({0: batch},)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=[_INPUT_NAME],
                output_names=[_OUTPUT_NAME],
                dynamic_shapes=dynamic,
                optimize=True,
                verbose=False,
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=[_INPUT_NAME],
                output_names=[_OUTPUT_NAME],
                dynamic_axes={_INPUT_NAME: {0: "batch"}, _OUTPUT_NAME: {0: "batch"}},
                opset_version=_LEGACY_OPSET,
                do_constant_folding=True,
            )


class OnnxRuntimeEngine(CompiledEngine):
    """An ONNX model run by an ONNX Runtime CPU ``InferenceSession``, float32.

    ``model`` is a path to an ``.onnx`` file or its bytes; the session reads it whole, so the
    file may be removed afterwards.
    """

    backend: ClassVar[str] = "onnxruntime"
    artifact_suffix: ClassVar[str] = ".onnx"

    def __init__(
        self,
        spec: ModelSpec,
        model: str | Path | bytes,
        *,
        max_batch: int = 64,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self.check_available(precision)
        super().__init__(spec, max_batch=max_batch, precision=precision)
        import onnxruntime as ort

        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(threads or 0)
        options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self._session: Any = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"{spec.name}: ONNX Runtime cannot load the model: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EngineError(
                f"{spec.name}: ONNX model has {len(inputs)} inputs, {len(outputs)} outputs;"
                " expected one input and one output"
            )
        declared = tuple(inputs[0].shape[1:])
        if declared != tuple(spec.input_shape):
            raise EngineError(
                f"{spec.name}: ONNX model item shape {declared} != spec {tuple(spec.input_shape)}"
            )
        self._input_name: str = inputs[0].name
        self._output_names: list[str] = [outputs[0].name]

    # -- CompiledEngine ------------------------------------------------------------------------

    @classmethod
    def check_available(cls, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise BackendUnavailableError(
                f"onnxruntime (CPU) runs fp32 only (asked for {precision});"
                " fp16 needs the tensorrt backend"
            )
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError(
                "the onnxruntime backend needs the onnxruntime package"
            ) from exc

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return library_versions("torch", "onnx", "onnxscript", "onnxruntime")

    @classmethod
    def device_name(cls) -> str:
        return cpu_name()

    @classmethod
    def build_options(cls, *, max_batch: int, precision: str) -> dict[str, Any]:
        return {"exporter": EXPORTERS[0], "fallback": True}

    @classmethod
    def build_artifact(
        cls,
        module: torch.nn.Module,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int,
        precision: str = "fp32",
    ) -> None:
        cls.check_available(precision)
        used = export_onnx(module, tuple(spec.input_shape), path, max_batch=max_batch)
        logger.debug("%s: exported ONNX with the %s exporter", spec.name, used)

    @classmethod
    def from_artifact(
        cls,
        spec: ModelSpec,
        path: Path,
        *,
        max_batch: int = 64,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> OnnxRuntimeEngine:
        return cls(spec, path, max_batch=max_batch, threads=threads, precision=precision)

    # -- Engine --------------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._session.run(self._output_names, {self._input_name: batch})
        return outputs[0]

    def _release(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._session
