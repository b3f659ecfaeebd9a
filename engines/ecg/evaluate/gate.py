"""The task gate of the ECG models (:mod:`engines.gates`): single-beat EER (embedding) or
closed-set accuracy (cnn) on the cohort's session 1, within 0.002 of eager."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engines.ecg.metrics import eer
from engines.engine import Engine
from engines.gates import Infer, TaskGate, compare, eager_infer
from engines.spec import ModelSpec

__all__ = ["ecg_gate", "task_metric"]


def task_metric(model: str, infer: Callable[[np.ndarray], np.ndarray], *, batch: int,
                seconds: float = 60.0, seed: int = 0) -> float:
    """The task metric an engine must leave unchanged (:mod:`engines.gates`), on the cohort's
    session-1 beats with the model's outputs computed by ``infer`` (beats ``(B, 1, 192)``, at
    most ``batch``): ``"embedding"`` the single-beat EER of genuine vs impostor cosine scores
    against templates of each subject's first :data:`ENROL_BEATS` beats; ``"cnn"`` the
    closed-set accuracy."""
    from engines.ecg.calibration import ENROL_BEATS
    from engines.ecg.data import cohort_beats

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


def ecg_gate(spec: ModelSpec, engine: Engine) -> TaskGate:
    model = spec.name.removeprefix("ecg_")

    def metric(f: Infer) -> float:
        return task_metric(model, f, batch=engine.max_batch)

    return compare("EER" if model == "embedding" else "accuracy", metric, eager_infer(spec),
                   engine, 0.002)
