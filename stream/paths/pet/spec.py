"""The PET path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream.paths.pet.commands import PET_MODELS, SERVED_MODEL, add_commands
from stream.paths.slices import SliceModality, SliceSettings, result_line, slice_server
from stream.paths.spec import PathSpec

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["PET_SLICES", "SPEC"]

#: Live PET slices: int16/uint16/int32 with a rescale (DICOM stores one slope per slice), or
#: float32 activity.
PET_SLICES = SliceModality(path="pet", unit="Bq/ml", stored_dtypes=("int16", "uint16", "int32"),
                           specs="engines.pet.specs:PET_SPECS",
                           units="engines.pet.specs:PET_UNITS")
#: Slices per engine call, in the batch jobs and ahead-of-time builds.
PET_MAX_BATCH = 8


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    from engines.pet.specs import PET_SPECS

    return {spec.name: (spec, PET_MAX_BATCH) for spec in PET_SPECS.values()}


def _gate(spec: ModelSpec, engine: Any) -> Any:
    from engines.pet.gate import pet_gate

    return pet_gate(spec, engine)


SPEC = PathSpec(
    name="pet",
    summary="short-acquisition PET denoised self-supervised (DICOM, NIfTI; live slices; NEMA QC)",
    serve=slice_server(PET_SLICES, SERVED_MODEL),
    settings=SliceSettings,
    models=PET_MODELS,
    default_model=SERVED_MODEL,
    engine_models=_engine_models,
    task_gate=_gate,
    cli=add_commands,
    format_result=result_line,
)
