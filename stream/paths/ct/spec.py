"""The CT path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream.paths.ct.commands import CT_MODELS, SERVED_MODEL, add_commands
from stream.paths.slices import SliceModality, SliceSettings, result_line, slice_server
from stream.paths.spec import PathSpec

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["CT_SLICES", "SPEC"]

#: Live CT slices: int16/uint16 with a rescale, or float32 HU.
CT_SLICES = SliceModality(path="ct", unit="HU", stored_dtypes=("int16", "uint16"),
                          specs="engines.ct.specs:CT_SPECS", units="engines.ct.specs:CT_UNITS")

#: Slices per engine call, in the batch jobs and ahead-of-time builds.
CT_MAX_BATCH = 8


def _engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
    from engines.ct.specs import CT_SPECS

    return {spec.name: (spec, CT_MAX_BATCH) for spec in CT_SPECS.values()}


def _gate(spec: ModelSpec, engine: Any) -> Any:
    from engines.ct.evaluate.gate import ct_gate

    return ct_gate(spec, engine)


SPEC = PathSpec(
    name="ct",
    summary="low-dose CT to normal-dose quality (DICOM, NIfTI; live slices)",
    serve=slice_server(CT_SLICES, SERVED_MODEL),
    settings=SliceSettings,
    models=CT_MODELS,
    default_model=SERVED_MODEL,
    engine_models=_engine_models,
    task_gate=_gate,
    cli=add_commands,
    format_result=result_line,
)
