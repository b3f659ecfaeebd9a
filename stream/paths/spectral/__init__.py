"""The spectral-peaks path: spectra in (``kind="spectrum"``), ROI and peak lists out
(``kind="result.spectral"``), served by the ROI models of :mod:`engines.roi` (PAPERS.md §1).

:mod:`~stream.paths.spectral.stages` holds what the service runs, :mod:`.sources` the
spectrometer sources, :mod:`.commands` its command line; :data:`SPEC` (:mod:`.spec`) declares it.
"""

from __future__ import annotations

from stream.paths.spectral.spec import SPEC

__all__ = ["SPEC"]
