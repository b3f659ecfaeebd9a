"""The CT evaluation run: simulate the sets, tune the classical baselines on validation
phantoms, score every method at every dose, state the targets; then print and write it."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from engines.backends.eager import eager_infer
from engines.ct.baselines import BASELINES, GRIDS, tune
from engines.ct.evaluate.protocol import (
    BASELINE_NAMES,
    DOSES,
    LOW_DOSE,
    TARGET_DOSE,
    TARGETS,
    EvalSizes,
    dose_key,
    log_progress,
    protocol_block,
)
from engines.ct.evaluate.scoring import (
    Denoise,
    model_denoiser,
    reference_scores,
    score_image,
    summarise,
)
from engines.ct.evaluate.sets import EvalSlice, phantom_set, real_set
from engines.ct.evaluate.table import format_table
from engines.ct.specs import CT_SPECS, SERVED_MODEL, TILE_MARGIN_PX
from engines.errors import WeightsError
from engines.report import jsonable, write_report
from engines.spec import ModelSpec

__all__ = ["ct_report", "evaluate_ct"]


def evaluate_ct(json_path: Path | str | None = None, quick: bool = False, *,
                progress: bool = True, **options: Any) -> dict[str, Any]:
    """Run the CT evaluation, print its table to stdout, write the JSON report (if
    ``json_path``); return the report. ``quick``: :meth:`EvalSizes.quick` sizes (minutes).
    ``options``: those of :func:`ct_report`."""
    sizes = options.pop("sizes", None) or (EvalSizes.quick() if quick else EvalSizes())
    report = ct_report(sizes=sizes, progress=progress, **options)
    print(format_table(report))
    if json_path is not None:
        log_progress(progress, f"wrote {write_report(report, json_path)}")
    return report


def _model_methods(specs: Mapping[str, ModelSpec], batch: int,
                   ) -> tuple[dict[str, Denoise], dict[str, str]]:
    methods: dict[str, Denoise] = {}
    skipped: dict[str, str] = {}
    for name, spec in specs.items():
        try:
            module = spec.load()
        except WeightsError as exc:
            skipped[name] = str(exc)
            continue
        tile = int(spec.input_shape[-1])
        margin = min(int(spec.extra.get("tile_margin_px", TILE_MARGIN_PX)), tile // 4)
        methods[name] = model_denoiser(eager_infer(module), tile=tile, margin=margin,
                                       batch=batch)
    return methods, skipped


def _baseline(name: str, params: Mapping[float, float]) -> Denoise:
    apply = BASELINES[name]
    return lambda low, dose: apply(low, params[dose])


def _score_set(slices: Sequence[EvalSlice], methods: Mapping[str, Denoise], progress: bool,
               label: str, timing: dict[str, float]) -> dict[str, Any]:
    names = [ev.name for ev in slices]
    refs = [reference_scores(ev) for ev in slices]
    out: dict[str, Any] = {
        "slices": names,
        "reference": {k: _nanmean([r[k] for r in refs]) for k in refs[0]},
        "doses": {},
    }
    for dose in DOSES:
        entry: dict[str, Any] = {}
        for name, method in methods.items():
            t0 = time.perf_counter()
            rows = [score_image(method(ev.low[dose], dose), ev) for ev in slices]
            entry[name] = summarise(rows, names)
            timing[f"{label}/{name}"] = timing.get(f"{label}/{name}", 0.0) + (
                time.perf_counter() - t0)
            log_progress(progress, f"ct eval: {label} dose {dose}: {name} "
                                   f"PSNR {entry[name]['psnr_db']:.2f} dB")
        out["doses"][dose_key(dose)] = {"methods": entry}
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def ct_report(*, sizes: EvalSizes | None = None, specs: Mapping[str, ModelSpec] | None = None,
              baselines: Sequence[str] = BASELINE_NAMES, served: str = SERVED_MODEL,
              threads: int | None = None, batch: int = 4, progress: bool = True,
              ) -> dict[str, Any]:
    """Compute the CT evaluation report (JSON-ready; nothing printed but progress lines).

    ``specs``: the models (default :data:`~engines.ct.specs.CT_SPECS`; a model whose weights
    are missing is listed under ``skipped``); ``baselines``: classical methods to tune and
    score; ``served``: the model the targets are checked on; ``threads``: torch threads
    (default: the CPUs this process may use); ``batch``: engine items per model call.
    """
    sizes = sizes or EvalSizes()
    specs = dict(CT_SPECS if specs is None else specs)
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
    timing: dict[str, float] = {}
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        t0 = time.perf_counter()
        validation = phantom_set("validation", sizes)
        test = phantom_set("test", sizes)
        real = real_set(sizes.real_files)
        timing["simulate"] = time.perf_counter() - t0
        log_progress(progress, f"ct eval: simulated {len(test)} test, {len(validation)} "
                               f"validation phantoms, {len(real)} real slices "
                               f"({timing['simulate']:.0f} s)")

        methods: dict[str, Denoise] = {LOW_DOSE: lambda low, dose: low}
        tuned: dict[str, Any] = {}
        for name in baselines:
            t0 = time.perf_counter()
            crop = sizes.bm3d_crop_px if name == "bm3d" else None
            params: dict[float, float] = {}
            tuned[name] = {"grid": list(GRIDS[name]), "crop_px": crop, "doses": {}}
            for dose in DOSES:
                best, scores = tune(name, [(ev.low[dose], ev.reference, ev.body)
                                           for ev in validation], crop_px=crop)
                params[dose] = best
                tuned[name]["doses"][dose_key(dose)] = {"best": best, "validation_psnr_db":
                                                        {repr(k): v for k, v in scores.items()}}
            methods[name] = _baseline(name, params)
            timing[f"tune/{name}"] = time.perf_counter() - t0
            log_progress(progress, f"ct eval: tuned {name}: {params}")
        model_methods, skipped = _model_methods(specs, batch)
        methods.update(model_methods)

        report: dict[str, Any] = {
            "protocol": protocol_block(sizes),
            "served": served,
            "methods": list(methods),
            "skipped": skipped,
            "tuned": tuned,
            "sets": {
                "phantom": _score_set(test, methods, progress, "phantom", timing),
                "real": _score_set(real, methods, progress, "real", timing),
            },
        }
        report["targets"] = _targets(report, served, baselines)
        timing["total"] = time.perf_counter() - t_start
        report["timing_s"] = timing
        report["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return jsonable(report)


def _check(value: float, met: bool, **bounds: Any) -> dict[str, Any]:
    return {"value": value, **bounds, "met": bool(met and math.isfinite(value))}


def _targets(report: dict[str, Any], served: str, baselines: Sequence[str]) -> dict[str, Any]:
    """The served model's figures at :data:`TARGET_DOSE` against :data:`TARGETS`."""
    key = dose_key(TARGET_DOSE)
    real = report["sets"]["real"]["doses"][key]["methods"]
    phantom = report["sets"]["phantom"]["doses"][key]["methods"]
    out: dict[str, Any] = {"model": served, "dose": key, "set": "real",
                           "bounds": dict(TARGETS)}
    if served not in real:
        out["note"] = f"{served} not evaluated (no weights)"
        return out
    m, low = real[served], real[LOW_DOSE]
    gain = m["psnr_db"] - low["psnr_db"]
    out["psnr_gain_over_low_dose_db"] = _check(
        gain, gain >= TARGETS["psnr_gain_over_low_dose_db_min"],
        target_min=TARGETS["psnr_gain_over_low_dose_db_min"])
    classical = {b: real[b]["psnr_db"] for b in baselines if b in real}
    if classical:
        best = max(classical, key=lambda b: classical[b])
        margin = m["psnr_db"] - classical[best]
        out["psnr_over_best_classical_db"] = {
            **_check(margin, margin >= TARGETS["psnr_over_best_classical_db_min"],
                     target_min=TARGETS["psnr_over_best_classical_db_min"]),
            "best_classical": best,
        }
    bias = m["hu_bias_abs"]
    out["hu_bias_abs"] = _check(bias, bias <= TARGETS["hu_bias_abs_max"],
                                target_max=TARGETS["hu_bias_abs_max"])
    ratio = m["noise_sd_hu"] / low["noise_sd_hu"]
    out["noise_sd_ratio"] = _check(ratio, ratio <= TARGETS["noise_sd_ratio_max"],
                                   target_max=TARGETS["noise_sd_ratio_max"])
    mtf = phantom[served]["mtf50_ratio"]
    tol = TARGETS["mtf50_ratio_tolerance"]
    out["mtf50_ratio"] = {**_check(mtf, abs(mtf - 1.0) <= tol, target_range=[1 - tol, 1 + tol]),
                          "set": "phantom"}
    return out
