"""Evaluation report of the ECG authentication path: `sigstream eval ecg --json PATH`.

What it measures, on the fixed simulated cohort (``seed = 0``; :mod:`devices.ecg_sim`) and the
real recordings of :mod:`devices.ecg`; every figure is recomputed on every run:

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
  (:data:`devices.ecg.REAL_RECORDINGS` from ``data_dir``, fetched by ``make ecg-data``):
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
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from devices.ecg_sim import cohort_subject, simulate_record, subject_session
from engines.ecg.metrics import (
    classification_report,
    eer,
    far_frr_at,
    frr_at_far,
    match_peak_pairs,
    sensitivity_ppv,
    split_scores,
)
from engines.report import jsonable

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
    "evaluate_ecg",
    "format_table",
]

DEFAULT_SEED = 0
CLOSED_SET_SUBJECTS = tuple(range(18))
OPEN_SET_SUBJECTS = tuple(range(1000, 1050))
IMPOSTOR_SUBJECTS = tuple(range(2000, 2050))
ENROL_SESSION = 0
TEST_SESSIONS = (1, 2)
OPEN_SET_TEST_SESSION = 1
DETECTION_SESSION = 1
DETECTION_FS_HZ = (128.0, 250.0, 360.0, 500.0, 1000.0)
DETECTION_SNR_DB: tuple[float | None, ...] = (None, 30.0, 20.0, 15.0, 10.0)
DETECTION_MUSCLE_SNR_DB = (30.0, 20.0, 15.0, 10.0, 5.0, 0.0)
ENROL_BEATS = 20
FUSE_BEATS = 5
TOLERANCE_S = 0.05
END_GUARD_S = 0.5
_FRONTEND_MAX_FS_HZ = 2000.0  # engines.ecg.frontend accepts 100..2000 Hz
FAR_POINTS = (0.01, 0.001)
SECTIONS = ("closed_set", "verification", "open_set", "r_peaks", "real_recordings")

#: The paper's closed-set figures (PAPERS.md §3), fractions.
PAPER_FIGURES = {"accuracy": 0.932, "precision": 0.929, "recall": 0.931, "f1": 0.929}

TARGETS = {
    "closed_set_accuracy_min": 0.99,
    "seen_eer_single_max": 0.02,
    "seen_eer_fused_max": 0.005,
    "open_set_eer_ratio_max": 1.5,
    "impostor_identification_accept_max": 0.001,
    "r_peak_sensitivity_min": 0.995,
    "r_peak_ppv_min": 0.995,
}


@dataclass(frozen=True, kw_only=True)
class EvalSizes:
    """How much signal each section simulates (seconds per subject and session).

    ``test_fs_hz``: stream rates of the test records of the identity sections; a session's
    ``test_s`` seconds are split evenly over them (the training data's rates,
    :data:`engines.ecg.data.TRAIN_FS_HZ`; beats are resampled to 256 Hz whatever the rate).
    ``enrol_fs_hz``, ``enrol_s``: the session-0 record the first :data:`ENROL_BEATS` good
    beats are enrolled from (one wearable; long enough for noisy subjects to reach 20).
    ``n_open_set`` / ``n_impostors``: the first that many of subjects 1000.. / 2000..
    ``detection_subjects``: cohort subjects simulated for the R-peak section, ``detection_s``
    seconds each per rate and noise level.
    """

    test_fs_hz: tuple[float, ...] = (128.0, 250.0, 360.0, 500.0)
    enrol_fs_hz: float = 250.0
    enrol_s: float = 120.0
    test_s: float = 120.0
    n_open_set: int = len(OPEN_SET_SUBJECTS)
    n_impostors: int = len(IMPOSTOR_SUBJECTS)
    detection_subjects: tuple[int, ...] = CLOSED_SET_SUBJECTS
    detection_s: float = 60.0

    @staticmethod
    def quick() -> EvalSizes:
        """Sizes of the smoke test: seconds instead of minutes, a handful of subjects."""
        return EvalSizes(
            test_fs_hz=(128.0, 500.0),
            enrol_s=60.0,
            test_s=16.0,
            n_open_set=6,
            n_impostors=6,
            detection_subjects=(0, 1),
            detection_s=12.0,
        )


# --- small helpers -------------------------------------------------------------------------


def _progress(enabled: bool, msg: str) -> None:
    if enabled:
        print(f"[eval ecg] {msg}", file=sys.stderr, flush=True)




def _or(v: float | None, default: float) -> float:
    return default if v is None else v


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --- beats of simulated records -------------------------------------------------------------


@dataclass
class _Beats:
    """Good beats of a set of records, in record order then time order.

    ``samples`` (n, 192) float32 model input rows; ``subject``, ``session``, ``record``
    (n,) int64 (``record`` numbers the records, so fused windows never straddle two);
    ``fs_hz`` (n,) float64 the stream rate of the beat's record; ``time_s`` (n,) the R peak's
    time in its session; ``ok`` (n,) bool the quality was ``"ok"`` (rows are good beats only
    unless collected with ``keep_refused``). ``found`` / ``good``: beats the front end found /
    passed as ``"ok"`` per subject (before any ``max_beats`` cut).
    """

    samples: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    record: np.ndarray
    fs_hz: np.ndarray
    time_s: np.ndarray
    ok: np.ndarray
    found: dict[int, int]
    good: dict[int, int]
    rejected: dict[str, int]
    signal_s: float
    n_records: int

    def __len__(self) -> int:
        return int(self.subject.size)

    def take(self, mask: np.ndarray) -> _Beats:
        """The rows where ``mask`` holds (same counts and summary)."""
        return replace(
            self,
            samples=self.samples[mask],
            subject=self.subject[mask],
            session=self.session[mask],
            record=self.record[mask],
            fs_hz=self.fs_hz[mask],
            time_s=self.time_s[mask],
            ok=self.ok[mask],
        )

    def summary(self) -> dict[str, Any]:
        found = sum(self.found.values())
        refused = {
            s: 1.0 - self.good[s] / self.found[s] if self.found[s] else None for s in self.found
        }
        worst = max(refused, key=lambda s: _or(refused[s], -1.0))
        return {
            "records": self.n_records,
            "signal_s": self.signal_s,
            "beats_found": found,
            "beats_good": sum(self.good.values()),
            "beats_used": int(self.ok.sum()),
            "beats_refused_by_quality": dict(sorted(self.rejected.items())),
            "refused_fraction_worst_subject": {"subject": worst, "fraction": refused[worst]},
            "subjects_without_good_beats": [s for s in self.found if self.good[s] == 0],
        }


def _collect_beats(
    subjects: Sequence[int],
    sessions: Sequence[int],
    *,
    duration_s: float,
    fs_hz: Sequence[float],
    seed: int,
    max_beats: int | None = None,
    keep_refused: bool = False,
) -> _Beats:
    """Good beats (all beats with ``keep_refused``) of ``duration_s`` seconds of each
    subject's sessions, split evenly over the stream rates ``fs_hz`` (rate ``k`` on its own
    stretch starting at ``k * duration_s / len(fs_hz)``, as
    :func:`engines.ecg.data.cohort_beats` splits the training data), each stretch one
    record through the whole-record front end (identical to the streaming one).
    ``max_beats``: use only the first good beats of each subject-session (no refused ones)."""
    from engines.ecg.frontend import BEAT_SAMPLES, QUALITY_OK, extract_beats

    rows: list[np.ndarray] = []
    labels: list[tuple[int, int, int, float, float, bool]] = []
    rejected: dict[str, int] = {}
    found: dict[int, int] = {}
    good: dict[int, int] = {}
    signal_s = 0.0
    r = 0
    seg = duration_s / len(fs_hz)
    for s in subjects:
        subject = cohort_subject(int(s), seed=seed)
        found[int(s)] = good[int(s)] = 0
        for session in sessions:
            kept = 0
            for k, fs in enumerate(fs_hz):
                start_s = k * seg
                record = simulate_record(
                    subject, int(session), fs_hz=float(fs), duration_s=seg, start_s=start_s
                )
                signal_s += record.duration_s
                beats = extract_beats(record.signal, record.fs_hz)
                found[int(s)] += len(beats)
                for b in beats:
                    ok = b.quality == QUALITY_OK
                    if ok:
                        good[int(s)] += 1
                    else:
                        rejected[b.quality] = rejected.get(b.quality, 0) + 1
                    if (ok and (max_beats is None or kept < max_beats)) or (
                        keep_refused and max_beats is None
                    ):
                        rows.append(b.samples)
                        t = start_s + b.r_index / record.fs_hz + b.r_offset_s
                        labels.append((int(s), int(session), r, float(fs), t, ok))
                        kept += int(ok)
                r += 1
    lab = np.array(labels, np.float64).reshape(-1, 6)
    samples = np.stack(rows).astype(np.float32) if rows else np.zeros((0, BEAT_SAMPLES), np.float32)
    return _Beats(
        samples=samples,
        subject=lab[:, 0].astype(np.int64),
        session=lab[:, 1].astype(np.int64),
        record=lab[:, 2].astype(np.int64),
        fs_hz=lab[:, 3],
        time_s=lab[:, 4],
        ok=lab[:, 5] > 0,
        found=found,
        good=good,
        rejected=rejected,
        signal_s=signal_s,
        n_records=r,
    )


# --- models ---------------------------------------------------------------------------------


def _run_model(module: Any, samples: np.ndarray, batch: int) -> np.ndarray:
    """Eager outputs of ``module`` for ``samples`` (n, 192): (n, out) float32."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, samples.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(samples[i : i + batch]))[:, None, :]
            outs.append(module(x).numpy().astype(np.float32))
    if not outs:  # no beats: the output width still has to be right
        with torch.inference_mode():
            width = module(torch.zeros((1, 1, samples.shape[1]))).shape[1]
        return np.zeros((0, width), np.float32)
    return np.concatenate(outs)


