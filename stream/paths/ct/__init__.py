"""The CT path: low-dose CT denoised to normal-dose quality by the models of
:mod:`engines.ct` (PAPERS.md §5), as batch jobs over DICOM series and NIfTI files
(``sigstream denoise ct``, :mod:`stream.batch`: a local pool or Ray) and as live slices
(``sigstream run ct``).

:mod:`.commands` holds its command line; :data:`SPEC` (:mod:`.spec`) declares it, the live
slices served by the volume paths' shared :class:`~stream.paths.slices.SlicePath`.
"""

from __future__ import annotations

from stream.paths.ct.spec import SPEC

__all__ = ["SPEC"]
