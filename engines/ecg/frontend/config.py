"""What the ECG front end produces (beats, quality blocks), the beat contract, and its
configuration (:class:`FrontendConfig`; the roles of its fields are described in
:mod:`engines.ecg.frontend`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BEAT_FS_HZ",
    "BEAT_POST_S",
    "BEAT_PRE_S",
    "BEAT_SAMPLES",
    "QUALITY_OK",
    "Beat",
    "FrontendConfig",
    "FrontendOutput",
    "QualityBlock",
]

BEAT_FS_HZ = 256.0  # beats are resampled to this rate
BEAT_PRE_S = 0.25  # R peak at sample 64 of the beat
BEAT_POST_S = 0.5
BEAT_SAMPLES = 192  # round(BEAT_FS_HZ * (BEAT_PRE_S + BEAT_POST_S))
QUALITY_OK = "ok"


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat cut around its R peak.

    ``r_index``: stream sample index (0 = first sample pushed) nearest the R peak;
    ``r_offset_s``: the sub-sample rest, seconds (R time = ``r_index / fs + r_offset_s``);
    ``end_index``: index of the last stream sample the beat needed (latency reference);
    ``samples``: float32 ``(BEAT_SAMPLES,)`` at :data:`BEAT_FS_HZ`, band-passed,
    polarity-corrected, mV, R at sample ``round(BEAT_PRE_S * BEAT_FS_HZ)``;
    ``quality``: :data:`QUALITY_OK` or why it cannot be trusted; ``inverted``: the lead is
    inverted (the samples were flipped back); ``rr_s``: seconds since the previous detected
    R peak (``None`` for the first).
    """

    r_index: int
    r_offset_s: float
    end_index: int
    samples: np.ndarray
    quality: str
    inverted: bool
    rr_s: float | None


@dataclass(frozen=True, slots=True)
class QualityBlock:
    """Quality of the stream samples ``[start_index, stop_index)``: ``status`` is
    :data:`QUALITY_OK` or one of ``"flat"``, ``"saturated"``, ``"lead_off"``, ``"noisy"``,
    ``"nan"``; ``detail`` says what was measured, for people."""

    start_index: int
    stop_index: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class FrontendOutput:
    """What one ``push``/``flush`` produced: ``beats`` in R order, ``blocks`` in time order."""

    beats: list[Beat] = field(default_factory=list)
    blocks: list[QualityBlock] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class FrontendConfig:
    """Parameters of :class:`BeatFrontend` (see the module docstring for their roles).

    Filters: ``morph_band_hz`` (Hz) morphology band, Butterworth high-pass order
    ``morph_hp_order`` and low-pass order ``morph_lp_order`` (the high edge is capped at
    0.45 fs); ``notch_hz`` mains notches (quality factor ``notch_q``; those at or above
    0.45 fs are left out); ``qrs_band_hz``/``qrs_order`` the Pan–Tompkins band; ``mwi_s``
    integration window (s).

    Detector (s unless stated): ``peak_window_s`` candidate dominance half-window;
    ``learn_s``; ``refractory_s``; ``twave_s``; ``twave_slope_ratio``; ``searchback_rr``
    (multiple of the RR average); ``rr_initial_s``; ``relearn_s``; ``r_window_s`` (start,
    end) of the R search window relative to the candidate, the end negative = before it;
    ``polarity_beats``; ``polarity_hysteresis`` (vote in [-1, 1]); ``min_qrs_mV`` the
    smallest QRS looked at (integrated-signal peaks below that of a QRS this high are ignored:
    a flat line has no beats); ``spki_step_max``: a QRS peak counts at most this many times
    SPKI in SPKI's update (an artefact does not lift the thresholds over the next beats).

    Quality: ``block_s`` block length and beat assessment window; ``block_lag_s`` wait
    after a block before assessing it; ``flat_ptp_mV``; ``lead_off_fraction`` (of the
    window's samples at one extreme value); ``lead_off_ptp_mV`` (a window this still is a
    constant line); ``clip_min_s`` (time at the extreme value, at least
    ``clip_min_samples``); ``curvature_max_per_s2`` (median |curvature| / peak-to-peak,
    1/s^2); ``artefact_ratio_max`` (band peak-to-peak / median QRS peak-to-peak).

    ``history_s``: length of the ring buffer of past samples (s).
    """

    morph_band_hz: tuple[float, float] = (0.5, 40.0)
    morph_hp_order: int = 2
    morph_lp_order: int = 4
    notch_hz: tuple[float, ...] = (50.0, 60.0)
    notch_q: float = 30.0
    qrs_band_hz: tuple[float, float] = (5.0, 15.0)
    qrs_order: int = 2
    mwi_s: float = 0.15
    peak_window_s: float = 0.15
    learn_s: float = 2.0
    refractory_s: float = 0.2
    twave_s: float = 0.36
    twave_slope_ratio: float = 0.5
    searchback_rr: float = 1.66
    rr_initial_s: float = 1.0
    relearn_s: float = 3.0
    r_window_s: tuple[float, float] = (-0.25, 0.0)
    min_qrs_mV: float = 0.02
    spki_step_max: float = 3.0
    polarity_beats: int = 8
    polarity_hysteresis: float = 0.2
    block_s: float = 2.0
    block_lag_s: float = 1.0
    flat_ptp_mV: float = 0.05
    lead_off_fraction: float = 0.5
    lead_off_ptp_mV: float = 1e-6
    clip_min_s: float = 0.02
    clip_min_samples: int = 4
    curvature_max_per_s2: float = 400.0
    artefact_ratio_max: float = 2.0
    history_s: float = 12.0

    def __post_init__(self) -> None:
        lo, hi = self.morph_band_hz
        if not 0 < lo < hi:
            raise ValueError(f"morph_band_hz must be 0 < low < high, got {self.morph_band_hz}")
        qlo, qhi = self.qrs_band_hz
        if not 0 < qlo < qhi:
            raise ValueError(f"qrs_band_hz must be 0 < low < high, got {self.qrs_band_hz}")
        positive = {
            "mwi_s": self.mwi_s,
            "peak_window_s": self.peak_window_s,
            "learn_s": self.learn_s,
            "refractory_s": self.refractory_s,
            "block_s": self.block_s,
            "rr_initial_s": self.rr_initial_s,
            "notch_q": self.notch_q,
        }
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.twave_s < self.refractory_s:
            raise ValueError("twave_s must be >= refractory_s")
        if self.searchback_rr <= 1.0:
            raise ValueError(f"searchback_rr must be > 1, got {self.searchback_rr}")
        if self.relearn_s < self.learn_s:
            raise ValueError("relearn_s must be >= learn_s")
        if not self.r_window_s[0] < self.r_window_s[1] <= 0.0:
            raise ValueError(f"r_window_s must be (start < end <= 0), got {self.r_window_s}")
        if self.polarity_beats < 1 or self.morph_hp_order < 1 or self.morph_lp_order < 1:
            raise ValueError("polarity_beats and filter orders must be >= 1")
        if self.block_lag_s < 0:
            raise ValueError("block_lag_s must be >= 0")
        # the ring buffer must hold a search-back interval, a beat and a quality window
        need_s = self.relearn_s + self.learn_s + BEAT_PRE_S + BEAT_POST_S + self.block_s + 1.0
        if self.history_s < need_s:
            raise ValueError(f"history_s must be >= {need_s:g} with these settings")
