"""Spectrum in, ROI list and peak list out, around any engine that maps (n, 1, 512) windows to
ROI logits (n, 1, 512) or to the peak heads (n, 5, 512) of :mod:`engines.roi.peak_heads`.

:class:`RoiDetector` is the pure-numpy half of the spectral path: ``prepare`` turns one
spectrum of any length into model windows, the caller runs them through an engine (batched
with other spectra as it likes), and ``finish`` turns the logits back into the published
result::

    det = RoiDetector(RoiDetectorConfig())
    windows, plan = det.prepare(spectrum)          # (n, 1, 512) float32
    result = det.finish(spectrum, engine(windows), plan)
    # {"roi": [[start, end], ...], "peaks": [{"index", "height", "area", "width",
    #                                         "start", "end"}, ...]}

Indices are samples of the input spectrum (``end`` exclusive); ``height`` and ``area`` are in
the input spectrum's own units (peaks are read from the raw spectrum, not the normalised
windows); ``width`` is the FWHM in samples. Everything is a plain Python int/float/bool, so the
result can be msgpack-encoded as is.

The read-out follows the model's output. ROI logits: peaks are read inside each ROI
(:mod:`engines.roi.peaks`), ``start``/``end`` the ROI's bounds. Peak heads: peaks come from the
centre heatmap, refined by a joint fit of peaks and background (:mod:`engines.roi.peak_readout`),
``start``/``end`` the samples within a FWHM of its centre, and each peak adds ``index_sd`` and
``height_sd`` (standard errors from the fit) and ``overlaps`` (it meets a neighbour within
their FWHMs).

No state beyond the frozen config: one detector may serve any number of threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.errors import InputContractError
from engines.roi.peak_decode import HEATMAP_THRESHOLD, N_HEADS
from engines.roi.peak_fit import FitShape, PeakFitConfig
from engines.roi.peak_readout import heads_peak_dicts, read_heads
from engines.roi.peaks import (
    estimate_noise_sigma,
    intervals_to_mask,
    mask_to_intervals,
    peak_table,
    peaks_to_dicts,
    shoulder_noise_gain,
)
from engines.roi.windowing import (
    MAX_LENGTH_SAMPLES,
    WINDOW_SAMPLES,
    Normalisation,
    Short,
    Stitch,
    Strategy,
    WindowPlan,
    check_spectrum,
    from_windows,
    to_windows,
)

__all__ = ["RoiDetector", "RoiDetectorConfig", "detect"]


@dataclass(frozen=True, kw_only=True)
class RoiDetectorConfig:
    """Settings of :class:`RoiDetector`.

    ``threshold``: ROI where sigmoid(logit) > threshold (0.5 = the trained decision).
    ``min_roi_width_samples``: ROI runs shorter than this are dropped.
    ``strategy``/``overlap_samples``/``normalisation``/``stitch``/``short``: how spectra that
    are not 512 samples long are served (see :mod:`engines.roi.windowing`, which also gives
    the measurements behind the defaults).
    ``split_prominence_sigma``: a local maximum inside an ROI whose prominence is at least
    this many noise sigmas (estimated from the spectrum outside the ROIs) is a peak of its
    own, so merged overlapping peaks are reported separately; None = one peak per ROI (the
    paper's literal read-out). 3 was best by peak F1 on validation spectra (ResNet+UNet:
    2.5-3 equal, 4-8 lose recall, 1.5-2 lose precision; one peak per ROI loses ~0.12 F1).
    ``min_peak_height_sigma``: peaks lower than this many noise sigmas above their ROI's
    baseline are left out of the peak list (the ROIs stay: they are the segmenter's answer);
    None keeps every peak. The segmenters never saw a peak-free spectrum in training and,
    min-max normalised, its noise and background wiggles get flagged; on validation spectra
    (ResNet+UNet) 5 sigma cut the false peaks per peak-free spectrum from ~3.2 to ~0.04 at no
    cost in peak F1 (4 sigma: ~0.2; 6 sigma starts to cost recall). The peak-head read-out
    applies it too, with the noise of the whole spectrum: on 2,000 test and 600 peak-free
    spectra it cut the false peaks of the paper-protocol heads from 1.15 to 0 per peak-free
    spectrum for 0.0025 of F1 (3 sigma: 0.035 false peaks, no F1 cost; the mixed-shape model
    was at 0.033 without it).
    ``shoulder_sigma``/``shoulder_window_samples``/``shoulder_separation_samples``: with
    ``shoulder_sigma`` set (and ``split_prominence_sigma`` too), shoulders are peaks as well:
    maxima of minus the Savitzky-Golay second derivative (quadratic, that window) of the
    spectrum inside an ROI, at least ``shoulder_sigma`` noise sigmas of that derivative deep
    and at least that separation from every prominent maximum and deeper shoulder
    (:func:`engines.roi.peaks.peak_table`); None = maxima only. Tuned by peak F1 on
    1,000 validation spectra (ResNet+UNet logits and true ROIs; window 5-11, 6-14 sigma,
    separation 3-7): 8 sigma, window 7, separation 5 was best, F1 0.858 -> 0.864 (recall
    +1.5 points, precision -0.7), the whole grid within 0.004 of it; 5 sigma or separation
    < 4 lose precision. It costs ~60-80 us per 512-sample spectrum. Most peaks the read-out
    still misses lie within a FWHM of a neighbour, where no curvature read-out separates them.
    ``max_length_samples``: longer spectra are rejected.

    Peak-head models only: ``heatmap_threshold`` the centre probability that makes a peak;
    ``peak_fit`` the shape of the joint fit (``"pvoigt"``: pseudo-Voigt, any of the served
    model's shapes; ``"hann"``: the paper's peaks; None: no fit, the heads' own measurements);
    ``fit_iterations`` its Levenberg-Marquardt steps (the heads start it within a sample or
    two: 4 steps gave the same peak F1 as 8 and 12 on validation spectra).
    """

    threshold: float = 0.5
    min_roi_width_samples: int = 2
    strategy: Strategy = "window"
    overlap_samples: int = 128
    normalisation: Normalisation = "window"
    stitch: Stitch = "centre"
    short: Short = "resample"
    split_prominence_sigma: float | None = 3.0
    min_peak_height_sigma: float | None = 5.0
    shoulder_sigma: float | None = 8.0
    shoulder_window_samples: int = 7
    shoulder_separation_samples: int = 5
    max_length_samples: int = MAX_LENGTH_SAMPLES
    heatmap_threshold: float = HEATMAP_THRESHOLD
    peak_fit: FitShape | None = "pvoigt"
    fit_iterations: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.min_roi_width_samples < 1:
            raise ValueError("min_roi_width_samples must be >= 1")
        if self.strategy not in ("window", "resample"):
            raise ValueError(f"strategy must be 'window' or 'resample', got {self.strategy!r}")
        if not 0 <= self.overlap_samples < WINDOW_SAMPLES:
            raise ValueError(f"overlap_samples must be in [0, {WINDOW_SAMPLES})")
        if self.normalisation not in ("global", "window"):
            raise ValueError("normalisation must be 'global' or 'window'")
        if self.stitch not in ("centre", "mean"):
            raise ValueError("stitch must be 'centre' or 'mean'")
        if self.short not in ("resample", "pad"):
            raise ValueError("short must be 'resample' or 'pad'")
        if self.split_prominence_sigma is not None and self.split_prominence_sigma <= 0:
            raise ValueError("split_prominence_sigma must be > 0 or None")
        if self.min_peak_height_sigma is not None and self.min_peak_height_sigma < 0:
            raise ValueError("min_peak_height_sigma must be >= 0 or None")
        if self.shoulder_sigma is not None and self.shoulder_sigma <= 0:
            raise ValueError("shoulder_sigma must be > 0 or None")
        if self.shoulder_window_samples < 3 or self.shoulder_window_samples % 2 == 0:
            raise ValueError("shoulder_window_samples must be odd and >= 3")
        if self.shoulder_separation_samples < 1:
            raise ValueError("shoulder_separation_samples must be >= 1")
        if self.max_length_samples < 1:
            raise ValueError("max_length_samples must be >= 1")
        if not 0.0 < self.heatmap_threshold < 1.0:
            raise ValueError(f"heatmap_threshold must be in (0, 1), got {self.heatmap_threshold}")
        if self.peak_fit not in (None, "hann", "pvoigt"):
            raise ValueError(f"peak_fit must be 'hann', 'pvoigt' or None, got {self.peak_fit!r}")
        if self.fit_iterations < 0:
            raise ValueError("fit_iterations must be >= 0")

    @property
    def fit(self) -> PeakFitConfig | None:
        """The joint fit of the peak-head read-out, or None."""
        if self.peak_fit is None:
            return None
        return PeakFitConfig(shape=self.peak_fit, iterations=self.fit_iterations)

    @property
    def threshold_logit(self) -> float:
        """The threshold on the logit scale: logit > this <=> sigmoid(logit) > threshold."""
        return math.log(self.threshold / (1.0 - self.threshold))


class RoiDetector:
    """Pre- and post-processing of the ROI segmenter for spectra of any length (pure numpy)."""

    def __init__(self, config: RoiDetectorConfig | None = None) -> None:
        self.config = config or RoiDetectorConfig()

    def prepare(self, spectrum: np.ndarray) -> tuple[np.ndarray, WindowPlan]:
        """Model windows ``(n, 1, 512)`` float32 in [0, 1] for one spectrum ``(L,)``.

        Raises :class:`engines.errors.InputContractError` for a spectrum that is not a
        1-D, non-empty, finite, real numeric array of at most ``max_length_samples``
        (:func:`~engines.roi.windowing.check_spectrum`).
        """
        return self.windows(check_spectrum(spectrum, max_length=self.config.max_length_samples))

    def windows(self, spectrum: np.ndarray) -> tuple[np.ndarray, WindowPlan]:
        """:meth:`prepare` for a spectrum already checked where it entered (a service's stream
        stage checks it with :func:`~engines.roi.windowing.check_spectrum`)."""
        cfg = self.config
        return to_windows(
            spectrum,
            strategy=cfg.strategy,
            overlap=cfg.overlap_samples,
            normalisation=cfg.normalisation,
            stitch=cfg.stitch,
            short=cfg.short,
        )

    def logits(self, logits: np.ndarray, plan: WindowPlan) -> np.ndarray:
        """Per-sample logits ``(L,)`` float32 stitched from the engine's ``(n, 1, 512)``."""
        return from_windows(logits, plan)

    def intervals(self, sample_logits: np.ndarray) -> np.ndarray:
        """ROI intervals ``(k, 2)`` int64 ``[start, end)`` from per-sample logits ``(L,)``."""
        iv = mask_to_intervals(np.asarray(sample_logits) > self.config.threshold_logit)
        return iv[(iv[:, 1] - iv[:, 0]) >= self.config.min_roi_width_samples]

    def peaks(self, spectrum: np.ndarray, intervals: np.ndarray) -> np.ndarray:
        """Peak table (:data:`engines.roi.peaks.PEAK_TABLE_DTYPE`) of the raw spectrum.

        Peaks lower than ``min_peak_height_sigma`` noise sigmas are left out.
        """
        x = np.asarray(spectrum, dtype=np.float64)
        cfg = self.config
        sigma = estimate_noise_sigma(x, intervals_to_mask(intervals, x.size))
        # a noiseless spectrum (sigma 0) still needs a positive prominence to split on
        floor = 1e-12 * float(np.ptp(x))
        prominence = None
        if cfg.split_prominence_sigma is not None:
            prominence = max(cfg.split_prominence_sigma * sigma, floor)
        depth = None
        if cfg.shoulder_sigma is not None:
            gain = shoulder_noise_gain(cfg.shoulder_window_samples)
            depth = max(cfg.shoulder_sigma * sigma * gain, floor)
        table = peak_table(
            x,
            intervals,
            prominence=prominence,
            shoulder_depth=depth,
            shoulder_window=cfg.shoulder_window_samples,
            shoulder_separation=cfg.shoulder_separation_samples,
        )
        if cfg.min_peak_height_sigma is not None:
            table = table[table["height"] >= max(cfg.min_peak_height_sigma * sigma, floor)]
        return table

    def head_peaks(self, spectrum: np.ndarray, heads: np.ndarray, plan: WindowPlan) -> np.ndarray:
        """Peak table (:data:`engines.roi.peak_readout.HEADS_PEAK_DTYPE`) of the raw spectrum
        from the peak heads ``(n, 5, 512)`` of its windows; peaks lower than
        ``min_peak_height_sigma`` noise sigmas are left out."""
        x = np.asarray(spectrum, dtype=np.float64)
        cfg = self.config
        table = read_heads(x, heads, plan, threshold=cfg.heatmap_threshold, fit=cfg.fit)
        if cfg.min_peak_height_sigma is not None:
            floor = max(cfg.min_peak_height_sigma * estimate_noise_sigma(x), 1e-12 * np.ptp(x))
            table = table[table["height"] >= floor]
        return table

    def finish(self, spectrum: np.ndarray, logits: np.ndarray, plan: WindowPlan) -> dict[str, Any]:
        """The published result for ``spectrum`` given the engine's outputs for its windows:
        ROI logits ``(n, 1, 512)`` or peak heads ``(n, 5, 512)``.

        Returns ``{"roi": [[start, end], ...], "peaks": [{index, height, area, width, start,
        end, ...}, ...]}`` with plain Python numbers (see module docstring).
        """
        x = np.asarray(spectrum, dtype=np.float64)  # checked by prepare
        if x.size != plan.length:
            raise InputContractError(
                f"spectrum has {x.size} samples but the plan was made for {plan.length}"
            )
        out = np.asarray(logits)
        if out.ndim == 3 and out.shape[1] == N_HEADS:
            iv = self.intervals(self.logits(out[:, :1], plan))
            return {"roi": iv.tolist(), "peaks": heads_peak_dicts(self.head_peaks(x, out, plan))}
        iv = self.intervals(self.logits(out, plan))
        table = self.peaks(x, iv)
        return {
            "roi": iv.tolist(),
            "peaks": peaks_to_dicts(table),
        }


def detect(
    spectrum: np.ndarray,
    engine_fn: Callable[[np.ndarray], np.ndarray],
    *,
    config: RoiDetectorConfig | None = None,
) -> dict[str, Any]:
    """Offline convenience: prepare, run ``engine_fn`` ((n, 1, 512) -> (n, 1, 512) logits),
    finish. Returns the same dict as :meth:`RoiDetector.finish`."""
    det = RoiDetector(config)
    windows, plan = det.prepare(spectrum)
    return det.finish(spectrum, np.asarray(engine_fn(windows)), plan)
