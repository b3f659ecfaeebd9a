"""The sections of the ROI evaluation report, each computed by one function: the simulated
sets, the report's header (definitions, seeds, sizes), the read-out fed true ROIs, the neural
models, the post-processing ablation, the classical baselines, out of distribution, and
windowing vs resampling. Nothing here prints but progress lines."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from devices.spectra_sim import SpectrumSimConfig
from engines.errors import WeightsError
from engines.report import json_number, jsonable
from engines.roi.baselines import FindPeaksFit, tune_arpls_find_peaks, tune_find_peaks_cwt
from engines.roi.detector import RoiDetector, RoiDetectorConfig
from engines.roi.evaluate.protocol import (
    CHUNK_SPECTRA,
    STREAM_TAGS,
    TOLERANCE_SAMPLES,
    WINDOWING_LENGTHS,
    EvalData,
    log_progress,
    ood_groups,
    simulate_spectra,
    stream_rng,
)
from engines.roi.evaluate.scoring import (
    DetectorRun,
    by_band,
    false_peaks,
    mean_or_none,
    rerun_heads,
    rerun_post,
    resolvable_fraction,
    run_baseline,
    run_model,
    run_oracle,
    score,
    summary,
)
from engines.roi.metrics import BAND_NAMES, roi_loss, snr_band_edges, snr_bands
from engines.roi.specs import detector_config

__all__ = [
    "EvalSets",
    "ModelRuns",
    "ablation_section",
    "baseline_entries",
    "context_section",
    "model_entries",
    "ood_section",
    "report_header",
    "simulate_sets",
    "windowing_report",
]


@dataclass(frozen=True, kw_only=True)
class EvalSets:
    """Every spectra set of one run, with each spectrum's SNR band (0 low, 1 mid, 2 high).

    ``base_sel``: the test spectra the baselines run on (the first ``n_base``); ``groups``:
    :func:`ood_groups`, ``per_group`` spectra each in ``ood``; ``wr``: the windowing set,
    grouped ``"L<length>"``; ``paper``: the paper's protocol, ``edges``: its SNR band edges
    (dB).
    """

    paper: SpectrumSimConfig
    edges: np.ndarray
    test: EvalData
    test_band: np.ndarray
    n_base: int
    base_sel: np.ndarray
    val: EvalData
    peak_free: EvalData
    pf_band: np.ndarray
    groups: list[tuple[str, SpectrumSimConfig]]
    per_group: int
    ood: EvalData
    ood_band: np.ndarray
    wr: EvalData


def simulate_sets(
    *,
    seed: int,
    n_test: int,
    n_baseline: int,
    n_validation: int,
    n_peak_free_per_band: int,
    n_ood: int,
    n_windowing_per_length: int,
    progress: bool,
) -> EvalSets:
    """Simulate every set from its own stream of ``seed`` (:func:`stream_rng`)."""
    paper = SpectrumSimConfig()
    snr_range = paper.snr_db
    edges = snr_band_edges(snr_range)
    log_progress(progress, f"simulating {n_test} test spectra")
    test = simulate_spectra(n_test, paper, stream_rng(seed, "test"), "test")
    test_band = snr_bands(test.snr_db, snr_range)
    n_base = min(n_baseline, n_test)
    base_sel = np.zeros(n_test, bool)
    base_sel[:n_base] = True
    val = simulate_spectra(n_validation, paper, stream_rng(seed, "validation"), "validation")
    pf_rng = stream_rng(seed, "peak_free")
    pf_parts = []
    for b, name in enumerate(BAND_NAMES):
        free = replace(paper, n_peaks=(0, 0), snr_db=(float(edges[b]), float(edges[b + 1])))
        part = simulate_spectra(n_peak_free_per_band, free, pf_rng, name)
        pf_parts.append(part)
    peak_free = EvalData.concat(pf_parts)
    pf_band = np.repeat(np.arange(3), n_peak_free_per_band)
    groups = ood_groups()
    per_group = max(1, n_ood // len(groups))
    ood_rng = stream_rng(seed, "ood")
    ood = EvalData.concat([simulate_spectra(per_group, g, ood_rng, name) for name, g in groups])
    ood_band = snr_bands(ood.snr_db, snr_range)
    wr_rng = stream_rng(seed, "windowing")
    wr = EvalData.concat(
        [
            simulate_spectra(n_windowing_per_length, SpectrumSimConfig(length=n), wr_rng, f"L{n}")
            for n in WINDOWING_LENGTHS
        ]
    )
    return EvalSets(
        paper=paper,
        edges=edges,
        test=test,
        test_band=test_band,
        n_base=n_base,
        base_sel=base_sel,
        val=val,
        peak_free=peak_free,
        pf_band=pf_band,
        groups=groups,
        per_group=per_group,
        ood=ood,
        ood_band=ood_band,
        wr=wr,
    )


def report_header(
    sets: EvalSets,
    *,
    seed: int,
    n_test: int,
    n_validation: int,
    n_windowing_per_length: int,
    det_cfg: RoiDetectorConfig,
    n_threads: int,
    backend: str,
) -> dict[str, Any]:
    """The report's first keys: definitions, seeds, sizes, protocol and detector settings,
    and the empty ``models`` / ``skipped`` the model sections fill."""
    edges = sets.edges
    n_base = sets.n_base
    return {
        "task": "roi",
        "definitions": {
            "roi_loss": (
                "mean over spectra of |P' xor T| / L: fraction of a spectrum's samples in "
                "the symmetric difference of predicted ROI P' and true ROI T, where a "
                "predicted run whose two edges each lie within 10% of the true peak's "
                "support width of the true run's edges (10*|dev| <= width) counts as "
                "exact; engines.roi.metrics"
            ),
            "roi_loss_unforgiven": "mean over spectra of |P xor T| / L, no forgiveness",
            "bce": "per-sample BCE of the logits vs the true ROI, mean per spectrum, "
            "then over spectra",
            "roi_loss_threshold_only": "roi_loss of sigmoid>threshold alone, before the "
            "detector drops runs shorter than min_roi_width_samples",
            "peak_match": f"one-to-one (optimal assignment) within +-{TOLERANCE_SAMPLES} "
            "samples of the true centre; precision/recall/F1 pooled over spectra",
            "errors": "position |detected-true| samples; height/area relative |err|/true "
            "(normalised spectrum units, peaks read from the spectrum)",
            "false_peaks": "detected peaks per peak-free spectrum (background + noise, "
            "simulated per SNR band, which sets the background/noise ratio)",
            "snr_bands_db": {
                name: [float(edges[b]), float(edges[b + 1])]
                for b, name in enumerate(BAND_NAMES)
            },
            "snr": "per spectrum: strongest peak height / noise sigma, dB (the other peaks "
            "are 10-100% of it)",
        },
        "seeds": {
            "root": seed,
            "streams": {k: [seed, v] for k, v in STREAM_TAGS.items()},
            "chunk_spectra": CHUNK_SPECTRA,
        },
        "sizes": {
            "n_test": n_test,
            "n_baseline_subset": n_base,
            "baseline_subset": f"first {n_base} spectra of the test set",
            "n_validation_tuning": n_validation,
            "n_peak_free": len(sets.peak_free),
            "n_ood": len(sets.ood),
            "n_ood_per_group": sets.per_group,
            "n_windowing_per_length": n_windowing_per_length,
        },
        "protocol": jsonable(asdict(sets.paper)),
        "detector": jsonable(asdict(det_cfg)),
        "threads": n_threads,
        "backend": backend,
        "models": {},
        "skipped": {},
    }


def context_section(sets: EvalSets, det_cfg: RoiDetectorConfig) -> dict[str, Any]:
    """What the read-out can do with perfect ROIs, and how many true peaks are resolvable."""
    test, test_band = sets.test, sets.test_band
    detector = RoiDetector(det_cfg)
    oracle = score(test, run_oracle(detector, test))
    one_peak = RoiDetector(replace(det_cfg, split_prominence_sigma=None))
    oracle_one = score(test, run_oracle(one_peak, test))
    maxima_only = RoiDetector(replace(det_cfg, shoulder_sigma=None))
    oracle_maxima = score(test, run_oracle(maxima_only, test))
    hits, totals = resolvable_fraction(test)

    def resolvable(sel: np.ndarray) -> float | None:
        t = totals[sel].sum()
        return float(hits[sel].sum() / t) if t else None

    return {
        "true_roi_readout": {
            "note": "the detector's read-out fed the true ROIs: an upper bound on the "
            "peak figures of any ROI segmenter with this read-out",
            "overall": summary(oracle),
            "by_snr": by_band(oracle, test_band),
            "one_peak_per_roi": summary(oracle_one),
            "no_shoulders": summary(oracle_maxima),
        },
        "resolvable_peak_fraction": {
            "note": "true peaks that are separate local maxima (within the match "
            "tolerance) of the noiseless peak signal; the rest merge with a neighbour",
            "overall": resolvable(np.ones(len(test), bool)),
            "by_snr": {n: resolvable(test_band == b) for b, n in enumerate(BAND_NAMES)},
        },
    }


@dataclass
class ModelRuns:
    """What the neural models leave for the later sections: the loaded modules and, per
    model, its runs on the test and peak-free sets (in the order the models were asked)."""

    modules: dict[str, torch.nn.Module]
    runs: dict[str, tuple[DetectorRun, DetectorRun]]


def model_entries(
    models: Sequence[str],
    sets: EvalSets,
    det_cfg: RoiDetectorConfig,
    batch: int,
    progress: bool,
    timing: dict[str, float],
) -> tuple[dict[str, Any], dict[str, str], ModelRuns]:
    """``(entries, skipped, runs)``: each model's ``models`` entry (a skipped one holds
    ``skipped`` and null figures), why each skipped model was skipped, and its runs; the
    seconds of each model's runs go to ``timing``."""
    from engines.roi.specs import ROI_SPECS

    test, test_band, base_sel = sets.test, sets.test_band, sets.base_sel
    peak_free, pf_band = sets.peak_free, sets.pf_band
    n_test = len(test)
    entries: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    out = ModelRuns(modules={}, runs={})
    for name in models:
        spec = ROI_SPECS[name]
        try:
            module = spec.load()
        except WeightsError as exc:
            skipped[name] = str(exc)
            entries[name] = {
                "skipped": str(exc),
                "roi_loss": None,
                "bce": None,
                "peak_f1": None,
            }
            log_progress(progress, f"skipping {name}: {exc}")
            continue
        out.modules[name] = module
        log_progress(progress, f"{name}: {n_test} test spectra")
        detector = RoiDetector(detector_config(name, det_cfg))
        run = run_model(module, detector, test, batch)
        scored = score(test, run)
        raw_mask = [z > det_cfg.threshold_logit for z in run.logits or []]
        thr_only, _ = roi_loss(raw_mask, test.roi, test.peaks)
        pf_run = run_model(module, detector, peak_free, batch)
        out.runs[name] = (run, pf_run)
        entry = summary(scored)
        entry["roi_loss_threshold_only"] = json_number(mean_or_none(thr_only))
        entry["by_snr"] = by_band(scored, test_band)
        for b, bn in enumerate(BAND_NAMES):
            entry["by_snr"][bn]["roi_loss_threshold_only"] = json_number(
                mean_or_none(thr_only[test_band == b])
            )
        entry["baseline_subset"] = {
            "overall": summary(scored, base_sel),
            "by_snr": {
                bn: summary(scored, base_sel & (test_band == b))
                for b, bn in enumerate(BAND_NAMES)
            },
        }
        entry["peak_free"] = false_peaks(pf_run.tables, pf_band)
        entry["false_peaks_per_peak_free_spectrum"] = entry["peak_free"]["overall"][
            "false_peaks_per_spectrum"
        ]
        if run.outputs is not None:
            entry["heads_only"] = _heads_only(detector, sets, run, pf_run)
        entry["budget"] = _model_budget(spec)
        entry["seconds"] = {
            "test": run.seconds,
            "peak_free": pf_run.seconds,
            "per_spectrum_ms": 1e3 * run.seconds / n_test,
        }
        entries[name] = entry
        timing[f"model_{name}"] = run.seconds + pf_run.seconds
    return entries, skipped, out


