"""Every model the service runs, by engine name, with the largest batch it is served at: what
``sigstream engines build`` compiles ahead of time, so a service or a link starts warm."""

from __future__ import annotations

from engines.spec import ModelSpec

__all__ = ["CODEC_LINK_MAX_BATCH", "CODEC_MAX_BATCH", "engine_models"]

#: A link end calls its codec engines one frame at a time; a batch bound of 1 also keeps each
#: link process small (the accuracy gate and ONNX Runtime's arena size to the bound).
CODEC_LINK_MAX_BATCH = 1
#: Offline coding and the evaluation code frames in batches of up to 64.
CODEC_MAX_BATCH = 64


def engine_models(service_max_batch: int) -> dict[str, tuple[ModelSpec, int]]:
    """``{spec name: (spec, max_batch)}`` for the spectral, ECG and codec models;
    ``service_max_batch`` is the services' batch bound (their configuration's); the codec
    engines are listed as the live link serves them."""
    from engines.codec.specs import CODECS
    from engines.ecg.specs import ECG_SPECS
    from engines.roi.specs import ROI_SPECS

    models: dict[str, tuple[ModelSpec, int]] = {}
    for spec in (*ROI_SPECS.values(), *ECG_SPECS.values()):
        models[spec.name] = (spec, service_max_batch)
    for codec in CODECS.values():
        for spec in (codec.encoder, codec.decoder):
            models[spec.name] = (spec, CODEC_LINK_MAX_BATCH)
    return models
