"""Evaluation report of the spectral ROI path: `sigstream eval roi --json PATH`.

What it measures, on fixed seeds (all figures recomputed on every run, nothing hard-coded):

- The paper's table (PAPERS.md §1): custom ROI loss (definition in :mod:`engines.roi.metrics`)
  of the four segmenters on ``n_test`` test spectra of the paper's protocol
  (``SpectrumSimConfig()`` defaults), with the unforgiven fraction and the BCE beside it.
- Peak read-out: peak-level precision/recall/F1 (a detected peak matches a true one within
  +-2 samples, optimal one-to-one matching), position/height/area errors, and false peaks per
  peak-free spectrum (background + noise only, simulated per SNR band).
- Classical baselines tuned on validation spectra (arPLS + find_peaks, find_peaks_cwt; see
  :mod:`engines.roi.baselines`), evaluated on a seeded subset of the same test set (the first
  ``n_baseline`` spectra; the neural models are also summarised on that subset so every
  comparison is on the same spectra).
- Out-of-distribution groups (Gaussian/Lorentzian/Voigt shapes, widths 3-61, lengths
  256-4096, forced overlaps, single-sample spikes, and combinations), with the detector's
  default length strategy.
- Windowing vs resampling (and normalisation / stitching / overlap variants) on lengths
  256-4096 with the paper's peaks, so that length is the only shift.
- Context for the peak figures: the same post-processing fed the *true* ROIs (an upper bound
  for any ROI segmenter with this read-out), and the fraction of true peaks that are separate
  local maxima of the noiseless signal at all (paper protocol: overlaps are random).

Every figure is broken down by SNR band (thirds of the simulator's SNR range, per spectrum:
strongest peak / noise sigma) with the headline over the whole range.

Data streams: ``numpy.random.SeedSequence([seed, tag])`` per purpose. The test stream is
``[seed, 3]``, the one :func:`engines.roi.train.roi_data_rng` gives for ``"test"`` with the
default ``seed`` (``ROI_TEST_SEED``), never drawn by training; the others use tags 10-13.
Spectra are simulated in chunks of 1,000 from one generator, so a smaller ``n_test`` evaluates
exactly the first ``n_test`` spectra of the full test set.

Models are run eagerly (``spec.load()``, ``torch.inference_mode``, batched); models without
weights are skipped with a note in the report (``skipped``, and an entry under ``models``
holding ``skipped`` and null figures).

Modules, one concern each: :mod:`~engines.roi.evaluate.protocol` (seeds, streams, targets,
out-of-distribution groups, simulated sets), :mod:`~engines.roi.evaluate.scoring` (running a
detector on a set and scoring it), :mod:`~engines.roi.evaluate.sections` (one function per
section of the report), :mod:`~engines.roi.evaluate.run` (the run that assembles the report),
:mod:`~engines.roi.evaluate.table` (the printed table) and :mod:`~engines.roi.evaluate.gate`
(the task metric of :mod:`engines.gates`).
"""

from engines.roi.evaluate.gate import task_metric
from engines.roi.evaluate.protocol import DEFAULT_SEED, MODEL_NAMES, ood_groups
from engines.roi.evaluate.run import roi_report
from engines.roi.evaluate.table import format_table

__all__ = [
    "DEFAULT_SEED",
    "MODEL_NAMES",
    "format_table",
    "ood_groups",
    "roi_report",
    "task_metric",
]
