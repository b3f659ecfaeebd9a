"""The spectral path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream.paths.spec import PathSpec, ServeOptions
from stream.paths.spectral.commands import ROI_MODELS, add_commands, format_result
from stream.paths.spectral.stages import SpectralPath

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["SPEC"]


def _serve(options: ServeOptions, settings: Any) -> SpectralPath:
    return SpectralPath(model=options.model or "resnet_unet", weights=options.weights,
                        max_samples=options.max_samples)


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    from engines.roi.specs import ROI_SPECS

    return {spec.name: (spec, service_max_batch) for spec in ROI_SPECS.values()}


def _gate(spec: ModelSpec, engine: Any) -> Any:
    from engines.roi.evaluate.gate import roi_gate

    return roi_gate(spec, engine)


SPEC = PathSpec(
    name="spectral",
    summary="spectral ROI and peak detection",
    serve=_serve,
    models=ROI_MODELS,
    default_model="resnet_unet",
    engine_models=_engine_models,
    task_gate=_gate,
    cli=add_commands,
    format_result=format_result,
)