def _heads_only(
    detector: RoiDetector, sets: EvalSets, run: DetectorRun, pf_run: DetectorRun
) -> dict[str, Any]:
    """A peak-head model's outputs read without the joint fit (no second inference), and what
    the read-out costs per spectrum with and without it (first 1,000 test spectra)."""
    test, test_band, base_sel = sets.test, sets.test_band, sets.base_sel
    plain = RoiDetector(replace(detector.config, peak_fit=None))
    scored = score(test, rerun_heads(plain, test, run))
    n = min(len(test), 1000)
    first = test.take(np.arange(n))
    part = DetectorRun(run.intervals[:n], run.tables[:n], None, 0.0, (run.outputs or [])[:n])
    cost = {
        label: 1e3 * rerun_heads(d, first, part).seconds / max(n, 1)
        for label, d in (("heads_and_fit", detector), ("heads_only", plain))
    }
    return {
        "note": "the same outputs, peaks from the heads alone (no joint fit)",
        **summary(scored),
        "by_snr": by_band(scored, test_band),
        "baseline_subset": {
            "by_snr": {
                bn: summary(scored, base_sel & (test_band == b))
                for b, bn in enumerate(BAND_NAMES)
            },
        },
        "false_peaks_per_peak_free_spectrum": false_peaks(
            rerun_heads(plain, sets.peak_free, pf_run).tables, sets.pf_band
        )["overall"]["false_peaks_per_spectrum"],
        "readout_ms_per_spectrum": cost,
    }


