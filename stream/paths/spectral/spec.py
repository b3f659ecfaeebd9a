"""The spectral path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from typing import TYPE_CHECKING

from stream.paths.deferred import deferred_gate, specs_at_service_batch
from stream.paths.spec import PathSpec, ServeOptions, ViewSpec
from stream.paths.spectral.commands import (
    DEFAULT_MODEL,
    ROI_MODELS,
    SpectralSettings,
    add_commands,
    format_result,
)

if TYPE_CHECKING:
    from stream.paths.spectral.stages import SpectralPath

__all__ = ["SPEC"]


def _serve(options: ServeOptions, settings: SpectralSettings) -> SpectralPath:
    from stream.paths.spectral.stages import SpectralPath

    return SpectralPath(model=options.model or DEFAULT_MODEL, weights=options.weights,
                        max_samples=options.max_samples, peak_fit=settings.peak_fit)


SPEC = PathSpec(
    name="spectral",
    summary="spectral ROI and peak detection",
    serve=_serve,
    settings=SpectralSettings,
    models=ROI_MODELS,
    default_model=DEFAULT_MODEL,
    engine_models=specs_at_service_batch("engines.roi.specs:ROI_SPECS"),
    task_gate=deferred_gate("engines.roi.evaluate.gate:roi_gate"),
    cli=add_commands,
    format_result=format_result,
    view=ViewSpec(panel="trace", input_kind="spectrum",
                  values="stream.paths.spectral.view:values",
                  digest="stream.paths.spectral.view:digest"),
)
