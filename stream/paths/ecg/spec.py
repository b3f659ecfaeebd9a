"""The ecg path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream.paths.ecg.commands import ECG_MODELS, EcgSettings, add_commands, format_result
from stream.paths.ecg.stages import EcgPath
from stream.paths.spec import PathSpec, ServeOptions

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["SPEC"]


def _serve(options: ServeOptions, settings: EcgSettings) -> EcgPath:
    return EcgPath(templates=settings.templates, templates_key=settings.templates_key,
                   fuse_beats=settings.fuse_beats, weights=options.weights,
                   max_samples=options.max_samples, model=options.model or "embedding")


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    from engines.ecg.specs import ECG_SPECS

    return {spec.name: (spec, service_max_batch) for spec in ECG_SPECS.values()}


def _gate(spec: ModelSpec, engine: Any) -> Any:
    from engines.ecg.evaluate.gate import ecg_gate

    return ecg_gate(spec, engine)


SPEC = PathSpec(
    name="ecg",
    summary="ECG user recognition (wearable authentication)",
    serve=_serve,
    settings=EcgSettings,
    models=ECG_MODELS,
    default_model="embedding",
    engine_models=_engine_models,
    task_gate=_gate,
    cli=add_commands,
    format_result=format_result,
)
