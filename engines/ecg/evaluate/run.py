"""The ECG evaluation run: load the models, compute each section, the targets and the run's
metadata into one report (:func:`engines.report.publish_report` prints its table and writes
its JSON)."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from engines.ecg.evaluate.beats import Beats, collect_beats, load_model
from engines.ecg.evaluate.identity import closed_set_report, identity_sections
from engines.ecg.evaluate.protocol import (
    CLOSED_SET_SUBJECTS,
    DEFAULT_SEED,
    ENROL_BEATS,
    ENROL_SESSION,
    FUSE_BEATS,
    SECTIONS,
    TARGETS,
    TEST_SESSIONS,
    TOLERANCE_S,
    EvalSizes,
    log_progress,
)
from engines.ecg.evaluate.r_peaks import r_peaks_real, r_peaks_simulated
from engines.report import jsonable

__all__ = ["ecg_report"]


def ecg_report(
    *,
    seed: int = DEFAULT_SEED,
    quick: bool = False,
    progress: bool = True,
    data_dir: Path | str | None = None,
    sizes: EvalSizes | None = None,
    sections: Sequence[str] = SECTIONS,
    threads: int = 1,
    batch: int = 512,
) -> dict[str, Any]:
    """Compute the ECG evaluation report (JSON-ready; nothing printed but progress lines).

    ``seed``: the cohort seed (:func:`devices.ecg_cohort.cohort_subject`); 0 is the shipped one.
    ``quick``: :meth:`EvalSizes.quick` sizes (ignored when ``sizes`` is given).
    ``data_dir``: the extracted real recordings (default ``.data/ecg`` of the repository).
    ``sections``: a subset of :data:`SECTIONS`. ``threads``: torch intra-op threads.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {SECTIONS}")
    sz = sizes or (EvalSizes.quick() if quick else EvalSizes())
    if data_dir is None:
        data_dir = Path(__file__).resolve().parents[3] / ".data" / "ecg"
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
    held: list[Beats] = []

    def seen_beats() -> Beats:
        """Every beat of sessions 1-2 of subjects 0..17 (closed set and verification share
        them), made once."""
        if not held:
            held.append(
                collect_beats(
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
                module, info = load_model(ECG_SPECS[key])
                report["models"][key] = info
                if module is None:
                    log_progress(progress, f"skipping {key}: {info['skipped']}")
                else:
                    modules[key] = module

        if "closed_set" in sections:
            t0 = time.perf_counter()
            if "cnn" in modules:
                from engines.ecg.specs import ECG_SPECS

                log_progress(progress, "closed set: beats of sessions 1-2, subjects 0..17")
                test = seen_beats()
                classes = ECG_SPECS["cnn"].extra.get("classes", list(CLOSED_SET_SUBJECTS))
                entry = closed_set_report(modules["cnn"], classes, test, batch)
                entry["data"] = test.summary()
                report["closed_set"] = entry
            else:
                report["closed_set"] = {"skipped": report["models"]["cnn"]["skipped"]}
            timing["closed_set"] = time.perf_counter() - t0

        if {"verification", "open_set"} & set(sections):
            t0 = time.perf_counter()
            if "embedding" in modules:
                identity_sections(
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
            report["r_peaks"] = r_peaks_simulated(sz, seed, progress)
            timing["r_peaks"] = time.perf_counter() - t0
        if "real_recordings" in sections:
            t0 = time.perf_counter()
            report["real_recordings"] = r_peaks_real(data_dir, progress)
            timing["real_recordings"] = time.perf_counter() - t0
    finally:
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)

    report["targets"] = _targets(report)
    timing["total"] = time.perf_counter() - t_start
    report["meta"] = _meta(seed, threads, data_dir)
    report["timing_s"] = timing
    return jsonable(report)


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


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
