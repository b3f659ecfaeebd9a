"""The codec path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""


from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream.paths.codec.commands import CODEC_MODELS, add_commands
from stream.paths.spec import PathSpec

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["SPEC"]


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    """Encoder and decoder of every codec, as the live link serves them."""
    from engines.codec.codec import CODEC_LINK_MAX_BATCH
    from engines.codec.specs import CODECS

    return {spec.name: (spec, CODEC_LINK_MAX_BATCH)
            for codec in CODECS.values() for spec in (codec.encoder, codec.decoder)}


def _gate(spec: ModelSpec, engine: Any) -> Any:
    from engines.codec.evaluate import codec_gate

    return codec_gate(spec, engine)


SPEC = PathSpec(
    name="codec",
    summary="autoencoder audio codec: live link and offline coding",
    models=CODEC_MODELS,
    default_model="wideband",
    engine_models=_engine_models,
    task_gate=_gate,
    cli=add_commands,
)
