"""The CT path: low-dose CT denoised to normal-dose quality by the models of
:mod:`engines.ct` (PAPERS.md §5), as batch jobs over DICOM series and NIfTI files
(``sigstream denoise ct``, :mod:`stream.batch`: a local pool or Ray) and as live slices
(``sigstream run ct``).

:mod:`~stream.paths.ct.stages` holds what the service runs, :mod:`.commands` its command line;
:data:`SPEC` (:mod:`.spec`) declares it.
"""

from __future__ import annotations

from stream.paths.ct.spec import SPEC

__all__ = ["SPEC"]
