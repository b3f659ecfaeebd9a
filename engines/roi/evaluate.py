"""Evaluation report of the spectral ROI path: `sigstream eval roi --json PATH`.

What it measures, on fixed seeds (all figures recomputed on every run, nothing hard-coded):

- The paper's table (PAPERS.md §1): custom ROI loss (definition in :mod:`engines.roi.metrics`)
  of the four segmenters on ``n_test`` test spectra of the paper's protocol
  (``SpectrumSimConfig()`` defaults), with the unforgiven fraction and the BCE beside it.
- Peak read-out: peak-level precision/recall/F1 (a detected peak matches a true one within
  +-2 samples, optimal one-to-one matching), position/height/area errors, and false peaks per
  peak-free spectrum (background + noise only, simulated per SNR band).
- Classical baselines tuned on validation spectra (arPLS + find_peaks, find_peaks_cwt; see
  :mod:`engines.roi.baselines`), evaluated on a seeded subset of the same test set (the first
  ``n_baseline`` spectra; the neural models are also summarised on that subset so every
  comparison is on the same spectra).
- Out-of-distribution groups (Gaussian/Lorentzian/Voigt shapes, widths 3-61, lengths
  256-4096, forced overlaps, single-sample spikes, and combinations), with the detector's
  default length strategy.
- Windowing vs resampling (and normalisation / stitching / overlap variants) on lengths
  256-4096 with the paper's peaks, so that length is the only shift.
- Context for the peak figures: the same post-processing fed the *true* ROIs (an upper bound
  for any ROI segmenter with this read-out), and the fraction of true peaks that are separate
  local maxima of the noiseless signal at all (paper protocol: overlaps are random).

Every figure is broken down by SNR band (thirds of the simulator's SNR range, per spectrum:
strongest peak / noise sigma) with the headline over the whole range.

Data streams: ``numpy.random.SeedSequence([seed, tag])`` per purpose. The test stream is
``[seed, 3]``, the one :func:`engines.roi.train.roi_data_rng` gives for ``"test"`` with the
default ``seed`` (``ROI_TEST_SEED``), never drawn by training; the others use tags 10-13.
Spectra are simulated in chunks of 1,000 from one generator, so a smaller ``n_test`` evaluates
exactly the first ``n_test`` spectra of the full test set.

Models are run eagerly (``spec.load()``, ``torch.inference_mode``, batched); models without
weights are skipped with a note in the report (``skipped``, and an entry under ``models``
holding ``skipped`` and null figures).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devices.spectra_sim import SpectrumSimConfig, simulate
from engines.errors import WeightsError
from engines.report import json_number, jsonable
from engines.roi.baselines import (
    tune_arpls_find_peaks,
    tune_find_peaks_cwt,
)
from engines.roi.detector import RoiDetector, RoiDetectorConfig
from engines.roi.metrics import (
    BAND_NAMES,
    bce_with_logits,
    match_peaks,
    peak_summary,
    roi_loss,
    score_peaks,
    snr_band_edges,
    snr_bands,
)
from engines.roi.peaks import intervals_to_mask, mask_to_intervals

__all__ = ["DEFAULT_SEED", "MODEL_NAMES", "evaluate_roi", "format_table", "ood_groups"]

DEFAULT_SEED = 20_260_001  # = engines.roi.train.ROI_TEST_SEED: the held-out test stream
MODEL_NAMES = ("cnn", "resnet", "unet", "resnet_unet")
BASELINE_NAMES = ("arpls_find_peaks", "find_peaks_cwt")
_TAGS = {"test": 3, "validation": 10, "peak_free": 11, "ood": 12, "windowing": 13}
_CHUNK = 1000
_TOLERANCE_SAMPLES = 2.0
_TARGETS = {
    "resnet_unet_roi_loss_max": 0.0032,
    "peak_f1_min": 0.95,
    "low_snr_f1_margin_over_best_baseline": 0.05,
}
_WR_LENGTHS = (256, 384, 1024, 2048, 4096)


def ood_groups() -> list[tuple[str, SpectrumSimConfig]]:
    """Named out-of-distribution simulator settings; each departs from the paper's protocol.

    Single factors first (shape with widths 3-61, widths alone, length, overlap, spikes), then
    three combinations of all of them.
    """
    wide = (3, 61)
    spikes = (1, 5)
    groups: list[tuple[str, SpectrumSimConfig]] = [
        ("gauss_w3-61", SpectrumSimConfig(shape="gauss", width=wide)),
        ("lorentz_w3-61", SpectrumSimConfig(shape="lorentz", width=wide)),
        ("voigt_w3-61", SpectrumSimConfig(shape="voigt", width=wide)),
        ("hann_w3-61", SpectrumSimConfig(width=wide)),
    ]
    groups += [(f"length_{n}", SpectrumSimConfig(length=n)) for n in _WR_LENGTHS]
    groups += [
        ("overlap_forced", SpectrumSimConfig(overlap="force")),
        ("spikes_1-5", SpectrumSimConfig(spikes=spikes)),
    ]
    combined = [
        SpectrumSimConfig(shape="gauss", length=256, width=wide, overlap="force", spikes=spikes),
        SpectrumSimConfig(shape="lorentz", length=1024, width=wide, overlap="force", spikes=spikes),
        SpectrumSimConfig(shape="voigt", length=4096, width=wide, overlap="force", spikes=spikes),
    ]
    groups += [(f"combined_{c.shape}_L{c.length}", c) for c in combined]
    return groups


@dataclass
class _Data:
    """Spectra of one evaluation set (lists, as lengths may differ)."""

    spectra: list[np.ndarray]
    roi: list[np.ndarray]
    peaks: list[np.ndarray]
    snr_db: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.spectra)

    def take(self, idx: np.ndarray) -> _Data:
        return _Data(
            spectra=[self.spectra[i] for i in idx],
            roi=[self.roi[i] for i in idx],
            peaks=[self.peaks[i] for i in idx],
            snr_db=self.snr_db[idx],
            group=self.group[idx],
        )

    @staticmethod
    def concat(parts: Sequence[_Data]) -> _Data:
        return _Data(
            spectra=[x for p in parts for x in p.spectra],
            roi=[x for p in parts for x in p.roi],
            peaks=[x for p in parts for x in p.peaks],
            snr_db=np.concatenate([p.snr_db for p in parts]),
            group=np.concatenate([p.group for p in parts]),
        )


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _TAGS[purpose]]))


def _simulate(n: int, config: SpectrumSimConfig, rng: np.random.Generator, group: str) -> _Data:
    """``n`` spectra in chunks of 1,000 from one generator (prefix-stable in ``n``)."""
    parts = []
    done = 0
    while done < n:
        k = min(_CHUNK, n - done)
        b = simulate(k, config=config, rng=rng)
        parts.append(
            _Data(
                spectra=list(b.spectra),
                roi=list(b.roi),
                peaks=list(b.peaks),
                snr_db=np.asarray(b.snr_db, dtype=np.float64),
                group=np.full(k, group, dtype=object),
            )
        )
        done += k
    return _Data.concat(parts) if parts else _Data([], [], [], np.zeros(0), np.zeros(0, object))


# --- running detectors ---------------------------------------------------------------------


@dataclass
class _Run:
    """Outputs of one detector on one set."""

    intervals: list[np.ndarray]
    tables: list[np.ndarray]
    logits: list[np.ndarray] | None
    seconds: float


def _infer(module: torch.nn.Module, windows: np.ndarray, batch: int) -> np.ndarray:
    out = np.empty_like(windows)
    with torch.inference_mode():
        for i in range(0, windows.shape[0], batch):
            out[i : i + batch] = module(torch.from_numpy(windows[i : i + batch])).numpy()
    return out


def _run_model(module: torch.nn.Module, detector: RoiDetector, data: _Data, batch: int) -> _Run:
    t0 = time.perf_counter()
    prepared = [detector.prepare(x) for x in data.spectra]
    counts = [w.shape[0] for w, _ in prepared]
    windows = np.concatenate([w for w, _ in prepared]) if prepared else np.zeros((0, 1, 512))
    out = _infer(module, windows.astype(np.float32), batch)
    bounds = np.cumsum(counts)[:-1]
    logits, intervals, tables = [], [], []
    for x, (_, plan), z in zip(data.spectra, prepared, np.split(out, bounds), strict=True):
        sample_logits = detector.logits(z, plan)
        iv = detector.intervals(sample_logits)
        logits.append(sample_logits)
        intervals.append(iv)
        tables.append(detector.peaks(x, iv))
    return _Run(intervals, tables, logits, time.perf_counter() - t0)


def _rerun_post(detector: RoiDetector, data: _Data, run: _Run) -> _Run:
    """Same logits, other post-processing (ablations need no second inference)."""
    assert run.logits is not None
    t0 = time.perf_counter()
    intervals = [detector.intervals(z) for z in run.logits]
    tables = [detector.peaks(x, iv) for x, iv in zip(data.spectra, intervals, strict=True)]
    return _Run(intervals, tables, run.logits, time.perf_counter() - t0)


def _run_baseline(det: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], data: _Data) -> _Run:
    t0 = time.perf_counter()
    intervals, tables = [], []
    for x in data.spectra:
        iv, table = det(x)
        intervals.append(iv)
        tables.append(table)
    return _Run(intervals, tables, None, time.perf_counter() - t0)


def _run_oracle(detector: RoiDetector, data: _Data) -> _Run:
    """The detector's read-out fed the true ROIs."""
    t0 = time.perf_counter()
    intervals = [mask_to_intervals(m) for m in data.roi]
    tables = [detector.peaks(x, iv) for x, iv in zip(data.spectra, intervals, strict=True)]
    return _Run(intervals, tables, None, time.perf_counter() - t0)