def ablation_section(
    runs: tuple[DetectorRun, DetectorRun], sets: EvalSets, det_cfg: RoiDetectorConfig
) -> dict[str, Any]:
    """The product model's logits (its test and peak-free ``runs``) read with one setting of
    the detector changed at a time: no second inference."""
    test, test_band, peak_free, pf_band = sets.test, sets.test_band, sets.peak_free, sets.pf_band
    run, pf_run = runs
    abl: dict[str, Any] = {
        "note": "the same logits read with one setting of the detector changed"
    }
    for label, cfg in (
        ("one_peak_per_roi", replace(det_cfg, split_prominence_sigma=None)),
        ("no_shoulders", replace(det_cfg, shoulder_sigma=None)),
        ("no_min_peak_height", replace(det_cfg, min_peak_height_sigma=None)),
        ("min_roi_width_1", replace(det_cfg, min_roi_width_samples=1)),
    ):
        s = score(test, rerun_post(RoiDetector(cfg), test, run))
        pf = rerun_post(RoiDetector(cfg), peak_free, pf_run)
        abl[label] = {
            "config": jsonable(asdict(cfg)),
            "overall": summary(s),
            "by_snr": by_band(s, test_band),
            "peak_free": false_peaks(pf.tables, pf_band),
        }
    return abl


