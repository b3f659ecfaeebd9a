"""Short-acquisition PET denoising (PAPERS.md §2): self-supervised models, their masking,
training data, training, evaluation against the NEMA IQ protocol, and serving.

Modules: :mod:`~engines.pet.models` (careamics' N2V UNet and the N2V2 changes),
:mod:`~engines.pet.masking` (blind spots), :mod:`~engines.pet.specs` (specs, how each model
learns, the input contract), :mod:`~engines.pet.data`, :mod:`~engines.pet.train`,
:mod:`~engines.pet.metrics`, :mod:`~engines.pet.nema`, :mod:`~engines.pet.nema_locate` and
:mod:`~engines.pet.earl` (the NEMA NU-2 image-quality analysis: the phantom found, the
measurements, the EARL bands), :mod:`~engines.pet.evaluate`, and
:mod:`~engines.pet.denoise` (the API for notebooks and batch runners).

Importing :mod:`engines.pet` does not load torch; building, loading or training a model does.
"""

from engines.pet.denoise import PetDenoiser, denoise_volume
from engines.pet.specs import PET_SPECS, SERVED_MODEL

__all__ = ["PET_SPECS", "SERVED_MODEL", "PetDenoiser", "denoise_volume"]