# --- scoring -------------------------------------------------------------------------------



def _mean(v: np.ndarray) -> float | None:
    return float(np.mean(v)) if v.size else None


@dataclass
class _Scored:
    forgiven: np.ndarray
    unforgiven: np.ndarray
    bce: np.ndarray | None
    peaks: Any  # metrics.PeakScores


def _score(data: _Data, run: _Run) -> _Scored:
    masks = [
        intervals_to_mask(iv, x.size) for iv, x in zip(run.intervals, data.spectra, strict=True)
    ]
    forgiven, unforgiven = roi_loss(masks, data.roi, data.peaks)
    bce = None
    if run.logits is not None:
        bce = np.array(
            [
                bce_with_logits(z[None, :], t[None, :])[0]
                for z, t in zip(run.logits, data.roi, strict=True)
            ]
        )
    return _Scored(
        forgiven, unforgiven, bce, score_peaks(run.tables, data.peaks, tolerance=_TOLERANCE_SAMPLES)
    )


def _summary(s: _Scored, select: np.ndarray | None = None) -> dict[str, Any]:
    n = s.forgiven.size
    sel = np.ones(n, bool) if select is None else select
    out: dict[str, Any] = {
        "roi_loss": _mean(s.forgiven[sel]),
        "roi_loss_unforgiven": _mean(s.unforgiven[sel]),
    }
    if s.bce is not None:
        out["bce"] = _mean(s.bce[sel])
    out.update(peak_summary(s.peaks, sel))
    return {k: json_number(v) for k, v in out.items()}


