"""The spectral path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from typing import Any

from stream.paths.deferred import deferred_gate, specs_at_service_batch
from stream.paths.spec import PathSpec, ServeOptions
from stream.paths.spectral.commands import ROI_MODELS, add_commands, format_result
from stream.paths.spectral.stages import SpectralPath

__all__ = ["SPEC"]


def _serve(options: ServeOptions, settings: Any) -> SpectralPath:
    return SpectralPath(model=options.model or "resnet_unet", weights=options.weights,
                        max_samples=options.max_samples)


SPEC = PathSpec(
    name="spectral",
    summary="spectral ROI and peak detection",
    serve=_serve,
    models=ROI_MODELS,
    default_model="resnet_unet",
    engine_models=specs_at_service_batch("engines.roi.specs", "ROI_SPECS"),
    task_gate=deferred_gate("engines.roi.evaluate.gate", "roi_gate"),
    cli=add_commands,
    format_result=format_result,
)