def _load(spec: Any) -> tuple[Any, dict[str, Any]]:
    """``(module, info)``: the eager model and what the report says about its weights, or
    ``(None, info)`` with ``info["skipped"]`` when the weights are missing or broken."""
    from engines.errors import WeightsError

    card = spec.card()
    info: dict[str, Any] = {"name": spec.name, "weights": spec.weights}
    try:
        info["weights_sha256"] = spec.weights_sha256()
        module = spec.load()
    except WeightsError as exc:
        info["skipped"] = str(exc)
        return None, info
    keys = (
        "seed",
        "params",
        "training_beats",
        "training_beats_seen",
        "cohort_accuracy",
        "cohort_eer",
        "cohort_eer_k5",
        "validation_eer",
        "validation_eer_k5",
        "fuse_beats",
        "accept_threshold",
        "reject_threshold",
        "wall_s",
        "command",
        "torch",
    )
    info["card"] = {k: card[k] for k in keys if k in card}
    if not card:
        info["note"] = f"no weights card at {spec.card_path}"
    return module, info


# --- verification ---------------------------------------------------------------------------


def _windows(record: np.ndarray, k: int) -> np.ndarray:
    """Start indices of every run of ``k`` consecutive rows with one record id."""
    n = record.size
    if n < k:
        return np.zeros(0, np.int64)
    starts = np.arange(n - k + 1)
    return starts[record[starts] == record[starts + k - 1]]