def baseline_entries(
    sets: EvalSets, progress: bool, timing: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(entries, detectors)`` of the classical baselines, tuned on the validation set and
    run on the baseline subset of the test set; their seconds go to ``timing``."""
    val, peak_free, pf_band = sets.val, sets.peak_free, sets.pf_band
    n_base = sets.n_base
    t0 = time.perf_counter()
    log_progress(progress, f"tuning baselines on {len(val)} validation spectra")
    val_x = np.stack(val.spectra)
    val_roi = np.stack(val.roi)
    arpls, arpls_log = tune_arpls_find_peaks(val_x, val_roi, val.peaks)
    cwt, cwt_log = tune_find_peaks_cwt(val_x, val_roi, val.peaks)
    timing["baseline_tuning"] = time.perf_counter() - t0
    test_base = sets.test.take(np.flatnonzero(sets.base_sel))
    base_band = sets.test_band[sets.base_sel]
    fit_log = {"note": "not tuned: the tuned arpls_find_peaks peaks start the fit", "trials": []}
    baselines: dict[str, Any] = {
        "arpls_find_peaks": (arpls, arpls_log),
        "find_peaks_fit": (FindPeaksFit(find=arpls), fit_log),
        "find_peaks_cwt": (cwt, cwt_log),
    }
    entries: dict[str, Any] = {}
    base_dets: dict[str, Any] = {}
    for name, (det, log) in baselines.items():
        log_progress(progress, f"{name}: {n_base} test spectra")
        run = run_baseline(det, test_base)
        scored = score(test_base, run)
        pf_run = run_baseline(det, peak_free)
        entry = summary(scored)
        entry["by_snr"] = by_band(scored, base_band)
        entry["n_spectra_note"] = f"evaluated on the first {n_base} test spectra"
        entry["peak_free"] = false_peaks(pf_run.tables, pf_band)
        entry["false_peaks_per_peak_free_spectrum"] = entry["peak_free"]["overall"][
            "false_peaks_per_spectrum"
        ]
        entry["params"] = jsonable(det.params())
        entry["tuning"] = {k: v for k, v in log.items() if k != "trials"}
        entry["tuning"]["trials"] = [
            {k: json_number(v) if not isinstance(v, list) else v for k, v in t.items()}
            for t in log["trials"]
        ]
        entry["seconds"] = {
            "test": run.seconds,
            "peak_free": pf_run.seconds,
            "per_spectrum_ms": 1e3 * run.seconds / max(n_base, 1),
        }
        entries[name] = entry
        base_dets[name] = det
        timing[f"baseline_{name}"] = run.seconds + pf_run.seconds
    return entries, base_dets


def ood_section(
    sets: EvalSets,
    det_cfg: RoiDetectorConfig,
    modules: dict[str, torch.nn.Module],
    base_dets: dict[str, Any],
    batch: int,
    progress: bool,
) -> dict[str, Any]:
    """Every model and baseline on the out-of-distribution groups (the baselines keep their
    paper-protocol tuning)."""
    ood, ood_band, groups = sets.ood, sets.ood_band, sets.groups
    ood_report: dict[str, Any] = {
        "groups": {name: jsonable(asdict(g)) for name, g in groups},
        "strategy": det_cfg.strategy,
        "note": "baselines keep the parameters tuned on paper-protocol validation spectra",
        "models": {},
    }
    for name in [*modules, *base_dets]:
        log_progress(progress, f"{name}: {len(ood)} out-of-distribution spectra")
        if name in modules:
            detector = RoiDetector(detector_config(name, det_cfg))
            run = run_model(modules[name], detector, ood, batch)
        else:
            run = run_baseline(base_dets[name], ood)
        scored = score(ood, run)
        entry = summary(scored)
        entry["by_snr"] = by_band(scored, ood_band)
        entry["by_group"] = {g: summary(scored, ood.group == g) for g, _ in groups}
        entry["seconds"] = run.seconds
        ood_report["models"][name] = entry
    return ood_report


def _windowing_variants(base: RoiDetectorConfig) -> list[tuple[str, RoiDetectorConfig]]:
    w = replace(
        base,
        strategy="window",
        normalisation="window",
        stitch="centre",
        overlap_samples=128,
        short="resample",
    )
    return [
        ("window_norm-window_centre_ov128", w),
        ("window_norm-window_centre_ov128_short-pad", replace(w, short="pad")),
        ("window_norm-global_centre_ov128", replace(w, normalisation="global")),
        ("window_norm-window_mean_ov128", replace(w, stitch="mean")),
        ("window_norm-window_centre_ov256", replace(w, overlap_samples=256)),
        ("resample", replace(base, strategy="resample")),
    ]


def windowing_report(
    modules: dict[str, torch.nn.Module],
    base: RoiDetectorConfig,
    data: EvalData,
    snr_range: tuple[float, float],
    batch: int,
    progress: bool,
) -> dict[str, Any]:
    """Each length strategy on lengths 256-4096 (paper peaks): all variants for resnet_unet
    (or the first model available), window-vs-resample only for the others."""
    out: dict[str, Any] = {
        "lengths": list(WINDOWING_LENGTHS),
        "note": "paper-protocol peaks (Hann, widths 5-31, density scaled with length) so the "
        "length is the only departure from training; summary = all lengths pooled",
        "default": {
            "strategy": base.strategy,
            "normalisation": base.normalisation,
            "stitch": base.stitch,
            "overlap_samples": base.overlap_samples,
            "short": base.short,
        },
        "models": {},
    }
    if not modules:
        out["note_skipped"] = "no model weights available"
        return out
    band = snr_bands(data.snr_db, snr_range)
    full = "resnet_unet" if "resnet_unet" in modules else next(iter(modules))
    variants = _windowing_variants(base)
    for name, module in modules.items():
        chosen = variants if name == full else [variants[0], variants[-1]]
        res: dict[str, Any] = {}
        for label, cfg in chosen:
            log_progress(progress, f"{name}: windowing variant {label}")
            run = run_model(module, RoiDetector(detector_config(name, cfg)), data, batch)
            s = score(data, run)
            res[label] = {
                "config": {
                    "strategy": cfg.strategy,
                    "normalisation": cfg.normalisation,
                    "stitch": cfg.stitch,
                    "overlap_samples": cfg.overlap_samples,
                    "short": cfg.short,
                },
                "overall": summary(s),
                "by_length": {str(n): summary(s, data.group == f"L{n}") for n in WINDOWING_LENGTHS},
                "by_snr": by_band(s, band),
                "seconds": run.seconds,
            }
        best_loss = min(res, key=lambda k: res[k]["overall"]["roi_loss"] or math.inf)
        best_f1 = max(res, key=lambda k: res[k]["overall"]["peak_f1"] or -1.0)
        res["best_by_roi_loss"] = best_loss
        res["best_by_peak_f1"] = best_f1
        out["models"][name] = res
    return out



def _model_budget(spec: Any) -> dict[str, Any]:
    """What the report says about a model's training budget and weights (from its card)."""
    card = spec.card()
    keys = (
        "seed",
        "steps",
        "batch_size",
        "lr",
        "training_spectra_seen",
        "wall_s",
        "step_s",
        "threads",
        "params",
        "final_val_bce",
        "final_val_mask_error",
        "command",
        "torch",
    )
    budget = {k: card[k] for k in keys if k in card}
    try:
        budget["weights_sha256"] = spec.weights_sha256()
    except WeightsError:
        budget["weights_sha256"] = None
    if not card:
        budget["note"] = f"no weights card at {spec.card_path}"
    return budget
