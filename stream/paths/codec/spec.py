"""The codec path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stream.paths.codec.commands import CODEC_MODELS, add_commands
from stream.paths.deferred import deferred_gate
from stream.paths.spec import PathSpec, ViewSpec

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["SPEC"]


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    """Encoder and decoder of every codec, as the live link serves them."""
    from engines.codec.codec import CODEC_LINK_MAX_BATCH
    from engines.codec.specs import CODECS

    return {spec.name: (spec, CODEC_LINK_MAX_BATCH)
            for codec in CODECS.values() for spec in (codec.encoder, codec.decoder)}


SPEC = PathSpec(
    name="codec",
    summary="autoencoder audio codec: live link and offline coding",
    models=CODEC_MODELS,
    default_model="wideband",
    engine_models=_engine_models,
    task_gate=deferred_gate("engines.codec.evaluate:codec_gate"),
    cli=add_commands,
    view=ViewSpec(panel="meters", metrics="sigstream_codec_", unit="dBFS",
                  digest="stream.paths.codec.view:digest"),
)
