"""The ROI evaluation run: compute every section into one report, its targets and timings
(:func:`engines.report.publish_report` prints its table and writes its JSON)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from engines.roi.detector import RoiDetector, RoiDetectorConfig
from engines.roi.evaluate.protocol import (
    BASELINE_NAMES,
    DEFAULT_SEED,
    MODEL_NAMES,
    PAPER_PEAK_MODEL,
    SERVED_MODEL,
    TARGETS,
    EvalData,
    log_progress,
)
from engines.roi.evaluate.real_spectra import Detector, real_spectra_section
from engines.roi.evaluate.scoring import run_baseline, run_model
from engines.roi.evaluate.sections import (
    ablation_section,
    baseline_entries,
    context_section,
    model_entries,
    ood_section,
    report_header,
    simulate_sets,
    windowing_report,
)
from engines.roi.specs import detector_config

__all__ = ["roi_report"]


def roi_report(
    *,
    n_test: int = 30_000,
    seed: int = DEFAULT_SEED,
    backend: str = "eager",
    models: Sequence[str] = MODEL_NAMES,
    n_ood: int = 1_400,
    n_baseline: int = 5_000,
    n_validation: int = 300,
    n_peak_free_per_band: int = 200,
    n_windowing_per_length: int = 100,
    detector_config: RoiDetectorConfig | None = None,
    threads: int | None = None,
    batch: int = 512,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the ROI evaluation report (JSON-ready; nothing printed but progress lines).

    ``n_test`` paper-protocol test spectra (first ``n_test`` of the fixed test stream);
    baselines on the first ``min(n_baseline, n_test)`` of them; ``n_ood`` spectra spread over
    :func:`~engines.roi.evaluate.protocol.ood_groups`; baselines tuned on ``n_validation``
    validation spectra. ``backend``: only ``"eager"`` (this report does not depend on
    compiled backends). ``threads``: torch intra-op threads (default: the CPUs this process
    may use).
    """
    if backend != "eager":
        raise ValueError(f"roi_report runs models eagerly; backend {backend!r} not supported")
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {MODEL_NAMES}")
    if n_test < 1:
        raise ValueError("n_test must be >= 1")

    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    n_threads = threads or len(os.sched_getaffinity(0))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        det_cfg = detector_config or RoiDetectorConfig()

        t0 = time.perf_counter()
        sets = simulate_sets(
            seed=seed,
            n_test=n_test,
            n_baseline=n_baseline,
            n_validation=n_validation,
            n_peak_free_per_band=n_peak_free_per_band,
            n_ood=n_ood,
            n_windowing_per_length=n_windowing_per_length,
            progress=progress,
        )
        timing["simulate"] = time.perf_counter() - t0
        report = report_header(
            sets,
            seed=seed,
            n_test=n_test,
            n_validation=n_validation,
            n_windowing_per_length=n_windowing_per_length,
            det_cfg=det_cfg,
            n_threads=n_threads,
            backend=backend,
        )

        t0 = time.perf_counter()
        report["context"] = context_section(sets, det_cfg)
        timing["context"] = time.perf_counter() - t0

        entries, skipped, neural = model_entries(models, sets, det_cfg, batch, progress, timing)
        report["models"].update(entries)
        report["skipped"].update(skipped)
        if "resnet_unet" in neural.runs:
            report["postprocessing_ablation_resnet_unet"] = ablation_section(
                neural.runs["resnet_unet"], sets, det_cfg
            )

        entries, base_dets = baseline_entries(sets, progress, timing)
        report["models"].update(entries)

        t0 = time.perf_counter()
        report["ood"] = ood_section(sets, det_cfg, neural.modules, base_dets, batch, progress)
        timing["ood"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        report["windowing_vs_resampling"] = windowing_report(
            neural.modules, det_cfg, sets.wr, sets.paper.snr_db, batch, progress
        )
        timing["windowing_vs_resampling"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        log_progress(progress, "real spectra (chemotools)")
        report["real_spectra"] = real_spectra_section(
            _real_detectors(neural.modules, base_dets, det_cfg, batch), seed=seed
        )
        timing["real_spectra"] = time.perf_counter() - t0

        report["targets"] = _targets(report)
        timing["total"] = time.perf_counter() - t_start
        report["timing_s"] = timing
    finally:
        torch.set_num_threads(old_threads)
    return report


def _real_detectors(
    modules: dict[str, torch.nn.Module],
    base_dets: dict[str, Any],
    det_cfg: RoiDetectorConfig,
    batch: int,
) -> dict[str, Detector]:
    """The detectors the real-spectra section compares: the served model (with and without
    its fit), the paper-protocol peak model, the ROI read-out (ResNet+UNet) and the classical
    baselines."""
    out: dict[str, Detector] = {}
    for name in (SERVED_MODEL, PAPER_PEAK_MODEL, "resnet_unet"):
        if name not in modules:
            continue
        cfg = detector_config(name, det_cfg)
        variants = [(name, cfg)]
        if name == SERVED_MODEL:
            variants.append((f"{name}_heads_only", replace(cfg, peak_fit=None)))
        for label, c in variants:
            out[label] = functools.partial(_model_tables, modules[name], RoiDetector(c), batch)
    for name, det in base_dets.items():
        out[name] = functools.partial(_baseline_tables, det)
    return out


def _model_tables(
    module: torch.nn.Module, detector: RoiDetector, batch: int, spectra: list[np.ndarray]
) -> list[np.ndarray]:
    return run_model(module, detector, EvalData.unlabelled(spectra), batch).tables


def _baseline_tables(det: Any, spectra: list[np.ndarray]) -> list[np.ndarray]:
    return run_baseline(det, EvalData.unlabelled(spectra)).tables


def _met(value: float | None, bound: float, *, at_least: bool) -> bool:
    if value is None:
        return False
    return value >= bound if at_least else value <= bound


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    """The report's figures against :data:`~engines.roi.evaluate.protocol.TARGETS`: the
    paper's ROI loss for the ResNet+UNet segmenter, the peak targets for the served model."""
    models = report["models"]
    out: dict[str, Any] = {"targets": dict(TARGETS), "served_model": SERVED_MODEL}
    ru = models.get("resnet_unet")
    if ru is not None and "skipped" not in ru:
        loss = ru["roi_loss"]
        out["resnet_unet_roi_loss"] = {
            "value": loss,
            "target_max": TARGETS["resnet_unet_roi_loss_max"],
            "met": _met(loss, TARGETS["resnet_unet_roi_loss_max"], at_least=False),
        }
    served = models.get(SERVED_MODEL)
    if served is None or "skipped" in served:
        out["note"] = f"{SERVED_MODEL} not evaluated"
        return out
    f1 = served["peak_f1"]
    paper = models.get(PAPER_PEAK_MODEL, {})
    out["peak_f1"] = {
        "model": SERVED_MODEL,
        "value": f1,
        "target_min": TARGETS["peak_f1_min"],
        "met": _met(f1, TARGETS["peak_f1_min"], at_least=True),
        "stretch": TARGETS["peak_f1_stretch"],
        "stretch_met": _met(f1, TARGETS["peak_f1_stretch"], at_least=True),
        f"{PAPER_PEAK_MODEL}_value": paper.get("peak_f1"),
        "resnet_unet_roi_readout_value": None if ru is None else ru.get("peak_f1"),
    }
    low_model = served["baseline_subset"]["by_snr"]["low"]["peak_f1"]
    base_low = {b: models[b]["by_snr"]["low"]["peak_f1"] for b in BASELINE_NAMES if b in models}
    if base_low:
        best = max(base_low, key=lambda k: base_low[k] or -1.0)
        margin = None if low_model is None or base_low[best] is None else low_model - base_low[best]
        out["low_snr_margin_over_best_baseline"] = {
            "model": SERVED_MODEL,
            "model_low_snr_f1": low_model,
            "best_baseline": best,
            "best_baseline_low_snr_f1": base_low[best],
            "margin": margin,
            "target_min": TARGETS["low_snr_f1_margin_over_best_baseline"],
            "met": _met(margin, TARGETS["low_snr_f1_margin_over_best_baseline"], at_least=True),
            "note": "both on the same baseline subset of the test set",
        }
    fp = served["false_peaks_per_peak_free_spectrum"]
    out["false_peaks_per_peak_free_spectrum"] = {
        "model": SERVED_MODEL,
        "value": fp,
        "target_max": TARGETS["false_peaks_per_peak_free_spectrum_max"],
        "met": _met(fp, TARGETS["false_peaks_per_peak_free_spectrum_max"], at_least=False),
    }
    ood = report.get("ood", {}).get("models", {}).get(SERVED_MODEL)
    if ood is not None:
        out["ood_peak_f1"] = {
            "model": SERVED_MODEL,
            "value": ood["peak_f1"],
            "target_min": TARGETS["ood_peak_f1_min"],
            "met": _met(ood["peak_f1"], TARGETS["ood_peak_f1_min"], at_least=True),
        }
    return out