def _by_band(s: _Scored, bands: np.ndarray) -> dict[str, Any]:
    return {name: _summary(s, bands == b) for b, name in enumerate(BAND_NAMES)}


def _false_peaks(tables: Sequence[np.ndarray], band: np.ndarray) -> dict[str, Any]:
    counts = np.array([len(t) for t in tables], dtype=np.float64)

    def one(sel: np.ndarray) -> dict[str, Any]:
        c = counts[sel]
        return {
            "n_spectra": int(sel.sum()),
            "false_peaks_per_spectrum": json_number(_mean(c)),
            "fraction_with_false_peaks": json_number(_mean((c > 0).astype(float))),
        }

    return {
        "overall": one(np.ones(counts.size, bool)),
        "by_snr": {name: one(band == b) for b, name in enumerate(BAND_NAMES)},
    }


def _resolvable_fraction(data: _Data) -> tuple[np.ndarray, np.ndarray]:
    """Per spectrum: true peaks that are separate local maxima of the noiseless peak sum
    (matched one-to-one within the tolerance), and the number of true peaks.

    Rebuilds the Hann profiles of the paper protocol (``sin^2(pi (j+1) / (w+1))``, see
    :mod:`devices.spectra_sim`); only meaningful for the Hann test set.
    """
    hits = np.zeros(len(data), np.int64)
    total = np.zeros(len(data), np.int64)
    for i, (x, pk) in enumerate(zip(data.spectra, data.peaks, strict=True)):
        clean = np.zeros(x.size + 2)
        for p in pk:
            j = np.arange(p["width"])
            clean[p["start"] + 1 : p["end"] + 1] += (
                p["height"] * np.sin(np.pi * (j + 1) / (p["width"] + 1)) ** 2
            )
        d = np.diff(clean)
        # maxima, plateaus included (rise then non-rise ... fall)
        maxima = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0)).astype(float)
        ip, _ = match_peaks(maxima, pk["center"], _TOLERANCE_SAMPLES)
        hits[i] = ip.size
        total[i] = len(pk)
    return hits, total


