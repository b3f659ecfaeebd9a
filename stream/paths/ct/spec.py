"""The CT path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""

from __future__ import annotations

from stream.paths.ct.commands import CT_MODELS, SERVED_MODEL, add_commands
from stream.paths.volumes import SliceModality, volume_path_spec

__all__ = ["CT_MAX_BATCH", "CT_SLICES", "SPEC"]

#: Live CT slices: int16/uint16 with a rescale, or float32 HU.
CT_SLICES = SliceModality(path="ct", unit="HU", stored_dtypes=("int16", "uint16"),
                          specs="engines.ct.specs:CT_SPECS", units="engines.ct.specs:CT_UNITS")
#: Slices per engine call, in the batch jobs and ahead-of-time builds.
CT_MAX_BATCH = 8

SPEC = volume_path_spec(
    modality=CT_SLICES,
    summary="low-dose CT to normal-dose quality (DICOM, NIfTI; live slices)",
    models=CT_MODELS, default_model=SERVED_MODEL, max_batch=CT_MAX_BATCH,
    gate="engines.ct.evaluate.gate:ct_gate", cli=add_commands,
)
