"""Low-dose CT denoising (paper §5): models, training data, training, evaluation, serving.

Modules: :mod:`~engines.ct.models` (RED-CNN, residual UNet), :mod:`~engines.ct.specs` (their
frozen specs and the input contract), :mod:`engines.slices` (slices of any size on the
engine's fixed tile), :mod:`~engines.ct.data` (phantom pairs, cache, patches),
:mod:`~engines.ct.train`, :mod:`~engines.ct.metrics`, :mod:`~engines.ct.baselines`,
:mod:`~engines.ct.evaluate` and :mod:`~engines.ct.denoise` (the API for notebooks and batch
runners).

Importing :mod:`engines.ct` does not load torch; building, loading or training a model does.
"""

from engines.ct.denoise import CtDenoiser, denoise_volume
from engines.ct.specs import CT_SPECS, SERVED_MODEL

__all__ = ["CT_SPECS", "SERVED_MODEL", "CtDenoiser", "denoise_volume"]
