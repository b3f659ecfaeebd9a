"""Thresholds and figures of the ECG beat models: embeddings of beats, enrolment templates,
verification and identification error rates, and the calibration of the embedding's thresholds
(:func:`calibrate`), which :func:`engines.ecg.train.train_ecg` writes into the card.

Calibration (embedding): validation subjects 400..449, never trained on. Each is enrolled from
its first :data:`ENROL_BEATS` = 20 good beats of session 0 (template = normalised mean
embedding); the gallery also holds the 18 cohort subjects' templates (session 0), 68 in all
like the service's gallery of cohort + open set. Every good beat of session 1 is scored
(cosine) against all 68 templates. The service *identifies* (best template wins, accepted when
its score clears the threshold), so the false-accept rate that matters is that of the best
score among the *other* 67 templates, not of one impostor template: with ``U`` templates it is
up to ``U`` times larger. Thresholds:
``accept_threshold`` = lowest cosine where that identification FAR <= 0.1 %,
``reject_threshold`` = lowest where it is <= 1 % (so ``reject <= accept``); below it the probe is
rejected, between the two it is "uncertain". A *claim* is checked against one template only
(verification), where the false-accept rate is that of one impostor template:
``verify_threshold`` = lowest cosine where that verification FAR <= 0.1 %; it is lower than
the identification thresholds, so a wearer verified against their own claim is refused far
less often (``frr_at_verify`` against ``frr_at_accept``). The same
is done for probes fused from ``k`` consecutive good beats of one recording (normalised mean,
sliding by one beat), for the ``k`` in :data:`FUSION_KS`, stored in ``thresholds_by_k``; the
top-level thresholds are those of ``fuse_beats`` (the recommended ``k``, 5) and
:meth:`engines.ecg.matcher.Matcher.from_card` picks the row of the ``k`` asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from engines.backends.eager import eager_infer, run_batched
from engines.ecg.data import BeatSet, cohort_beats
from engines.ecg.metrics import eer, frr_at_far, split_scores
from engines.ecg.specs import ECG_SPECS

if TYPE_CHECKING:
    from engines.ecg.train import EcgTrainConfig

__all__ = [
    "ACCEPT_FAR",
    "ENROL_BEATS",
    "FUSION_KS",
    "REJECT_FAR",
    "calibrate",
    "embed",
    "evaluate_cohort",
]

ENROL_BEATS = 20
FUSION_KS = (1, 3, 5, 10)
ACCEPT_FAR = 0.001
REJECT_FAR = 0.01


def embed(model: nn.Module, beats: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Eager outputs of ``model`` for ``beats`` ``(n, 192)``: float32 ``(n, out)``."""
    if beats.shape[0] == 0:
        return np.zeros((0, 0), np.float32)
    was_training = model.training
    model.eval()
    try:
        rows = np.ascontiguousarray(beats, np.float32)[:, None, :]
        return run_batched(eager_infer(model), rows, batch=chunk)
    finally:
        model.train(was_training)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _templates(emb: np.ndarray, subjects: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Unit mean of the first ENROL_BEATS embeddings of each id: ``(len(ids), dim)``."""
    rows = []
    for s in ids:
        e = emb[subjects == s][:ENROL_BEATS]
        rows.append(_unit(_unit(e.astype(np.float64)).mean(axis=0)))
    return np.stack(rows)


def _records(bs: BeatSet) -> np.ndarray:
    """Record id of each row: one per (subject, session, stream rate) stretch."""
    keys = np.stack([bs.subjects, bs.sessions, np.round(bs.fs_hz).astype(np.int64)], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def _fused_probes(
    emb: np.ndarray, subjects: np.ndarray, records: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probes fused from ``k`` consecutive beats of one record (sliding by one beat), as a
    stream's :class:`~engines.ecg.matcher.FusionState` holds them; ``k = 1``: single beats."""
    e = _unit(emb.astype(np.float64))
    if k == 1:
        return e, subjects
    n = e.shape[0]
    starts = np.arange(max(0, n - k + 1))
    starts = starts[records[starts] == records[starts + k - 1]]  # rows of a record are adjacent
    c = np.concatenate([np.zeros((1, e.shape[1])), np.cumsum(e, axis=0)])
    return _unit(c[starts + k] - c[starts]), subjects[starts]


def _verification(
    enrol: BeatSet,
    enrol_emb: np.ndarray,
    probe: BeatSet,
    probe_emb: np.ndarray,
    ks: tuple[int, ...],
) -> dict[int, dict[str, float]]:
    """Per ``k``: verification EER; identification thresholds (FAR of the best non-own score,
    see the module docstring) with their FRR; rank-1 identification accuracy."""
    ids = np.unique(enrol.subjects)
    templates = _templates(enrol_emb, enrol.subjects, ids)
    records = _records(probe)
    out: dict[int, dict[str, float]] = {}
    for k in ks:
        probes, labels = _fused_probes(probe_emb, probe.subjects, records, k)
        scores = probes @ templates.T
        genuine, impostor = split_scores(scores, labels, ids)
        own = labels[:, None] == ids[None, :]
        best_other = np.where(own, -np.inf, scores).max(axis=1)
        rate, t_eer = eer(genuine, impostor)
        frr_a, t_accept = frr_at_far(genuine, best_other, ACCEPT_FAR)
        frr_r, t_reject = frr_at_far(genuine, best_other, REJECT_FAR)
        frr_v, t_verify = frr_at_far(genuine, impostor, ACCEPT_FAR)
        out[k] = {
            "eer": rate,
            "eer_threshold": t_eer,
            "verify_threshold": t_verify,
            "frr_at_verify": frr_v,
            "accept_threshold": t_accept,
            "reject_threshold": min(t_reject, t_accept),
            "frr_at_accept": frr_a,
            "frr_at_reject": frr_r,
            "verification_far_at_accept": float(np.mean(impostor >= t_accept)),
            "identification_accuracy": float(np.mean(ids[np.argmax(scores, axis=1)] == labels)),
            "genuine_mean": float(genuine.mean()),
            "impostor_max": float(impostor.max()),
            "n_probes": int(labels.size),
            "n_impostor": int(impostor.size),
        }
    return out


def _eval_sets(config: EcgTrainConfig) -> tuple[BeatSet, BeatSet]:
    """Cohort enrolment beats (session 0, at start 0) and probe beats (eval sessions)."""
    enrol = cohort_beats(
        config.eval_subjects, (0,), duration_s=config.enrol_duration_s, fs_hz=config.fs_hz
    )
    probe = cohort_beats(
        config.eval_subjects,
        config.eval_sessions,
        duration_s=config.eval_duration_s,
        fs_hz=config.fs_hz,
    )
    return enrol, probe


def calibrate(
    model: nn.Module, config: EcgTrainConfig, ks: tuple[int, ...] = FUSION_KS
) -> dict[int, dict[str, float]]:
    """Thresholds and error rates on the calibration subjects (module docstring), per ``k``.

    The gallery holds the calibration subjects' templates plus those of the
    ``calib_distractors`` (session 0), so a probe's best impostor score is the best of as many
    templates as the service's gallery holds (cohort + open set: 68).
    """
    enrol = cohort_beats(
        tuple(config.calib_subjects) + tuple(config.calib_distractors),
        (0,),
        duration_s=config.enrol_duration_s,
        fs_hz=config.fs_hz,
    )
    probe = cohort_beats(
        config.calib_subjects, (1,), duration_s=config.calib_duration_s, fs_hz=config.fs_hz
    )
    return _verification(enrol, embed(model, enrol.beats), probe, embed(model, probe.beats), ks)


def evaluate_cohort(model: nn.Module, kind: str, config: EcgTrainConfig) -> dict[str, Any]:
    enrol, probe = _eval_sets(config)
    if kind == "cnn":
        logits = embed(model, probe.beats)
        pred = np.asarray(ECG_SPECS["cnn"].extra["classes"])[np.argmax(logits, axis=1)]
        out: dict[str, Any] = {"cohort_accuracy": float(np.mean(pred == probe.subjects))}
        for s in config.eval_sessions:
            m = probe.sessions == s
            out[f"cohort_accuracy_session_{s}"] = float(np.mean(pred[m] == probe.subjects[m]))
        per_subject = [
            float(np.mean(pred[probe.subjects == c] == c)) for c in config.eval_subjects
        ]
        out["cohort_worst_subject_accuracy"] = min(per_subject)
        out["cohort_probe_beats"] = len(probe)
        return out
    ver = _verification(
        enrol, embed(model, enrol.beats), probe, embed(model, probe.beats), (1, config.fuse_beats)
    )
    return {
        "cohort_eer": ver[1]["eer"],
        "cohort_identification_accuracy": ver[1]["identification_accuracy"],
        f"cohort_eer_k{config.fuse_beats}": ver[config.fuse_beats]["eer"],
        "cohort_probe_beats": len(probe),
    }
