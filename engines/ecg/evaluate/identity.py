"""The identity sections of the ECG evaluation: the closed-set classifier table, and
verification and open-set identification with the embedding model against templates
enrolled through the service's :class:`~engines.ecg.templates.TemplateStore`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.ecg.evaluate.beats import Beats, collect_beats, or_default, run_model
from engines.ecg.evaluate.protocol import (
    CLOSED_SET_SUBJECTS,
    ENROL_BEATS,
    ENROL_SESSION,
    FAR_POINTS,
    FUSE_BEATS,
    IMPOSTOR_SUBJECTS,
    OPEN_SET_SUBJECTS,
    OPEN_SET_TEST_SESSION,
    PAPER_FIGURES,
    EvalSizes,
    log_progress,
)
from engines.ecg.metrics import (
    classification_report,
    eer,
    far_frr_at,
    frr_at_far,
    split_scores,
)

__all__ = ["closed_set_report", "identity_sections"]


def closed_set_report(
    module: Any, classes: Sequence[int], beats: Beats, batch: int
) -> dict[str, Any]:
    """The paper's table on the good beats (what the service classifies), and the same
    figures on every detected beat, refused ones included (``all_beats``)."""
    logits = run_model(module, beats.samples, batch)
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


def identity_sections(
    report: dict[str, Any],
    module: Any,
    sz: EvalSizes,
    seed: int,
    sections: Sequence[str],
    batch: int,
    progress: bool,
    seen_beats: Callable[[], Beats],
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

    def embed(b: Beats) -> np.ndarray:
        return run_model(module, b.samples, batch)

    with tempfile.TemporaryDirectory(prefix="sigstream-eval-ecg-") as tmp:
        with TemplateStore(Path(tmp) / "templates.sqlite", dim=spec.output_shape[0]) as store:
            log_progress(progress, f"enrolling {len(CLOSED_SET_SUBJECTS) + len(open_set)} subjects")
            enrol = collect_beats(
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
    log_progress(progress, "verification: sessions 1-2 of subjects 0..17")
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

    log_progress(progress, f"open set: session 1 of {len(open_set)} new subjects")
    new = collect_beats(
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

    log_progress(progress, f"impostors: session 1 of {len(impostors)} never-enrolled people")
    imp = collect_beats(
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


def _enrol(store: Any, model_id: str, beats: Beats, emb: np.ndarray) -> dict[str, Any]:
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
    beats: Beats,
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
    worst = max(
        measured, key=lambda k: or_default(per_subject[k]["eer_single"], -1.0), default=None
    )
    out["worst_subject"] = None if worst is None else {"subject": int(worst), **per_subject[worst]}
    values = np.array([per_subject[k]["eer_single"] for k in measured])
    out["per_subject_eer_single_median"] = float(np.median(values)) if values.size else None
    out["per_subject_eer_single_mean"] = float(values.mean()) if values.size else None
    if (
        worst is not None
        and len(measured) > 2
        and or_default(per_subject[worst]["eer_single"], 0) > 0
    ):
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
