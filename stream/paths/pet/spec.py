"""The PET path's declaration: :data:`SPEC`, listed by :mod:`stream.paths`."""

from __future__ import annotations

from stream.paths.pet.commands import PET_MODELS, SERVED_MODEL, add_commands
from stream.paths.volumes import SliceModality, volume_path_spec

__all__ = ["PET_MAX_BATCH", "PET_SLICES", "SPEC"]

#: Live PET slices: int16/uint16/int32 with a rescale (DICOM stores one slope per slice), or
#: float32 activity.
PET_SLICES = SliceModality(path="pet", unit="Bq/ml", stored_dtypes=("int16", "uint16", "int32"),
                           specs="engines.pet.specs:PET_SPECS",
                           units="engines.pet.specs:PET_UNITS")
#: Slices per engine call, in the batch jobs and ahead-of-time builds.
PET_MAX_BATCH = 8

SPEC = volume_path_spec(
    modality=PET_SLICES,
    summary="short-acquisition PET denoised self-supervised (DICOM, NIfTI; live slices; NEMA "
            "QC)",
    models=PET_MODELS, default_model=SERVED_MODEL, max_batch=PET_MAX_BATCH,
    gate="engines.pet.gate:pet_gate", cli=add_commands,
)