def _fused(emb: np.ndarray, record: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fused probes of ``k`` consecutive beats (sliding by one) and the row of each probe's
    last beat: ``(probes (m, dim) float32, last (m,) int64)``."""
    from engines.ecg.matcher import fuse

    starts = _windows(record, k)
    if starts.size == 0:
        return np.zeros((0, emb.shape[1]), np.float32), starts
    probes = np.stack([fuse(emb[s : s + k]) for s in starts])
    return probes, starts + k - 1


def _enrol(store: Any, model_id: str, beats: _Beats, emb: np.ndarray) -> dict[str, Any]:
    """Enrol every subject of ``beats`` from its rows (its first :data:`ENROL_BEATS` good
    beats of session 0), as the service's enrolment does: fewer than
    :data:`engines.ecg.enrolment.MIN_ENROLMENT_BEATS` good beats enrol nobody."""
    from engines.ecg.enrolment import MIN_ENROLMENT_BEATS

    counts: dict[int, int] = {}
    seconds: dict[int, float] = {}
    refused: list[int] = []
    for s in beats.found:
        sel = beats.subject == s
        rows = emb[sel]
        if rows.shape[0] < MIN_ENROLMENT_BEATS:
            refused.append(int(s))
            continue
        store.enroll(str(int(s)), rows, model_id=model_id)
        counts[int(s)] = int(rows.shape[0])
        seconds[int(s)] = float(beats.time_s[sel].max())
    short = sorted(s for s, n in counts.items() if n < ENROL_BEATS)
    secs = np.array(list(seconds.values()))
    return {
        "enrolled": len(counts),
        "not_enrolled": refused,
        "enrolled_with_fewer_beats": short,
        "beats_per_subject_min": min(counts.values()) if counts else None,
        "seconds_to_enrol_median": float(np.median(secs)) if secs.size else None,
        "seconds_to_enrol_max": float(secs.max()) if secs.size else None,
        "note": f"seconds of session 0 until the {ENROL_BEATS}th good beat (R time)",
    }


def _templates(store: Any, model_id: str, subjects: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (U,) int64, matrix (U, dim) float32)`` of the given subjects' templates."""
    names, matrix = store.templates(model_id)
    wanted = {int(s) for s in subjects}
    keep = [i for i, n in enumerate(names) if int(n) in wanted]
    labels = np.array([int(names[i]) for i in keep], np.int64)
    return labels, np.asarray(matrix, np.float32)[keep]


def _decisions(scores: np.ndarray, matcher: Any) -> dict[str, int]:
    out = {"accept": 0, "uncertain": 0, "reject": 0}
    for v in scores:
        out[matcher.decide(float(v))] += 1
    return out


def _rates(genuine: np.ndarray, impostor: np.ndarray, matcher: Any | None) -> dict[str, Any]:
    """EER, FRR at the FAR points and the shipped thresholds' decisions of one score set."""
    out: dict[str, Any] = {"n_genuine": int(genuine.size), "n_impostor": int(impostor.size)}
    if genuine.size == 0 or impostor.size == 0:
        out["skipped"] = "no genuine or no impostor scores"
        return out
    rate, thr = eer(genuine, impostor)
    out["eer"] = rate
    out["eer_threshold"] = thr
    out["genuine_mean"] = float(genuine.mean())
    out["impostor_mean"] = float(impostor.mean())
    out["impostor_max"] = float(impostor.max())
    for far in FAR_POINTS:
        frr, t = frr_at_far(genuine, impostor, far)
        out[f"frr_at_far_{far:g}"] = {"frr": frr, "threshold": t}
    if matcher is not None:
        far_a, frr_a = far_frr_at(genuine, impostor, matcher.accept_threshold)
        far_v, frr_v = far_frr_at(genuine, impostor, matcher.verify_threshold)
        out["at_shipped_thresholds"] = {
            "accept_threshold": matcher.accept_threshold,
            "reject_threshold": matcher.reject_threshold,
            "far_accept": far_a,
            "frr_accept": frr_a,
            "verify_threshold": matcher.verify_threshold,
            "claim_far": far_v,
            "claim_frr": frr_v,
            "genuine_decisions": _decisions(genuine, matcher),
            "impostor_decisions": _decisions(impostor, matcher),
        }
    return out


def _verification(
    emb: np.ndarray,
    beats: _Beats,
    t_labels: np.ndarray,
    t_matrix: np.ndarray,
    matchers: dict[str, Any],
) -> dict[str, Any]:
    """Single-beat and fused figures of probes ``emb`` (rows of ``beats``) against the
    templates (``t_labels`` (U,) subjects, ``t_matrix`` (U, dim) unit rows); ``matchers``:
    the shipped decision rule for ``"single"`` and ``"fused"`` probes (or None)."""
    scores = emb @ t_matrix.T
    g1, i1 = split_scores(scores, beats.subject, t_labels)
    probes, last = _fused(emb, beats.record, FUSE_BEATS)
    fscores = probes @ t_matrix.T
    gk, ik = split_scores(fscores, beats.subject[last], t_labels)
    out: dict[str, Any] = {
        "n_templates": int(t_labels.size),
        "n_probes_single": int(emb.shape[0]),
        "n_probes_fused": int(probes.shape[0]),
        "single": _rates(g1, i1, matchers.get("single")),
        "fused": _rates(gk, ik, matchers.get("fused")),
    }

    def eer_of(sel: np.ndarray, fsel: np.ndarray) -> dict[str, float | None]:
        g, i = split_scores(scores[sel], beats.subject[sel], t_labels)
        gf, if_ = split_scores(fscores[fsel], beats.subject[last][fsel], t_labels)
        return {
            "eer_single": eer(g, i)[0] if g.size and i.size else None,
            "eer_fused": eer(gf, if_)[0] if gf.size and if_.size else None,
        }

    by_session = {
        str(int(v)): eer_of(beats.session == v, beats.session[last] == v)
        for v in np.unique(beats.session)
    }
    out["by_fs_hz"] = {
        f"{v:g}": eer_of(beats.fs_hz == v, beats.fs_hz[last] == v) for v in np.unique(beats.fs_hz)
    }
    out["by_session"] = by_session
    per_subject = {}
    for j, lab in enumerate(t_labels):
        own = beats.subject == lab
        g = scores[own, j]
        i = scores[~own, j]
        per_subject[str(int(lab))] = {
            "eer_single": eer(g, i)[0] if g.size and i.size else None,
            "genuine_mean": float(g.mean()) if g.size else None,
        }
    out["per_subject"] = per_subject
    measured = [k for k, v in per_subject.items() if v["eer_single"] is not None]
    worst = max(measured, key=lambda k: _or(per_subject[k]["eer_single"], -1.0), default=None)
    out["worst_subject"] = None if worst is None else {"subject": int(worst), **per_subject[worst]}
    values = np.array([per_subject[k]["eer_single"] for k in measured])
    out["per_subject_eer_single_median"] = float(np.median(values)) if values.size else None
    out["per_subject_eer_single_mean"] = float(values.mean()) if values.size else None
    if worst is not None and len(measured) > 2 and _or(per_subject[worst]["eer_single"], 0) > 0:
        # one person whose sessions differ a lot can dominate a pooled EER: the same figures
        # without that person (probes and template) show whether it is one or many
        w = int(worst)
        keep_t = t_labels != w
        sel, fsel = beats.subject != w, beats.subject[last] != w
        g, i = split_scores(scores[sel][:, keep_t], beats.subject[sel], t_labels[keep_t])
        gf, if_ = split_scores(
            fscores[fsel][:, keep_t], beats.subject[last][fsel], t_labels[keep_t]
        )
        out["without_worst_subject"] = {
            "subject": w,
            "eer_single": eer(g, i)[0] if g.size and i.size else None,
            "eer_fused": eer(gf, if_)[0] if gf.size and if_.size else None,
        }
    return out


def _identification(
    emb: np.ndarray, labels: np.ndarray, g_labels: np.ndarray, g_matrix: np.ndarray, matcher: Any
) -> dict[str, Any]:
    """Best-match decisions of probes against a gallery: accepted as anyone, as the right
    person (label in the gallery) or as someone else; and the decision counts."""
    if emb.shape[0] == 0 or g_labels.size == 0:
        return {"n_probes": int(emb.shape[0]), "gallery_size": int(g_labels.size)}
    s = emb @ g_matrix.T
    best = np.argmax(s, axis=1)
    top = s[np.arange(s.shape[0]), best]
    accepted = top >= matcher.accept_threshold
    right = g_labels[best] == labels
    return {
        "n_probes": int(emb.shape[0]),
        "gallery_size": int(g_labels.size),
        "accepted_as_anyone": float(accepted.mean()),
        "accepted_as_self": float((accepted & right).mean()),
        "accepted_as_someone_else": float((accepted & ~right).mean()),
        "rank1_correct": float(right.mean()),
        "decisions": _decisions(top, matcher),
        "best_score_max": float(top.max()),
        "best_score_mean": float(top.mean()),
    }


# --- R-peak detection -----------------------------------------------------------------------


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_records: int = 0
    signal_s: float = 0.0
    abs_err_ms: list[float] | None = None

    def add(self, other: _Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.n_records += other.n_records
        self.signal_s += other.signal_s
        if other.abs_err_ms:
            self.abs_err_ms = (self.abs_err_ms or []) + other.abs_err_ms

    def summary(self) -> dict[str, Any]:
        sens, ppv = sensitivity_ppv(self.tp, self.fp, self.fn)
        err = np.asarray(self.abs_err_ms or [], np.float64)
        return {
            "sensitivity": sens,
            "ppv": ppv,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "n_records": self.n_records,
            "signal_s": self.signal_s,
            "timing_error_ms_median": float(np.median(err)) if err.size else None,
            "timing_error_ms_p95": float(np.percentile(err, 95)) if err.size else None,
        }


def _score_detection(
    true_idx: np.ndarray, detected: np.ndarray, fs_hz: float, n_samples: int | None = None
) -> _Counts:
    """Match within +-50 ms. With ``n_samples`` (the record length), true and detected peaks
    in the record's last :data:`END_GUARD_S` are left out: a detector can only confirm an R
    peak once some samples after it have arrived, and the record ends there, not the beat."""
    t = np.asarray(true_idx, np.int64)
    d = np.asarray(detected, np.int64)
    if n_samples is not None:
        end = n_samples - END_GUARD_S * fs_hz
        t, d = t[t < end], d[d < end]
    it, id_ = match_peak_pairs(t, d, TOLERANCE_S * fs_hz)
    tp = int(it.size)
    err = np.abs(d[id_] - t[it]).astype(np.float64)
    return _Counts(
        tp=tp,
        fp=int(d.size) - tp,
        fn=int(t.size) - tp,
        n_records=1,
        abs_err_ms=(1e3 * err / fs_hz).tolist(),
    )


@dataclass(frozen=True)
class _Noise:
    """One noise condition of the R-peak section: ``kind`` "session" (the session's own
    noise), "mix" (the session's noise mix rescaled to ``snr_db``) or "muscle" (EMG only, at
    ``snr_db``)."""

    kind: str
    snr_db: float | None = None

    @property
    def key(self) -> str:
        return self.kind if self.snr_db is None else f"{self.kind}_{self.snr_db:g}dB"

    def session(self, subject: Any) -> Any:
        sess = subject_session(subject, DETECTION_SESSION)
        if self.kind != "muscle":
            return sess
        # muscle noise alone: no wander, drift, mains or motion; a floor keeps the mix
        # non-empty for sessions recorded without EMG, the SNR rescale sets its level anyway
        return replace(
            sess,
            baseline_mV=0.0,
            electrode_drift_mV=0.0,
            powerline_mV=0.0,
            motion_mV=0.0,
            emg_mV=max(sess.emg_mV, 0.01),
        )


DETECTION_NOISE: tuple[_Noise, ...] = (
    _Noise("session"),
    *(_Noise("mix", snr) for snr in DETECTION_SNR_DB if snr is not None),
    *(_Noise("muscle", snr) for snr in DETECTION_MUSCLE_SNR_DB),
)


def _qrs_band_snr_db(subject: Any, session: Any, noisy: np.ndarray, fs_hz: float) -> float:
    """SNR (dB) inside the QRS detection band (5-15 Hz): clean ECG vs the added noise, both
    band-passed (zero-phase Butterworth, order 2). The broadband SNR of the simulator is
    dominated by baseline wander, which this band removes."""
    clean = simulate_record(
        subject, session, fs_hz=fs_hz, duration_s=noisy.size / fs_hz, snr_db=math.inf
    ).signal.astype(np.float64)
    sos = butter(2, (5.0, 15.0), btype="bandpass", fs=fs_hz, output="sos")
    c = sosfiltfilt(sos, clean)
    n = sosfiltfilt(sos, noisy.astype(np.float64) - clean)
    pn = float(np.mean(n**2))
    return math.inf if pn == 0 else float(10 * np.log10(np.mean(c**2) / pn))


def _r_peaks_simulated(sizes: EvalSizes, seed: int, progress: bool) -> dict[str, Any]:
    from engines.ecg.frontend import detect_r_peaks

    cells: dict[tuple[float, str], _Counts] = {}
    band_snr: dict[str, list[float]] = {n.key: [] for n in DETECTION_NOISE}
    worst: dict[str, Any] | None = None
    for fs in DETECTION_FS_HZ:
        _progress(progress, f"R peaks at {fs:g} Hz: {len(sizes.detection_subjects)} subjects")
        for noise in DETECTION_NOISE:
            cell = _Counts()
            for s in sizes.detection_subjects:
                subject = cohort_subject(int(s), seed=seed)
                session = noise.session(subject)
                rec = simulate_record(
                    subject, session, fs_hz=fs, duration_s=sizes.detection_s, snr_db=noise.snr_db
                )
                det = detect_r_peaks(rec.signal, rec.fs_hz)
                c = _score_detection(rec.r_peaks, det, rec.fs_hz, rec.signal.size)
                c.signal_s = rec.duration_s
                cell.add(c)
                if fs == DETECTION_FS_HZ[1]:
                    band_snr[noise.key].append(
                        _qrs_band_snr_db(subject, session, rec.signal, rec.fs_hz)
                    )
                sens, ppv = sensitivity_ppv(c.tp, c.fp, c.fn)
                low = min(v for v in (sens, ppv, 1.0) if v is not None)
                if worst is None or low < worst["min_sens_ppv"]:
                    worst = {
                        "subject": int(s),
                        "fs_hz": fs,
                        "noise": noise.key,
                        "sensitivity": sens,
                        "ppv": ppv,
                        "min_sens_ppv": low,
                    }
            cells[(fs, noise.key)] = cell

    def pooled(keys: Iterable[tuple[float, str]]) -> dict[str, Any]:
        total = _Counts()
        for key in keys:
            total.add(cells[key])
        return total.summary()

    by_noise = {}
    for noise in DETECTION_NOISE:
        entry = pooled((fs, noise.key) for fs in DETECTION_FS_HZ)
        snrs = np.array(band_snr[noise.key])
        entry["qrs_band_snr_db_median"] = float(np.median(snrs)) if snrs.size else None
        entry["qrs_band_snr_db_min"] = float(snrs.min()) if snrs.size else None
        by_noise[noise.key] = entry
    keys = [n.key for n in DETECTION_NOISE]
    return {
        "session": DETECTION_SESSION,
        "subjects": list(sizes.detection_subjects),
        "duration_s_per_record": sizes.detection_s,
        "tolerance_ms": 1e3 * TOLERANCE_S,
        "end_guard_s": END_GUARD_S,
        "noise_note": "session: the session's own noise; mix_XdB: that noise mix rescaled to a "
        "broadband SNR of X dB (devices.ecg_sim definition: clean power / all noise power); "
        "muscle_XdB: EMG alone at X dB. qrs_band_snr_db_*: the SNR inside the 5-15 Hz QRS "
        f"band, over the {DETECTION_FS_HZ[1]:g} Hz records",
        "overall_note": "the target pool: the session's own noise and the rescaled mix "
        "(30-10 dB) at every rate; the muscle-noise stress levels are reported apart",
        "overall": pooled(k for k in cells if not k[1].startswith("muscle")),
        "muscle_stress": pooled(k for k in cells if k[1].startswith("muscle")),
        "by_fs_hz": {f"{fs:g}": pooled((fs, k) for k in keys) for fs in DETECTION_FS_HZ},
        "by_noise": by_noise,
        "cells": {
            f"{fs:g}Hz_{k}": cells[(fs, k)].summary() for fs in DETECTION_FS_HZ for k in keys
        },
        "worst_record": worst,
    }


def _neurokit_peaks(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    import neurokit2 as nk

    cleaned = nk.ecg_clean(np.asarray(signal, np.float64), sampling_rate=fs_hz, method="neurokit")
    _, info = nk.ecg_peaks(cleaned, sampling_rate=fs_hz, method="neurokit")
    return np.asarray(info["ECG_R_Peaks"], np.int64)


def _mean_hr_bpm(peaks: np.ndarray, fs_hz: float) -> float | None:
    if peaks.size < 2:
        return None
    rr = np.diff(np.sort(peaks)) / fs_hz
    return float(60.0 / rr.mean())


def _r_peaks_real(data_dir: Path, progress: bool) -> dict[str, Any]:
    try:
        from devices.ecg import REAL_RECORDINGS, load_real_recording
    except ImportError as exc:
        return {"skipped": f"devices.ecg not available: {exc}"}
    try:
        import neurokit2  # noqa: F401
    except ImportError:
        return {"skipped": "neurokit2 not installed (pip install 'sigstream[eval]')"}
    from engines.ecg.frontend import detect_r_peaks

    if not Path(data_dir).is_dir():
        return {"skipped": f"no real recordings: {data_dir} is absent (run `make ecg-data`)"}
    out: dict[str, Any] = {
        "data_dir": str(data_dir),
        "reference": "neurokit2.ecg_clean + ecg_peaks, method 'neurokit'",
        "note": "agreement, not accuracy: sensitivity = neurokit2's R peaks we also found, "
        "ppv = our R peaks neurokit2 also found; peaks in the last "
        f"{END_GUARD_S:g} s are left out; beats_* count every peak",
        "tolerance_ms": 1e3 * TOLERANCE_S,
        "recordings": {},
    }
    pooled = _Counts()
    for name in REAL_RECORDINGS:
        try:
            rec = load_real_recording(name, data_dir)
        except (OSError, ValueError) as exc:
            out["recordings"][name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        _progress(progress, f"real recording {name}: {rec.duration_s:.0f} s at {rec.fs_hz:g} Hz")
        t0 = time.perf_counter()
        # the front end takes 100..2000 Hz: a faster recording is decimated by an integer
        # factor first, as a gateway would have to, and the peaks mapped back
        factor = max(1, math.ceil(rec.fs_hz / _FRONTEND_MAX_FS_HZ))
        x = rec.signal if factor == 1 else resample_poly(rec.signal, 1, factor)
        ours = np.asarray(detect_r_peaks(x, rec.fs_hz / factor), np.int64) * factor
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = _neurokit_peaks(rec.signal, rec.fs_hz)
        t_ref = time.perf_counter() - t0
        c = _score_detection(ref, ours, rec.fs_hz, rec.signal.size)
        c.signal_s = rec.duration_s
        pooled.add(c)
        entry = c.summary()
        entry.update(
            {
                "fs_hz": rec.fs_hz,
                "decimated_by": factor,
                "duration_s": rec.duration_s,
                "beats_ours": int(ours.size),
                "beats_neurokit2": int(ref.size),
                "mean_hr_bpm_ours": _mean_hr_bpm(ours, rec.fs_hz),
                "mean_hr_bpm_neurokit2": _mean_hr_bpm(ref, rec.fs_hz),
                "seconds_ours": t_ours,
                "seconds_neurokit2": t_ref,
            }
        )
        out["recordings"][name] = entry
    out["overall"] = pooled.summary()
    return out


# --- the report -----------------------------------------------------------------------------


def _closed_set(module: Any, classes: Sequence[int], beats: _Beats, batch: int) -> dict[str, Any]:
    """The paper's table on the good beats (what the service classifies), and the same
    figures on every detected beat, refused ones included (``all_beats``)."""
    logits = _run_model(module, beats.samples, batch)
    index = {int(c): i for i, c in enumerate(classes)}
    y_true = np.array([index[int(s)] for s in beats.subject], np.int64)
    y_pred = np.argmax(logits, axis=1).astype(np.int64) if len(beats) else y_true
    ok = beats.ok
    rep = classification_report(y_true[ok], y_pred[ok], len(classes))
    per_subject = {
        str(int(classes[c["class"]])): {
            "accuracy": c["recall"],
            "precision": c["precision"],
            "f1": c["f1"],
            "beats": c["support"],
        }
        for c in rep["per_class"]
    }
    measured = [k for k, v in per_subject.items() if v["accuracy"] is not None]
    worst = min(measured, key=lambda k: per_subject[k]["accuracy"]) if measured else None
    correct = y_true == y_pred

    def acc(sel: np.ndarray) -> float | None:
        return float(correct[sel].mean()) if sel.any() else None

    everything = classification_report(y_true, y_pred, len(classes))
    return {
        "n_beats": rep["n"],
        "accuracy": rep["accuracy"],
        "precision": rep["macro_precision"],
        "recall": rep["macro_recall"],
        "f1": rep["macro_f1"],
        "paper": dict(PAPER_FIGURES),
        "accuracy_by_session": {
            str(int(v)): acc(ok & (beats.session == v)) for v in np.unique(beats.session)
        },
        "accuracy_by_fs_hz": {
            f"{v:g}": acc(ok & (beats.fs_hz == v)) for v in np.unique(beats.fs_hz)
        },
        "per_subject": per_subject,
        "worst_subject": None if worst is None else {"subject": int(worst), **per_subject[worst]},
        "subjects_without_good_beats": [k for k in per_subject if k not in measured],
        "all_beats": {
            "note": "every detected beat, quality-refused ones included (the paper did not "
            "filter beats)",
            "n_beats": everything["n"],
            "accuracy": everything["accuracy"],
            "precision": everything["macro_precision"],
            "recall": everything["macro_recall"],
            "f1": everything["macro_f1"],
            "per_subject_accuracy": {
                str(int(classes[c["class"]])): c["recall"] for c in everything["per_class"]
            },
        },
        "classes": [int(c) for c in classes],
        "confusion": rep["confusion"],
    }


def evaluate_ecg(
    *,
    json_path: Path | str | None = None,
    seed: int = DEFAULT_SEED,
    quick: bool = False,
    progress: bool = True,
    data_dir: Path | str | None = None,
    sizes: EvalSizes | None = None,
    sections: Sequence[str] = SECTIONS,
    threads: int = 1,
    batch: int = 512,
) -> dict[str, Any]:
    """Run the ECG evaluation, print a table to stdout, write the JSON report; return it.

    ``seed``: the cohort seed (:func:`devices.ecg_sim.cohort_subject`); 0 is the shipped one.
    ``quick``: :meth:`EvalSizes.quick` sizes (ignored when ``sizes`` is given).
    ``data_dir``: the extracted real recordings (default ``.data/ecg`` of the repository).
    ``sections``: a subset of :data:`SECTIONS`. ``threads``: torch intra-op threads.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {SECTIONS}")
    sz = sizes or (EvalSizes.quick() if quick else EvalSizes())
    if data_dir is None:
        data_dir = Path(__file__).resolve().parents[2] / ".data" / "ecg"
    data_dir = Path(data_dir)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    report: dict[str, Any] = {
        "task": "ecg",
        "quick": bool(quick),
        "definitions": {
            "split": "by session: classifier trained on session 0 of subjects 0..17, "
            "embedding on subjects 100..399; enrolment from session 0, tests on sessions 1-2",
            "eer": "interpolated crossing of FAR and FRR (engines.ecg.metrics); scores are "
            "cosine similarities, accept when score >= threshold",
            "fused": f"normalised mean of {FUSE_BEATS} consecutive good beats of one record "
            "(sliding by one beat, engines.ecg.matcher.fuse)",
            "enrolment": f"first {ENROL_BEATS} good beats of session {ENROL_SESSION}, "
            "TemplateStore (normalised mean of unit embeddings)",
            "identification_accept": "best score over the gallery >= the card's accept_threshold",
            "r_peak_match": f"one-to-one within +-{1e3 * TOLERANCE_S:g} ms; sensitivity = "
            "TP/(TP+FN), ppv = TP/(TP+FP)",
        },
        "seeds": {"cohort": seed, "torch": seed},
        "sizes": asdict(sz),
        "targets": {},
    }
    modules: dict[str, Any] = {}
    threads_before = None
    held: list[_Beats] = []

    def seen_beats() -> _Beats:
        """Every beat of sessions 1-2 of subjects 0..17 (closed set and verification share
        them), made once."""
        if not held:
            held.append(
                _collect_beats(
                    CLOSED_SET_SUBJECTS,
                    TEST_SESSIONS,
                    duration_s=sz.test_s,
                    fs_hz=sz.test_fs_hz,
                    seed=seed,
                    keep_refused=True,
                )
            )
        return held[0]

    needs_models = {"closed_set", "verification", "open_set"} & set(sections)
    try:
        if needs_models:
            import torch

            from engines.ecg.specs import ECG_SPECS

            threads_before = torch.get_num_threads()
            torch.set_num_threads(max(1, int(threads)))
            torch.manual_seed(seed)
            report["models"] = {}
            for key in ("cnn", "embedding"):
                if key == "cnn" and "closed_set" not in sections:
                    continue
                if key == "embedding" and not {"verification", "open_set"} & set(sections):
                    continue
                module, info = _load(ECG_SPECS[key])
                report["models"][key] = info
                if module is None:
                    _progress(progress, f"skipping {key}: {info['skipped']}")
                else:
                    modules[key] = module

        if "closed_set" in sections:
            t0 = time.perf_counter()
            if "cnn" in modules:
                from engines.ecg.specs import ECG_SPECS

                _progress(progress, "closed set: beats of sessions 1-2, subjects 0..17")
                test = seen_beats()
                classes = ECG_SPECS["cnn"].extra.get("classes", list(CLOSED_SET_SUBJECTS))
                entry = _closed_set(modules["cnn"], classes, test, batch)
                entry["data"] = test.summary()
                report["closed_set"] = entry
            else:
                report["closed_set"] = {"skipped": report["models"]["cnn"]["skipped"]}
            timing["closed_set"] = time.perf_counter() - t0

        if {"verification", "open_set"} & set(sections):
            t0 = time.perf_counter()
            if "embedding" in modules:
                _identity_sections(
                    report, modules["embedding"], sz, seed, sections, batch, progress, seen_beats
                )
            else:
                why = report["models"]["embedding"]["skipped"]
                for name in ("verification", "open_set"):
                    if name in sections:
                        report[name] = {"skipped": why}
            timing["verification_and_open_set"] = time.perf_counter() - t0

        if "r_peaks" in sections:
            t0 = time.perf_counter()
            report["r_peaks"] = _r_peaks_simulated(sz, seed, progress)
            timing["r_peaks"] = time.perf_counter() - t0
        if "real_recordings" in sections:
            t0 = time.perf_counter()
            report["real_recordings"] = _r_peaks_real(data_dir, progress)
            timing["real_recordings"] = time.perf_counter() - t0
    finally:
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)

    report["targets"] = _targets(report)
    timing["total"] = time.perf_counter() - t_start
    report["meta"] = _meta(seed, threads, data_dir)
    report["timing_s"] = timing
    report = jsonable(report)
    print(format_table(report))
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        _progress(progress, f"wrote {path}")
    return report


def _identity_sections(
    report: dict[str, Any],
    module: Any,
    sz: EvalSizes,
    seed: int,
    sections: Sequence[str],
    batch: int,
    progress: bool,
    seen_beats: Callable[[], _Beats],
) -> None:
    """Enrol, then the verification and open-set sections (they share one gallery)."""
    from engines.ecg.matcher import Matcher
    from engines.ecg.specs import ECG_SPECS
    from engines.ecg.templates import TemplateStore

    spec = ECG_SPECS["embedding"]
    model_id = spec.weights_sha256()
    card = spec.card()
    # the card calibrates thresholds per number of fused beats: single beats are decided with
    # the k = 1 row, fused probes with the k = FUSE_BEATS row, as the service would
    matchers: dict[str, Any] = {}
    thresholds: dict[str, Any] = {"card_fuse_beats": card.get("fuse_beats")}
    for mode, k in (("single", 1), ("fused", FUSE_BEATS)):
        try:
            m = Matcher.from_card(card, fuse_beats=k)
            matchers[mode] = m
            thresholds[mode] = {
                "fuse_beats": k,
                "accept_threshold": m.accept_threshold,
                "reject_threshold": m.reject_threshold,
            }
        except (KeyError, ValueError) as exc:
            matchers[mode] = None
            thresholds[mode] = {"skipped": f"no thresholds for k={k} in the card: {exc!r}"}
    open_set = OPEN_SET_SUBJECTS[: sz.n_open_set]
    impostors = IMPOSTOR_SUBJECTS[: sz.n_impostors]

    def embed(b: _Beats) -> np.ndarray:
        return _run_model(module, b.samples, batch)

    with tempfile.TemporaryDirectory(prefix="sigstream-eval-ecg-") as tmp:
        with TemplateStore(Path(tmp) / "templates.sqlite", dim=spec.output_shape[0]) as store:
            _progress(progress, f"enrolling {len(CLOSED_SET_SUBJECTS) + len(open_set)} subjects")
            enrol = _collect_beats(
                (*CLOSED_SET_SUBJECTS, *open_set),
                (ENROL_SESSION,),
                duration_s=sz.enrol_s,
                fs_hz=(sz.enrol_fs_hz,),
                seed=seed,
                max_beats=ENROL_BEATS,
            )
            enrol_info = _enrol(store, model_id, enrol, embed(enrol))
            enrol_info["data"] = enrol.summary()
            seen_labels, seen_t = _templates(store, model_id, CLOSED_SET_SUBJECTS)
            open_labels, open_t = _templates(store, model_id, open_set)
            all_labels, all_t = _templates(store, model_id, (*CLOSED_SET_SUBJECTS, *open_set))

    # the open-set ratio needs the seen cohort's EER, so this runs for either section
    _progress(progress, "verification: sessions 1-2 of subjects 0..17")
    all_seen = seen_beats()
    seen = all_seen.take(all_seen.ok)
    ver = _verification(embed(seen), seen, seen_labels, seen_t, matchers)
    ver["enrolment"] = enrol_info
    ver["thresholds"] = thresholds
    ver["data"] = seen.summary()
    if "verification" in sections:
        report["verification"] = ver
    if "open_set" not in sections:
        return

    _progress(progress, f"open set: session 1 of {len(open_set)} new subjects")
    new = _collect_beats(
        open_set, (OPEN_SET_TEST_SESSION,), duration_s=sz.test_s, fs_hz=sz.test_fs_hz, seed=seed
    )
    new_emb = embed(new)
    op = _verification(new_emb, new, open_labels, open_t, matchers)
    op["thresholds"] = thresholds
    op["data"] = new.summary()
    ratio: dict[str, float | None] = {}
    for mode in ("single", "fused"):
        a, b = op[mode].get("eer"), ver[mode].get("eer")
        ratio[mode] = a / b if a is not None and b else None
    op["eer_ratio_to_seen"] = ratio
    op["eer_seen"] = {mode: ver[mode].get("eer") for mode in ("single", "fused")}

    _progress(progress, f"impostors: session 1 of {len(impostors)} never-enrolled people")
    imp = _collect_beats(
        impostors, (OPEN_SET_TEST_SESSION,), duration_s=sz.test_s, fs_hz=sz.test_fs_hz, seed=seed
    )
    imp_emb = embed(imp)
    ip, ilast = _fused(imp_emb, imp.record, FUSE_BEATS)
    np_, nlast = _fused(new_emb, new.record, FUSE_BEATS)
    probes = {
        "impostor_identification": {
            "single": (imp_emb, imp.subject),
            "fused": (ip, imp.subject[ilast]),
        },
        "open_set_identification": {
            "single": (new_emb, new.subject),
            "fused": (np_, new.subject[nlast]),
        },
    }
    for name, by_mode in probes.items():
        entry: dict[str, Any] = {"gallery": "seen cohort + open set"}
        for mode, (e, lab) in by_mode.items():
            m = matchers[mode]
            entry[mode] = (
                _identification(e, lab, all_labels, all_t, m)
                if m is not None
                else {"skipped": thresholds[mode]["skipped"]}
            )
        op[name] = entry
    op["impostor_identification"]["subjects"] = [int(s) for s in impostors]
    op["impostor_identification"]["data"] = imp.summary()
    report["open_set"] = op


def _target(value: Any, bound: float, kind: str) -> dict[str, Any]:
    met = None if value is None else (value >= bound if kind == "min" else value <= bound)
    return {"value": value, f"target_{kind}": bound, "met": met}


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    cs = report.get("closed_set", {})
    if "accuracy" in cs:
        t["closed_set_accuracy"] = _target(
            cs["accuracy"], TARGETS["closed_set_accuracy_min"], "min"
        )
    ver = report.get("verification", {})
    if "single" in ver:
        t["seen_eer_single"] = _target(
            ver["single"].get("eer"), TARGETS["seen_eer_single_max"], "max"
        )
        t["seen_eer_fused"] = _target(ver["fused"].get("eer"), TARGETS["seen_eer_fused_max"], "max")
    op = report.get("open_set", {})
    if "eer_ratio_to_seen" in op:
        for mode in ("single", "fused"):
            t[f"open_set_eer_ratio_{mode}"] = _target(
                op["eer_ratio_to_seen"][mode], TARGETS["open_set_eer_ratio_max"], "max"
            )
    ident = op.get("impostor_identification", {})
    if "single" in ident:
        for mode in ("single", "fused"):
            t[f"impostor_identification_accept_{mode}"] = _target(
                ident[mode].get("accepted_as_anyone"),
                TARGETS["impostor_identification_accept_max"],
                "max",
            )
    rp = report.get("r_peaks", {})
    if "overall" in rp:
        t["r_peak_sensitivity"] = _target(
            rp["overall"]["sensitivity"], TARGETS["r_peak_sensitivity_min"], "min"
        )
        t["r_peak_ppv"] = _target(rp["overall"]["ppv"], TARGETS["r_peak_ppv_min"], "min")
    return t


def _meta(seed: int, threads: int, data_dir: Path) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in ("sigstream", "numpy", "scipy", "torch", "neurokit2")},
        "seed": seed,
        "torch_threads": threads,
        "data_dir": str(data_dir),
        "command": "sigstream eval ecg",
    }


# --- printing -------------------------------------------------------------------------------


def _pct(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f} %"


def format_table(report: dict[str, Any]) -> str:
    """The readable summary printed by :func:`evaluate_ecg`."""
    lines = [
        f"ECG evaluation — cohort seed {report['seeds']['cohort']}"
        + (" (quick)" if report.get("quick") else "")
    ]
    cs = report.get("closed_set")
    if cs is not None:
        lines.append("")
        if "skipped" in cs:
            lines.append(f"closed set: skipped: {cs['skipped']}")
        else:
            p = cs["paper"]
            lines.append(f"closed set, 18 subjects, sessions 1-2 ({cs['n_beats']} beats):")
            lines.append(f"  {'':<10}{'ours':>10}{'paper':>10}")
            for key in ("accuracy", "precision", "recall", "f1"):
                lines.append(f"  {key:<10}{_pct(cs[key]):>10}{_pct(p[key], 1):>10}")
            w = cs["worst_subject"]
            if w is not None:
                lines.append(
                    f"  worst subject {w['subject']}: accuracy {_pct(w['accuracy'])} "
                    f"({w['beats']} beats)"
                )
            a = cs["all_beats"]
            d = cs["data"]
            lines.append(
                f"  all {a['n_beats']} detected beats (quality-refused too): accuracy "
                f"{_pct(a['accuracy'])}, F1 {_pct(a['f1'])}; refused "
                f"{d['beats_refused_by_quality']}"
            )
            if cs["subjects_without_good_beats"]:
                lines.append(f"  no good beat at all: subjects {cs['subjects_without_good_beats']}")
    for name, title in (
        ("verification", "verification, seen subjects 0..17"),
        ("open_set", "open set, subjects 1000.."),
    ):
        v = report.get(name)
        if v is None:
            continue
        lines.append("")
        if "skipped" in v:
            lines.append(f"{title}: skipped: {v['skipped']}")
            continue
        lines.append(f"{title} ({v['n_templates']} templates):")
        e = v.get("enrolment")
        if e:
            lines.append(
                f"  gallery: enrolled {e['enrolled']} "
                f"(not enrolled: {e['not_enrolled'] or 'none'}), "
                f"{ENROL_BEATS} beats in {_fmt(e['seconds_to_enrol_median'], '.0f')} s median, "
                f"{_fmt(e['seconds_to_enrol_max'], '.0f')} s max"
            )
        for mode in ("single", "fused"):
            r = v[mode]
            if "eer" not in r:
                lines.append(f"  {mode:<7} skipped: {r.get('skipped')}")
                continue
            frr = "  ".join(
                f"FRR@FAR{100 * far:g}% {_pct(r[f'frr_at_far_{far:g}']['frr'])}"
                for far in FAR_POINTS
            )
            lines.append(
                f"  {mode:<7} EER {_pct(r['eer'])}  {frr}  "
                f"({r['n_genuine']} genuine / {r['n_impostor']} impostor)"
            )
            s = r.get("at_shipped_thresholds")
            if s:
                lines.append(
                    f"          at accept {s['accept_threshold']:.3f}: FAR {_pct(s['far_accept'])}"
                    f" FRR {_pct(s['frr_accept'])}; genuine {s['genuine_decisions']}"
                )
                lines.append(
                    f"          claims at verify {s['verify_threshold']:.3f}: FAR "
                    f"{_pct(s['claim_far'])} FRR {_pct(s['claim_frr'])}"
                )
        ww = v.get("without_worst_subject")
        if ww:
            lines.append(
                f"  per-subject EER median {_pct(v['per_subject_eer_single_median'])}; without "
                f"subject {ww['subject']} (EER {_pct(v['worst_subject']['eer_single'])}): "
                f"single {_pct(ww['eer_single'])}, fused {_pct(ww['eer_fused'])}"
            )
        if name == "open_set":
            ratio = v["eer_ratio_to_seen"]
            lines.append(
                f"  EER ratio to seen: single {_fmt(ratio['single'])}, fused {_fmt(ratio['fused'])}"
            )
            ident = v.get("impostor_identification", {})
            if "single" in ident:
                lines.append(
                    f"  never-enrolled impostors accepted as anyone: single "
                    f"{_pct(ident['single'].get('accepted_as_anyone'), 3)}, fused "
                    f"{_pct(ident['fused'].get('accepted_as_anyone'), 3)} "
                    f"(gallery {ident['fused'].get('gallery_size')})"
                )
    rp = report.get("r_peaks")
    if rp is not None:
        lines.append("")
        lines.append(f"R peaks (simulated, +-{rp['tolerance_ms']:g} ms), sensitivity / PPV in %:")
        snrs = list(rp["by_noise"])
        lines.append(f"  {'fs':>8}" + "".join(f"{s:>13}" for s in snrs))
        for fs in rp["by_fs_hz"]:
            row = f"  {fs + ' Hz':>8}"
            for s in snrs:
                c = rp["cells"][f"{fs}Hz_{s}"]
                sens = _fmt(None if c["sensitivity"] is None else 100 * c["sensitivity"], ".1f")
                ppv = _fmt(None if c["ppv"] is None else 100 * c["ppv"], ".1f")
                row += f"{sens + '/' + ppv:>13}"
            lines.append(row)
        row = f"  {'QRS SNR':>8}"
        for s in snrs:
            row += f"{_fmt(rp['by_noise'][s]['qrs_band_snr_db_median'], '.1f') + ' dB':>13}"
        lines.append(row + "  (median SNR in the 5-15 Hz band)")
        for label, key in (("session + mix", "overall"), ("muscle stress", "muscle_stress")):
            o = rp[key]
            lines.append(
                f"  pooled {label}: sensitivity {_pct(o['sensitivity'], 3)}, PPV "
                f"{_pct(o['ppv'], 3)} ({o['tp'] + o['fn']} beats)"
            )
    real = report.get("real_recordings")
    if real is not None:
        lines.append("")
        if "skipped" in real:
            lines.append(f"real recordings: skipped: {real['skipped']}")
        else:
            lines.append("real recordings, ours vs neurokit2:")
            for name, e in real["recordings"].items():
                if "skipped" in e:
                    lines.append(f"  {name}: skipped: {e['skipped']}")
                    continue
                lines.append(
                    f"  {name:<24} sens {_pct(e['sensitivity'])} PPV {_pct(e['ppv'])}  beats "
                    f"{e['beats_ours']}/{e['beats_neurokit2']}  HR "
                    f"{_fmt(e['mean_hr_bpm_ours'], '.1f')}/"
                    f"{_fmt(e['mean_hr_bpm_neurokit2'], '.1f')}"
                )
    t = report.get("targets", {})
    if t:
        lines.append("")
        for key, v in t.items():
            bound = v.get("target_min", v.get("target_max"))
            op = ">=" if "target_min" in v else "<="
            state = "—" if v["met"] is None else ("met" if v["met"] else "NOT met")
            lines.append(f"target {key} {op} {bound}: {_fmt(v['value'], '.4f')} -> {state}")
    lines.append(f"total {report['timing_s']['total']:.0f} s")
    return "\n".join(lines)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def task_metric(model: str, infer: Callable[[np.ndarray], np.ndarray], *, batch: int,
                seconds: float = 60.0, seed: int = 0) -> float:
    """The task metric an engine must leave unchanged (:mod:`engines.gates`), on the cohort's
    session-1 beats with the model's outputs computed by ``infer`` (beats ``(B, 1, 192)``, at
    most ``batch``): ``"embedding"`` the single-beat EER of genuine vs impostor cosine scores
    against templates of each subject's first :data:`ENROL_BEATS` beats; ``"cnn"`` the
    closed-set accuracy."""
    from engines.ecg.data import cohort_beats
    from engines.ecg.train import ENROL_BEATS

    beats = cohort_beats(range(18), [1], duration_s=seconds, seed=seed)
    x = beats.beats[:, None, :].astype(np.float32)
    out = np.concatenate([infer(np.ascontiguousarray(x[i:i + batch]))
                          for i in range(0, len(x), batch)])
    if model == "cnn":
        return float(np.mean(np.argmax(out, axis=1) == beats.subjects))
    emb = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    subjects = np.unique(beats.subjects)
    first = {s: np.flatnonzero(beats.subjects == s)[:ENROL_BEATS] for s in subjects}
    templates = np.stack([emb[first[s]].mean(axis=0) for s in subjects])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    probe = np.ones(len(emb), bool)
    for idx in first.values():
        probe[idx] = False
    scores = emb[probe] @ templates.T
    own = beats.subjects[probe][:, None] == subjects[None, :]
    return float(eer(scores[own], scores[~own])[0])
