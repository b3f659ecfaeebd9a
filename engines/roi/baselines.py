"""Classical ROI/peak detectors to compare the neural segmenters against.

Both give the same output as the neural path, ROI intervals plus a peak table, so every metric
applies uniformly. The peaks are the classical detector's own apexes; their position, height,
area and FWHM are read by the same post-processing as the neural path's
(:func:`engines.roi.peaks.peak_table`: linear baseline between the ROI's edges, same
sub-sample estimator):

- :class:`ArplsFindPeaks`: asymmetrically reweighted penalised least squares baseline
  (``pybaselines`` arPLS, smoothness ``lam``) subtracted, then ``scipy.signal.find_peaks``
  with a prominence of ``prominence_sigma`` noise sigmas and a FWHM of at least
  ``min_fwhm_samples``; each peak's ROI is its width at ``rel_height`` of its prominence
  (``scipy.signal.peak_widths``), overlapping ROIs merged.
- :class:`FindPeaksFit`: the classical multi-peak fit, :class:`ArplsFindPeaks`' peaks as the
  starting points of a joint Levenberg-Marquardt fit of pseudo-Voigt peaks plus a spline
  background on the raw spectrum (:func:`engines.roi.peak_fit.fit_peaks`, the fit the neural
  read-out uses too, so the two differ only in where the fit starts).
- :class:`CwtFindPeaks`: ``scipy.signal.find_peaks_cwt`` (Ricker wavelets of widths
  ``widths``, ridge lines with ``min_snr``) on the raw spectrum, which needs no baseline
  removal; each apex is moved to the highest sample within 2 samples, apexes with a prominence
  (on the raw spectrum) below ``min_prominence_sigma`` noise sigmas are dropped (``0`` keeps
  them all; without this filter the CWT's own noise test lets through many noise ridges on
  these spectra, precision ~0.3–0.5), and each ROI is the apex's width at ``rel_height`` of its
  prominence on the raw spectrum.

:func:`tune_arpls_find_peaks` and :func:`tune_find_peaks_cwt` pick parameters on validation
spectra by a small grid: the detection parameters by peak F1 (the figure the neural models
are held against), then ``rel_height``, which only sets the ROI extents, by the forgiven ROI
loss (see :mod:`engines.roi.metrics`).

Pure numpy/scipy/pybaselines; no state beyond the frozen parameters.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import numpy as np
from scipy.signal import find_peaks, find_peaks_cwt, peak_prominences, peak_widths

from engines.roi.metrics import peak_summary, roi_loss, score_peaks
from engines.roi.peak_fit import FitShape, PeakFitConfig, fit_peaks
from engines.roi.peaks import (
    estimate_noise_sigma,
    intervals_to_mask,
    mask_to_intervals,
    peak_table,
    peaks_to_dicts,
)

__all__ = [
    "ArplsFindPeaks",
    "CwtFindPeaks",
    "FindPeaksFit",
    "tune_arpls_find_peaks",
    "tune_find_peaks_cwt",
]


def _rois_from_widths(signal: np.ndarray, apex: np.ndarray, rel_height: float) -> np.ndarray:
    """Merged ROI intervals: each apex's width at ``rel_height`` of its prominence."""
    n = signal.size
    if apex.size == 0:
        return np.zeros((0, 2), np.int64)
    with warnings.catch_warnings():
        # an apex on a plateau edge has prominence/width 0: its ROI is then just itself
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's PeakPropertyWarning
        _, _, left, right = peak_widths(signal, apex, rel_height=rel_height)
    s = np.clip(np.floor(left).astype(np.int64), 0, n - 1)
    e = np.clip(np.ceil(right).astype(np.int64) + 1, 1, n)
    return mask_to_intervals(intervals_to_mask(np.stack([s, e], axis=1), n))


def _as_dict(iv: np.ndarray, table: np.ndarray) -> dict[str, Any]:
    return {"roi": [[int(a), int(b)] for a, b in iv], "peaks": peaks_to_dicts(table)}


