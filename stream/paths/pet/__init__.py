"""The PET path: short-acquisition PET denoised by self-supervised models of :mod:`engines.pet`
(PAPERS.md §2), as batch jobs over DICOM series and NIfTI files (``sigstream denoise pet``),
live slices (``sigstream run pet``), training on a site's own scans (``sigstream train pet
--from``) and the NEMA IQ quality-control report (``sigstream nema``).

:mod:`.commands` holds its command line, :mod:`.nema_command` the NEMA report's; :data:`SPEC`
(:mod:`.spec`) declares it.
"""

from __future__ import annotations

from stream.paths.pet.spec import SPEC

__all__ = ["SPEC"]
