"""Every model the service runs, by engine name, with the largest batch it is served at: what
``sigstream engines build`` compiles ahead of time, so a service or a link starts warm."""

from __future__ import annotations

from engines.spec import ModelSpec

__all__ = ["CODEC_MAX_BATCH", "engine_models"]

#: The codec engines' batch bound: a link calls them one frame at a time, offline coding and
#: the evaluation in batches of up to 64 frames.
CODEC_MAX_BATCH = 64


def engine_models(service_max_batch: int) -> dict[str, tuple[ModelSpec, int]]:
    """``{spec name: (spec, max_batch)}`` for the spectral, ECG and codec models;
    ``service_max_batch`` is the services' batch bound (their configuration's)."""
    from engines.codec.specs import CODECS
    from engines.ecg.specs import ECG_SPECS
    from engines.roi.specs import ROI_SPECS

    models: dict[str, tuple[ModelSpec, int]] = {}
    for spec in (*ROI_SPECS.values(), *ECG_SPECS.values()):
        models[spec.name] = (spec, service_max_batch)
    for codec in CODECS.values():
        for spec in (codec.encoder, codec.decoder):
            models[spec.name] = (spec, CODEC_MAX_BATCH)
    return models