# --- the report ----------------------------------------------------------------------------


def _model_budget(spec: Any) -> dict[str, Any]:
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


def _progress(enabled: bool, msg: str) -> None:
    if enabled:
        print(f"[eval roi] {msg}", file=sys.stderr, flush=True)


def evaluate_roi(
    *,
    json_path: Path | None,
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
    """Run the ROI evaluation, print a table to stdout, write the JSON report; return it.

    ``n_test`` paper-protocol test spectra (first ``n_test`` of the fixed test stream);
    baselines on the first ``min(n_baseline, n_test)`` of them; ``n_ood`` spectra spread over
    :func:`ood_groups`; baselines tuned on ``n_validation`` validation spectra.
    ``backend``: only ``"eager"`` (this report does not depend on compiled backends).
    ``threads``: torch intra-op threads (default: the CPUs this process may use).
    """
    if backend != "eager":
        raise ValueError(f"evaluate_roi runs models eagerly; backend {backend!r} not supported")
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {MODEL_NAMES}")
    if n_test < 1:
        raise ValueError("n_test must be >= 1")
    from engines.roi.specs import ROI_SPECS

    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    n_threads = threads or len(os.sched_getaffinity(0))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        det_cfg = detector_config or RoiDetectorConfig()
        detector = RoiDetector(det_cfg)
        paper = SpectrumSimConfig()
        snr_range = paper.snr_db
        edges = snr_band_edges(snr_range)

        # --- data
        t0 = time.perf_counter()
        _progress(progress, f"simulating {n_test} test spectra")
        test = _simulate(n_test, paper, _rng(seed, "test"), "test")
        test_band = snr_bands(test.snr_db, snr_range)
        n_base = min(n_baseline, n_test)
        base_sel = np.zeros(n_test, bool)
        base_sel[:n_base] = True
        val = _simulate(n_validation, paper, _rng(seed, "validation"), "validation")
        pf_rng = _rng(seed, "peak_free")
        pf_parts = []
        for b, name in enumerate(BAND_NAMES):
            free = replace(paper, n_peaks=(0, 0), snr_db=(float(edges[b]), float(edges[b + 1])))
            part = _simulate(n_peak_free_per_band, free, pf_rng, name)
            pf_parts.append(part)
        peak_free = _Data.concat(pf_parts)
        pf_band = np.repeat(np.arange(3), n_peak_free_per_band)
        groups = ood_groups()
        per_group = max(1, n_ood // len(groups))
        ood_rng = _rng(seed, "ood")
        ood = _Data.concat([_simulate(per_group, g, ood_rng, name) for name, g in groups])
        ood_band = snr_bands(ood.snr_db, snr_range)
        wr_rng = _rng(seed, "windowing")
        wr = _Data.concat(
            [
                _simulate(n_windowing_per_length, SpectrumSimConfig(length=n), wr_rng, f"L{n}")
                for n in _WR_LENGTHS
            ]
        )
        timing["simulate"] = time.perf_counter() - t0

        report: dict[str, Any] = {
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
                "peak_match": f"one-to-one (optimal assignment) within +-{_TOLERANCE_SAMPLES} "
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
                "streams": {k: [seed, v] for k, v in _TAGS.items()},
                "chunk_spectra": _CHUNK,
            },
            "sizes": {
                "n_test": n_test,
                "n_baseline_subset": n_base,
                "baseline_subset": f"first {n_base} spectra of the test set",
                "n_validation_tuning": n_validation,
                "n_peak_free": len(peak_free),
                "n_ood": len(ood),
                "n_ood_per_group": per_group,
                "n_windowing_per_length": n_windowing_per_length,
            },
            "protocol": jsonable(asdict(paper)),
            "detector": jsonable(asdict(det_cfg)),
            "threads": n_threads,
            "backend": backend,
            "models": {},
            "skipped": {},
        }

        # --- context: what the read-out can do with perfect ROIs
        t0 = time.perf_counter()
        oracle = _score(test, _run_oracle(detector, test))
        one_peak = RoiDetector(replace(det_cfg, split_prominence_sigma=None))
        oracle_one = _score(test, _run_oracle(one_peak, test))
        maxima_only = RoiDetector(replace(det_cfg, shoulder_sigma=None))
        oracle_maxima = _score(test, _run_oracle(maxima_only, test))
        hits, totals = _resolvable_fraction(test)

        def resolvable(sel: np.ndarray) -> float | None:
            t = totals[sel].sum()
            return float(hits[sel].sum() / t) if t else None

        report["context"] = {
            "true_roi_readout": {
                "note": "the detector's read-out fed the true ROIs: an upper bound on the "
                "peak figures of any ROI segmenter with this read-out",
                "overall": _summary(oracle),
                "by_snr": _by_band(oracle, test_band),
                "one_peak_per_roi": _summary(oracle_one),
                "no_shoulders": _summary(oracle_maxima),
            },
            "resolvable_peak_fraction": {
                "note": "true peaks that are separate local maxima (within the match "
                "tolerance) of the noiseless peak signal; the rest merge with a neighbour",
                "overall": resolvable(np.ones(n_test, bool)),
                "by_snr": {n: resolvable(test_band == b) for b, n in enumerate(BAND_NAMES)},
            },
        }
        timing["context"] = time.perf_counter() - t0

        # --- neural models
        runs: dict[str, tuple[_Run, _Run]] = {}  # test, peak-free
        modules: dict[str, torch.nn.Module] = {}
        for name in models:
            spec = ROI_SPECS[name]
            try:
                module = spec.load()
            except WeightsError as exc:
                report["skipped"][name] = str(exc)
                report["models"][name] = {
                    "skipped": str(exc),
                    "roi_loss": None,
                    "bce": None,
                    "peak_f1": None,
                }
                _progress(progress, f"skipping {name}: {exc}")
                continue
            modules[name] = module
            _progress(progress, f"{name}: {n_test} test spectra")
            run = _run_model(module, detector, test, batch)
            scored = _score(test, run)
            raw_mask = [z > det_cfg.threshold_logit for z in run.logits or []]
            thr_only, _ = roi_loss(raw_mask, test.roi, test.peaks)
            pf_run = _run_model(module, detector, peak_free, batch)
            runs[name] = (run, pf_run)
            entry = _summary(scored)
            entry["roi_loss_threshold_only"] = json_number(_mean(thr_only))
            entry["by_snr"] = _by_band(scored, test_band)
            for b, bn in enumerate(BAND_NAMES):
                entry["by_snr"][bn]["roi_loss_threshold_only"] = json_number(
                    _mean(thr_only[test_band == b])
                )
            entry["baseline_subset"] = {
                "overall": _summary(scored, base_sel),
                "by_snr": {
                    bn: _summary(scored, base_sel & (test_band == b))
                    for b, bn in enumerate(BAND_NAMES)
                },
            }
            entry["peak_free"] = _false_peaks(pf_run.tables, pf_band)
            entry["false_peaks_per_peak_free_spectrum"] = entry["peak_free"]["overall"][
                "false_peaks_per_spectrum"
            ]
            entry["budget"] = _model_budget(spec)
            entry["seconds"] = {
                "test": run.seconds,
                "peak_free": pf_run.seconds,
                "per_spectrum_ms": 1e3 * run.seconds / n_test,
            }
            report["models"][name] = entry
            timing[f"model_{name}"] = run.seconds + pf_run.seconds

        # --- post-processing ablation on the product model (same logits)
        if "resnet_unet" in runs:
            run, pf_run = runs["resnet_unet"]
            abl: dict[str, Any] = {
                "note": "the same logits read with one setting of the detector changed"
            }
            for label, cfg in (
                ("one_peak_per_roi", replace(det_cfg, split_prominence_sigma=None)),
                ("no_shoulders", replace(det_cfg, shoulder_sigma=None)),
                ("no_min_peak_height", replace(det_cfg, min_peak_height_sigma=None)),
                ("min_roi_width_1", replace(det_cfg, min_roi_width_samples=1)),
            ):
                s = _score(test, _rerun_post(RoiDetector(cfg), test, run))
                pf = _rerun_post(RoiDetector(cfg), peak_free, pf_run)
                abl[label] = {
                    "config": jsonable(asdict(cfg)),
                    "overall": _summary(s),
                    "by_snr": _by_band(s, test_band),
                    "peak_free": _false_peaks(pf.tables, pf_band),
                }
            report["postprocessing_ablation_resnet_unet"] = abl

        # --- classical baselines
        t0 = time.perf_counter()
        _progress(progress, f"tuning baselines on {n_validation} validation spectra")
        val_x = np.stack(val.spectra)
        val_roi = np.stack(val.roi)
        arpls, arpls_log = tune_arpls_find_peaks(val_x, val_roi, val.peaks)
        cwt, cwt_log = tune_find_peaks_cwt(val_x, val_roi, val.peaks)
        timing["baseline_tuning"] = time.perf_counter() - t0
        test_base = test.take(np.flatnonzero(base_sel))
        base_band = test_band[base_sel]
        baselines: dict[str, Any] = {
            "arpls_find_peaks": (arpls, arpls_log),
            "find_peaks_cwt": (cwt, cwt_log),
        }
        base_dets: dict[str, Any] = {}
        for name, (det, log) in baselines.items():
            _progress(progress, f"{name}: {n_base} test spectra")
            run = _run_baseline(det, test_base)
            scored = _score(test_base, run)
            pf_run = _run_baseline(det, peak_free)
            entry = _summary(scored)
            entry["by_snr"] = _by_band(scored, base_band)
            entry["n_spectra_note"] = f"evaluated on the first {n_base} test spectra"
            entry["peak_free"] = _false_peaks(pf_run.tables, pf_band)
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
            report["models"][name] = entry
            base_dets[name] = det
            timing[f"baseline_{name}"] = run.seconds + pf_run.seconds

        # --- out of distribution
        t0 = time.perf_counter()
        ood_report: dict[str, Any] = {
            "groups": {name: jsonable(asdict(g)) for name, g in groups},
            "strategy": det_cfg.strategy,
            "note": "baselines keep the parameters tuned on paper-protocol validation spectra",
            "models": {},
        }
        for name in [*modules, *base_dets]:
            _progress(progress, f"{name}: {len(ood)} out-of-distribution spectra")
            if name in modules:
                run = _run_model(modules[name], detector, ood, batch)
            else:
                run = _run_baseline(base_dets[name], ood)
            scored = _score(ood, run)
            entry = _summary(scored)
            entry["by_snr"] = _by_band(scored, ood_band)
            entry["by_group"] = {g: _summary(scored, ood.group == g) for g, _ in groups}
            entry["seconds"] = run.seconds
            ood_report["models"][name] = entry
        report["ood"] = ood_report
        timing["ood"] = time.perf_counter() - t0

        # --- windowing vs resampling
        t0 = time.perf_counter()
        report["windowing_vs_resampling"] = _windowing_report(
            modules, det_cfg, wr, snr_range, batch, progress
        )
        timing["windowing_vs_resampling"] = time.perf_counter() - t0

        report["targets"] = _targets(report)
        timing["total"] = time.perf_counter() - t_start
        report["timing_s"] = timing
    finally:
        torch.set_num_threads(old_threads)

    print(format_table(report))
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        _progress(progress, f"wrote {json_path}")
    return report


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


def _windowing_report(
    modules: dict[str, torch.nn.Module],
    base: RoiDetectorConfig,
    data: _Data,
    snr_range: tuple[float, float],
    batch: int,
    progress: bool,
) -> dict[str, Any]:
    """Each length strategy on lengths 256-4096 (paper peaks): all variants for resnet_unet
    (or the first model available), window-vs-resample only for the others."""
    out: dict[str, Any] = {
        "lengths": list(_WR_LENGTHS),
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
            _progress(progress, f"{name}: windowing variant {label}")
            run = _run_model(module, RoiDetector(cfg), data, batch)
            s = _score(data, run)
            res[label] = {
                "config": {
                    "strategy": cfg.strategy,
                    "normalisation": cfg.normalisation,
                    "stitch": cfg.stitch,
                    "overlap_samples": cfg.overlap_samples,
                    "short": cfg.short,
                },
                "overall": _summary(s),
                "by_length": {str(n): _summary(s, data.group == f"L{n}") for n in _WR_LENGTHS},
                "by_snr": _by_band(s, band),
                "seconds": run.seconds,
            }
        best_loss = min(res, key=lambda k: res[k]["overall"]["roi_loss"] or math.inf)
        best_f1 = max(res, key=lambda k: res[k]["overall"]["peak_f1"] or -1.0)
        res["best_by_roi_loss"] = best_loss
        res["best_by_peak_f1"] = best_f1
        out["models"][name] = res
    return out


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    models = report["models"]
    out: dict[str, Any] = {"targets": dict(_TARGETS)}
    ru = models.get("resnet_unet")
    if ru is None or "skipped" in ru:
        out["note"] = "resnet_unet not evaluated"
        return out
    loss = ru["roi_loss"]
    out["resnet_unet_roi_loss"] = {
        "value": loss,
        "target_max": _TARGETS["resnet_unet_roi_loss_max"],
        "met": loss is not None and loss <= _TARGETS["resnet_unet_roi_loss_max"],
    }
    f1 = ru["peak_f1"]
    out["resnet_unet_peak_f1"] = {
        "value": f1,
        "target_min": _TARGETS["peak_f1_min"],
        "met": f1 is not None and f1 >= _TARGETS["peak_f1_min"],
    }
    low_model = ru["baseline_subset"]["by_snr"]["low"]["peak_f1"]
    base_low = {b: models[b]["by_snr"]["low"]["peak_f1"] for b in BASELINE_NAMES if b in models}
    if base_low:
        best = max(base_low, key=lambda k: base_low[k] or -1.0)
        margin = None if low_model is None or base_low[best] is None else low_model - base_low[best]
        out["low_snr_margin_over_best_baseline"] = {
            "resnet_unet_low_snr_f1": low_model,
            "best_baseline": best,
            "best_baseline_low_snr_f1": base_low[best],
            "margin": margin,
            "target_min": _TARGETS["low_snr_f1_margin_over_best_baseline"],
            "met": margin is not None
            and margin >= _TARGETS["low_snr_f1_margin_over_best_baseline"],
            "note": "both on the same baseline subset of the test set",
        }
    return out



def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def format_table(report: dict[str, Any]) -> str:
    """The readable summary printed by :func:`evaluate_roi`."""
    lines = []
    sizes = report["sizes"]
    lines.append(
        f"ROI evaluation — {sizes['n_test']} paper-protocol test spectra "
        f"(baselines: first {sizes['n_baseline_subset']}), seed {report['seeds']['root']}"
    )
    head = (
        f"{'model':<18}{'ROI loss':>9}{'unforg.':>9}{'BCE':>8}{'P':>7}{'R':>7}{'F1':>7}"
        f"{'F1 low':>8}{'F1 mid':>8}{'F1 high':>8}{'pos MAE':>8}{'h rel':>7}{'a rel':>7}"
        f"{'FP/free':>8}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for name, m in report["models"].items():
        if "skipped" in m:
            lines.append(f"{name:<18}skipped: {m['skipped']}")
            continue
        b = m["by_snr"]
        lines.append(
            f"{name:<18}{_fmt(m['roi_loss'], '.4f'):>9}{_fmt(m['roi_loss_unforgiven'], '.4f'):>9}"
            f"{_fmt(m.get('bce'), '.4f'):>8}{_fmt(m['peak_precision'], '.3f'):>7}"
            f"{_fmt(m['peak_recall'], '.3f'):>7}{_fmt(m['peak_f1'], '.3f'):>7}"
            f"{_fmt(b['low']['peak_f1'], '.3f'):>8}{_fmt(b['mid']['peak_f1'], '.3f'):>8}"
            f"{_fmt(b['high']['peak_f1'], '.3f'):>8}"
            f"{_fmt(m['position_mae_samples'], '.3f'):>8}"
            f"{_fmt(m['height_rel_err_median'], '.3f'):>7}"
            f"{_fmt(m['area_rel_err_median'], '.3f'):>7}"
            f"{_fmt(m['false_peaks_per_peak_free_spectrum'], '.3f'):>8}"
        )
    ctx = report.get("context", {})
    if ctx:
        o = ctx["true_roi_readout"]["overall"]
        lines.append(
            f"{'(true ROIs)':<18}{'':>9}{'':>9}{'':>8}{_fmt(o['peak_precision'], '.3f'):>7}"
            f"{_fmt(o['peak_recall'], '.3f'):>7}{_fmt(o['peak_f1'], '.3f'):>7}"
            f"   resolvable peaks: {_fmt(ctx['resolvable_peak_fraction']['overall'], '.3f')}"
        )
    lines.append(
        "(h rel / a rel: median relative height / area error of matched peaks; "
        "FP/free: false peaks per peak-free spectrum)"
    )
    ood = report.get("ood", {}).get("models", {})
    if ood:
        lines.append("")
        lines.append(
            f"out of distribution ({report['sizes']['n_ood']} spectra, "
            f"{len(report['ood']['groups'])} groups):"
        )
        for name, m in ood.items():
            worst = min(m["by_group"].items(), key=lambda kv: kv[1]["peak_f1"] or 0.0)
            lines.append(
                f"  {name:<18} ROI loss {_fmt(m['roi_loss'], '.4f')}  F1 "
                f"{_fmt(m['peak_f1'], '.3f')}  worst group {worst[0]} "
                f"(F1 {_fmt(worst[1]['peak_f1'], '.3f')})"
            )
    wr = report.get("windowing_vs_resampling", {}).get("models", {})
    if wr:
        lines.append("")
        lines.append("windowing vs resampling (lengths 256-4096, pooled):")
        for name, res in wr.items():
            for label, r in res.items():
                if not isinstance(r, dict):
                    continue
                lines.append(
                    f"  {name:<12} {label:<34} ROI loss "
                    f"{_fmt(r['overall']['roi_loss'], '.4f')}  F1 "
                    f"{_fmt(r['overall']['peak_f1'], '.3f')}"
                )
    t = report.get("targets", {})
    if "resnet_unet_roi_loss" in t:
        lines.append("")
        a = t["resnet_unet_roi_loss"]
        f = t["resnet_unet_peak_f1"]
        lines.append(
            f"target ResNet+UNet ROI loss <= {a['target_max']}: "
            f"{_fmt(a['value'], '.4f')} -> {'met' if a['met'] else 'NOT met'}"
        )
        lines.append(
            f"target ResNet+UNet peak F1 >= {f['target_min']}: "
            f"{_fmt(f['value'], '.3f')} -> {'met' if f['met'] else 'NOT met'}"
        )
        m = t.get("low_snr_margin_over_best_baseline")
        if m:
            lines.append(
                f"target low-SNR F1 >= best baseline ({m['best_baseline']}) + "
                f"{m['target_min']}: {_fmt(m['resnet_unet_low_snr_f1'], '.3f')} vs "
                f"{_fmt(m['best_baseline_low_snr_f1'], '.3f')} -> "
                f"{'met' if m['met'] else 'NOT met'}"
            )
    lines.append(f"total {report['timing_s']['total']:.0f} s")
    return "\n".join(lines)


def task_metric(infer: Callable[[np.ndarray], np.ndarray], *, batch: int, n: int = 300,
                seed: int = 0) -> float:
    """Peak F1 of the shipped detector on ``n`` test spectra when the model's windows
    ``(B, 1, 512) -> (B, 1, 512)`` logits are computed by ``infer`` (batches of at most
    ``batch``): the task metric an engine must leave unchanged (:mod:`engines.gates`)."""
    data = _simulate(n, SpectrumSimConfig(), _rng(seed, "test"), "test")

    def module(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(infer(np.ascontiguousarray(x.numpy())))

    run = _run_model(module, RoiDetector(), data, batch)  # type: ignore[arg-type]
    f1 = peak_summary(_score(data, run).peaks)["peak_f1"]
    return float("nan") if f1 is None else float(f1)
