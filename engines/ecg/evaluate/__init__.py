"""Evaluation report of the ECG authentication path: `sigstream eval ecg --json PATH`.

What it measures, on the fixed simulated cohort (``seed = 0``; :mod:`devices.ecg_sim`) and the
real recordings of :mod:`devices.ecg_recordings`; every figure is recomputed on every run:

- **Closed set** (the paper's table, PAPERS.md §3): the classifier (``ECG_SPECS["cnn"]``,
  trained on session 0 of subjects 0..17 only) on every good beat of sessions 1 and 2 of the
  same 18 subjects: accuracy, macro precision / recall / F1, per-subject accuracy, worst
  subject, and the confusion matrix; the paper's 93.2 / 92.9 / 93.1 / 92.9 % beside.
- **Verification, seen cohort** (subjects 0..17; the embedding model, ``ECG_SPECS
  ["embedding"]``): each subject is enrolled from the first 20 good beats of a session-0
  record (one 250 Hz wearable, read for up to 120 s: noisy people take longer) through
  :class:`~engines.ecg.templates.TemplateStore` (a temporary SQLite file: the very template
  the service stores; fewer than 5 good beats enrol nobody, as in the service); every good
  beat of sessions 1 and 2 is scored (cosine) against every template: genuine = against its
  own, impostor = against the 17 others. Single beats, and fused probes
  (:func:`~engines.ecg.matcher.fuse` of 5 consecutive good beats of one record, sliding by
  one beat, as a stream's :class:`~engines.ecg.matcher.FusionState` would hold them): EER,
  FRR at FAR 1 % and 0.1 %, and the decisions of the shipped accept / reject thresholds
  (embedding card: its ``k = 1`` row for single beats, its ``k = 5`` row for fused probes, as
  :meth:`~engines.ecg.matcher.Matcher.from_card` picks them); per session, per stream rate
  and per subject.
- **Open set**: subjects 1000..1049 (never seen in training) enrolled the same way, session 1
  scored against their 50 templates; EER single / fused and its ratio to the seen cohort's.
  Impostors 2000..2049 (never enrolled), session 1, scored against the whole gallery (seen +
  open set, 68 templates): the fraction of their beats / fused probes whose best score the
  shipped thresholds would accept as *anyone* (identification false-accept rate); beside it
  the open-set subjects' own rank-1 identification (accepted as themselves, accepted as
  someone else).
- **R-peak detection**: :func:`engines.ecg.frontend.detect_r_peaks` on simulated records of
  the cohort (session 1) at 128 / 250 / 360 / 500 / 1000 Hz, each with the session's own noise
  and with that noise mix rescaled to 30 / 20 / 15 / 10 dB SNR (the simulator's broadband
  definition; the target pool), and, apart, with muscle noise (EMG) alone at 30 .. 0 dB as a
  stress test: sensitivity and positive predictive value within +-50 ms of the simulator's
  true R peaks (one-to-one matching, :mod:`engines.ecg.metrics`), per cell, per rate, per
  noise condition and pooled, with the median SNR inside the 5-15 Hz QRS band beside each
  condition (the broadband figure is dominated by baseline wander, which that band removes).
  Peaks in the last 0.5 s of a record are not scored (a detector confirms an R peak only
  once samples after it have arrived; the record, not the beat, ends there). Real recordings
  (:data:`devices.ecg_recordings.REAL_RECORDINGS` from ``data_dir``, fetched by ``make ecg-data``):
  agreement with ``neurokit2`` (``ecg_clean`` then ``ecg_peaks``, method ``"neurokit"``)
  within +-50 ms, in both directions, beats counted and mean heart rate; a recording above
  the front end's 2000 Hz is decimated by an integer factor first. Missing files or a
  missing ``neurokit2`` (the ``eval`` extra) are reported as ``skipped`` with the reason.

Data are split by session, never by random beat: the classifier saw session 0 of subjects
0..17 only; the embedding saw sessions 0..4 of the pool 100..399 and session 0 of 0..17 (hence
"seen"); subjects 1000.. and 2000.. appear in no training set and sessions 1-2 of 0..17 in
none either. The test records are those of :func:`engines.ecg.data.cohort_beats` (120 s per
session split over 128 / 250 / 360 / 500 Hz), the set the training cards report on. Beats
come from the same streaming front end the service runs
(:func:`engines.ecg.frontend.extract_beats`); beats whose quality is not ``"ok"`` are counted
and left out, as the service leaves them out (the closed set also reports every beat).

Models run eagerly on the CPU (``threads`` torch threads, 1 by default). A model without
weights is skipped with a note (its sections hold ``skipped``). ``quick=True`` shrinks every
size for a smoke test (a few seconds of signal per subject, a few subjects).

Modules, one concern each: :mod:`~engines.ecg.evaluate.protocol` (subjects, sessions, rates,
targets, sizes), :mod:`~engines.ecg.evaluate.beats` (simulated records through the front end,
eager models), :mod:`~engines.ecg.evaluate.identity` (closed set, verification, open set),
:mod:`~engines.ecg.evaluate.r_peaks` (R-peak detection), :mod:`~engines.ecg.evaluate.run`
(the run that assembles the report), :mod:`~engines.ecg.evaluate.table` (the printed table)
and :mod:`~engines.ecg.evaluate.gate` (the task metric of :mod:`engines.gates`).
"""

from engines.ecg.evaluate.gate import task_metric
from engines.ecg.evaluate.protocol import (
    CLOSED_SET_SUBJECTS,
    DEFAULT_SEED,
    DETECTION_FS_HZ,
    DETECTION_SNR_DB,
    IMPOSTOR_SUBJECTS,
    OPEN_SET_SUBJECTS,
    PAPER_FIGURES,
    SECTIONS,
    TARGETS,
    EvalSizes,
)
from engines.ecg.evaluate.r_peaks import DETECTION_NOISE
from engines.ecg.evaluate.run import ecg_report
from engines.ecg.evaluate.table import format_table

__all__ = [
    "CLOSED_SET_SUBJECTS",
    "DEFAULT_SEED",
    "DETECTION_FS_HZ",
    "DETECTION_NOISE",
    "DETECTION_SNR_DB",
    "IMPOSTOR_SUBJECTS",
    "OPEN_SET_SUBJECTS",
    "PAPER_FIGURES",
    "SECTIONS",
    "TARGETS",
    "EvalSizes",
    "ecg_report",
    "format_table",
    "task_metric",
]