@dataclass(frozen=True, kw_only=True)
class ArplsFindPeaks:
    """arPLS baseline removal + ``find_peaks``; call on a spectrum (L,) -> (intervals, peaks)."""

    lam: float = 1e4
    prominence_sigma: float = 6.0
    min_fwhm_samples: float = 1.5
    rel_height: float = 0.85

    name = "arpls_find_peaks"

    def baseline(self, x: np.ndarray) -> np.ndarray:
        """arPLS baseline of ``x`` (L,) float64."""
        from pybaselines import Baseline  # optional dependency (extra "eval")

        fitter = Baseline(x_data=np.arange(x.size, dtype=np.float64))
        base, _ = fitter.arpls(x, lam=self.lam)
        return np.asarray(base, dtype=np.float64)

    def apexes(self, x: np.ndarray, corrected: np.ndarray) -> np.ndarray:
        """Peak samples found on the baseline-corrected spectrum."""
        sigma = estimate_noise_sigma(x)
        apex, _ = find_peaks(
            corrected,
            prominence=max(self.prominence_sigma * sigma, 1e-12),
            width=self.min_fwhm_samples,
        )
        return apex

    def from_corrected(self, x: np.ndarray, corrected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(intervals, peak table) given the spectrum and its baseline-corrected version."""
        apex = self.apexes(x, corrected)
        iv = _rois_from_widths(corrected, apex, self.rel_height)
        return iv, peak_table(x, iv, apexes=apex)

    def __call__(self, spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(spectrum, dtype=np.float64)
        return self.from_corrected(x, x - self.baseline(x))

    def detect(self, spectrum: np.ndarray) -> dict[str, Any]:
        """Same dict as :meth:`engines.roi.detector.RoiDetector.finish`."""
        return _as_dict(*self(spectrum))

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class FindPeaksFit:
    """``find`` (tuned arPLS + ``find_peaks``) refined by a joint fit; (L,) -> (intervals,
    peaks), the peaks with the fit's fields (:data:`engines.roi.peak_fit.FIT_PEAK_DTYPE`)."""

    find: ArplsFindPeaks
    shape: FitShape = "pvoigt"
    iterations: int = 8

    name = "find_peaks_fit"

    def __call__(self, spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(spectrum, dtype=np.float64)
        iv, found = self.find(x)
        if x.size < 16:  # too short for a peak and a background spline
            return iv, found
        starts = np.zeros(found.size, [("index", np.float64), ("width", np.float64)])
        starts["index"] = found["index"]
        starts["width"] = np.maximum(2.0 * found["width"] - 1.0, 1.0)  # FWHM -> support
        fit = PeakFitConfig(shape=self.shape, iterations=self.iterations)
        return iv, fit_peaks(x[None, :], [starts], fit)[0]

    def params(self) -> dict[str, Any]:
        return {"find": self.find.params(), "shape": self.shape, "iterations": self.iterations}


@dataclass(frozen=True, kw_only=True)
class CwtFindPeaks:
    """``find_peaks_cwt`` on the raw spectrum; call on (L,) -> (intervals, peaks)."""

    widths: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0)
    min_snr: float = 1.0
    noise_perc: float = 10.0
    min_prominence_sigma: float = 6.0
    rel_height: float = 0.5

    name = "find_peaks_cwt"

    def apexes(self, x: np.ndarray) -> np.ndarray:
        """Peak samples: CWT ridge-line ends moved to the highest sample within 2 samples."""
        cand = np.asarray(
            find_peaks_cwt(
                x, np.asarray(self.widths), min_snr=self.min_snr, noise_perc=self.noise_perc
            ),
            dtype=np.int64,
        )
        if cand.size == 0:
            return cand
        offs = np.arange(-2, 3)
        idx = np.clip(cand[:, None] + offs[None, :], 0, x.size - 1)
        apex = np.unique(idx[np.arange(cand.size), np.argmax(x[idx], axis=1)])
        return self.prominent(x, apex)

    def prominent(self, x: np.ndarray, apex: np.ndarray) -> np.ndarray:
        """The apexes whose prominence on ``x`` is at least ``min_prominence_sigma`` sigmas."""
        if self.min_prominence_sigma <= 0 or apex.size == 0:
            return apex
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's PeakPropertyWarning
            prom = peak_prominences(x, apex)[0]
        return apex[prom >= self.min_prominence_sigma * estimate_noise_sigma(x)]

    def from_apexes(self, x: np.ndarray, apex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(intervals, peak table) given the spectrum and the apexes found on it."""
        iv = _rois_from_widths(x, apex, self.rel_height)
        return iv, peak_table(x, iv, apexes=apex)

    def __call__(self, spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(spectrum, dtype=np.float64)
        return self.from_apexes(x, self.apexes(x))

    def detect(self, spectrum: np.ndarray) -> dict[str, Any]:
        """Same dict as :meth:`engines.roi.detector.RoiDetector.finish`."""
        return _as_dict(*self(spectrum))

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _score(
    results: Sequence[tuple[np.ndarray, np.ndarray]],
    true_roi: np.ndarray,
    true_peaks: Sequence[np.ndarray],
) -> tuple[float, float]:
    """(peak F1, forgiven ROI loss) of detector results on validation spectra."""
    f1 = peak_summary(score_peaks([t for _, t in results], true_peaks))["peak_f1"] or 0.0
    length = true_roi.shape[1]
    masks = [intervals_to_mask(iv, length) for iv, _ in results]
    forgiven, _ = roi_loss(masks, true_roi, true_peaks)
    return float(f1), float(forgiven.mean())


def _trial(
    cand: ArplsFindPeaks | CwtFindPeaks,
    results: Sequence[tuple[np.ndarray, np.ndarray]],
    true_roi: np.ndarray,
    true_peaks: Sequence[np.ndarray],
    trials: list[dict[str, Any]],
) -> tuple[float, float]:
    """Score a candidate's ``results`` on the validation spectra (:func:`_score`) and append
    the trial, its parameters and both figures, to ``trials``; returns (peak F1, ROI loss)."""
    f1, loss = _score(results, true_roi, true_peaks)
    trials.append({**cand.params(), "peak_f1": f1, "roi_loss": loss})
    return f1, loss


_REL_HEIGHTS = (0.5, 0.7, 0.85, 0.95, 1.0)


def _log(x: np.ndarray, trials: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "objective": "detection parameters by peak F1, then rel_height (ROI extent) by ROI loss",
        "n_validation": int(x.shape[0]),
        "trials": trials,
    }


def tune_arpls_find_peaks(
    spectra: np.ndarray, true_roi: np.ndarray, true_peaks: Sequence[np.ndarray]
) -> tuple[ArplsFindPeaks, dict[str, Any]]:
    """Grid-tune :class:`ArplsFindPeaks` on validation spectra (n, L); returns it and a log."""
    x = np.asarray(spectra, dtype=np.float64)
    base = ArplsFindPeaks()
    trials: list[dict[str, Any]] = []
    best_f1, best = -1.0, base
    best_corrected: list[np.ndarray] = []
    # arPLS is the slow part: fit once per lam, then grid the cheap find_peaks parameters
    for lam in (1e2, 1e3, 1e4, 1e5):
        det = replace(base, lam=lam)
        corrected = [xi - det.baseline(xi) for xi in x]
        for k, w in itertools.product((4.0, 6.0, 8.0), (1.5, 2.5)):
            cand = replace(det, prominence_sigma=k, min_fwhm_samples=w)
            results = [cand.from_corrected(xi, ci) for xi, ci in zip(x, corrected, strict=True)]
            f1, _ = _trial(cand, results, true_roi, true_peaks, trials)
            if f1 > best_f1:
                best_f1, best, best_corrected = f1, cand, corrected
    final = _tune_extent(
        best,
        lambda cand: [
            cand.from_corrected(xi, ci) for xi, ci in zip(x, best_corrected, strict=True)
        ],
        true_roi,
        true_peaks,
        trials,
    )
    return final, _log(x, trials)


def tune_find_peaks_cwt(
    spectra: np.ndarray, true_roi: np.ndarray, true_peaks: Sequence[np.ndarray]
) -> tuple[CwtFindPeaks, dict[str, Any]]:
    """Grid-tune :class:`CwtFindPeaks` on validation spectra (n, L); returns it and a log."""
    x = np.asarray(spectra, dtype=np.float64)
    base = CwtFindPeaks()
    trials: list[dict[str, Any]] = []
    best_f1, best = -1.0, base
    best_apexes: list[np.ndarray] = []
    width_sets = ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0), (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0))
    for widths, snr in itertools.product(width_sets, (0.5, 1.0, 2.0)):
        # the CWT is the slow part: run it once per (widths, min_snr), then filter
        raw = [
            replace(base, widths=widths, min_snr=snr, min_prominence_sigma=0.0).apexes(xi)
            for xi in x
        ]
        for k in (0.0, 3.0, 6.0, 10.0):
            cand = replace(base, widths=widths, min_snr=snr, min_prominence_sigma=k)
            apexes = [cand.prominent(xi, a) for xi, a in zip(x, raw, strict=True)]
            results = [cand.from_apexes(xi, a) for xi, a in zip(x, apexes, strict=True)]
            f1, _ = _trial(cand, results, true_roi, true_peaks, trials)
            if f1 > best_f1:
                best_f1, best, best_apexes = f1, cand, apexes
    final = _tune_extent(
        best,
        lambda cand: [cand.from_apexes(xi, a) for xi, a in zip(x, best_apexes, strict=True)],
        true_roi,
        true_peaks,
        trials,
    )
    return final, _log(x, trials)


_D = TypeVar("_D", ArplsFindPeaks, CwtFindPeaks)


def _tune_extent(
    best: _D,
    detect: Callable[[_D], list[tuple[np.ndarray, np.ndarray]]],
    true_roi: np.ndarray,
    true_peaks: Sequence[np.ndarray],
    trials: list[dict[str, Any]],
) -> _D:
    """Second stage of tuning: with the detection parameters fixed (chosen by peak F1), pick
    the ROI extent (``rel_height``) by ROI loss. ``detect(candidate)`` gives its detections on
    the validation spectra; every trial is appended to ``trials``."""
    best_loss, final = np.inf, best
    for r in _REL_HEIGHTS:
        cand = replace(best, rel_height=r)
        _, loss = _trial(cand, detect(cand), true_roi, true_peaks, trials)
        if loss < best_loss:
            best_loss, final = loss, cand
    return final
