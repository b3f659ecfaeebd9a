"""Evaluation report of the CT batch path (paper §5): ``evaluate_ct(json_path, quick)``.

What it measures (all figures recomputed on every run, nothing hard-coded):

- Sets: held-out phantom slices (test seeds, disjoint from training; 8 at 512² by default)
  and every real CT slice that ships in pydicom / pydicom-data (six: ``CT_small`` 128²,
  ``693_UNCR``, ``693_UNCI``, ``explicit_VR-UN`` and the two frames of
  ``eCT_Supplemental``, 512²). Each slice goes through the simulated chain
  (:mod:`devices.ct_dose`) at doses 0.10, 0.25, 0.50 and, for the reference, at dose 1.
- Methods: ``low_dose`` (the FBP input), ``gaussian`` and ``bm3d`` (parameters tuned per dose
  on validation phantoms, :mod:`engines.ct.baselines`), ``red_cnn`` and ``unet`` (eager,
  served through the engine's tiles as :func:`engines.ct.denoise.denoise_volume` serves them).
- Figures inside the body (:mod:`engines.ct.metrics`): PSNR and SSIM in the soft-tissue window
  [-160, 240] HU (PSNR also in [-1000, 1000]), RMSE in HU, mean HU bias per tissue class (fat,
  soft tissue, bone: phantom labels, or thresholds on a real slice), noise SD in uniform
  regions, and on the phantom set MTF50 at the edge insert against the normal-dose reference.
- Targets at dose 0.25 on the real slices for the served model (:data:`TARGETS`).

JSON layout: ``sets.<phantom|real>.doses.<"0.1"|"0.25"|"0.5">.methods.<name>`` with
``psnr_db``, ``psnr_wide_db``, ``ssim``, ``rmse_hu``, ``hu_bias`` (per class),
``hu_bias_abs``, ``noise_sd_hu``, ``mtf50_lp_per_cm``, ``mtf50_ratio``,
``per_slice_psnr_db``; top-level ``served``, ``protocol``, ``tuned``, ``skipped``,
``targets``, ``timing_s``.

Modules, one concern each: :mod:`~engines.ct.evaluate.protocol` (doses, sizes, masks,
targets), :mod:`~engines.ct.evaluate.sets` (the scanned slices and their masks),
:mod:`~engines.ct.evaluate.scoring` (one image's figures, a set's summary),
:mod:`~engines.ct.evaluate.run` (the run that assembles the report),
:mod:`~engines.ct.evaluate.table` (the printed table) and :mod:`~engines.ct.evaluate.gate`
(the task gate of :mod:`engines.gates`).
"""

from engines.ct.evaluate.gate import ct_gate, task_metric
from engines.ct.evaluate.protocol import DOSES, TARGETS, EvalSizes
from engines.ct.evaluate.run import ct_report, evaluate_ct
from engines.ct.evaluate.table import format_table

__all__ = [
    "DOSES",
    "TARGETS",
    "EvalSizes",
    "ct_gate",
    "ct_report",
    "evaluate_ct",
    "format_table",
    "task_metric",
]
