"""The ecg path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from typing import TYPE_CHECKING

from stream.paths.deferred import deferred_gate, specs_at_service_batch
from stream.paths.ecg.commands import ECG_MODELS, EcgSettings, add_commands, format_result
from stream.paths.spec import PathSpec, ServeOptions, ViewSpec

if TYPE_CHECKING:
    from stream.paths.ecg.stages import EcgPath

__all__ = ["SPEC"]


def _serve(options: ServeOptions, settings: EcgSettings) -> EcgPath:
    from stream.paths.ecg.stages import EcgPath

    return EcgPath(templates=settings.templates, templates_key=settings.templates_key,
                   fuse_beats=settings.fuse_beats, weights=options.weights,
                   max_samples=options.max_samples, model=options.model or "embedding")


SPEC = PathSpec(
    name="ecg",
    summary="ECG user recognition (wearable authentication)",
    serve=_serve,
    settings=EcgSettings,
    models=ECG_MODELS,
    default_model="embedding",
    engine_models=specs_at_service_batch("engines.ecg.specs:ECG_SPECS"),
    task_gate=deferred_gate("engines.ecg.evaluate.gate:ecg_gate"),
    cli=add_commands,
    format_result=format_result,
    view=ViewSpec(panel="strip", input_kind="ecg", unit="mV",
                  values="stream.paths.ecg.view:values", digest="stream.paths.ecg.view:digest"),
)
