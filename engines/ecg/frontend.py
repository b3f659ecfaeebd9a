"""Streaming ECG front end: band-pass, Pan–Tompkins R peaks, beats and signal quality.

One :class:`BeatFrontend` per stream (per wearable). :meth:`BeatFrontend.push` takes the next
samples of the stream (mV, any length, any chunking) and returns the beats and quality blocks
that became complete; all state (filter states, detector thresholds, a ring buffer of recent
samples) is carried between calls. Pure numpy/scipy, no torch. One thread drives one frontend
(the stream's shard); frontends are independent.

Signal path (``fs_hz`` 100..2048 Hz, everything causal and stateful):

- Non-finite input samples (NaN/Inf) are replaced by the last finite value before anything
  else (0.0 if the stream starts with them), so no filter state is ever poisoned; they are
  remembered and mark the quality of everything that overlaps them ``"nan"``.
- Morphology band (the beats): Butterworth high-pass ``morph_band_hz[0]`` (baseline wander),
  Butterworth low-pass ``morph_band_hz[1]`` (capped at 0.45 fs; it is also the anti-alias
  filter of the resampling to :data:`BEAT_FS_HZ`) and mains notches (``notch_hz``), one
  ``sosfilt`` cascade with carried state.
- Pan–Tompkins detection signal: Butterworth band-pass ``qrs_band_hz`` (5–15 Hz) -> the
  five-point derivative ``(fs/8)(x[n] + 2x[n-1] - 2x[n-3] - x[n-4])`` (mV/s) -> squaring ->
  moving-window integration over ``mwi_s`` (150 ms): ``(mV/s)^2``, independent of fs.
- Filter states start at the steady state of the first sample, so a DC offset at the start
  makes no transient.

Detection (Pan & Tompkins 1985, on the integrated signal). A *candidate* is a sample of the
integrated signal that is higher than the ``peak_window_s`` before it and not lower than the
``peak_window_s`` after it; it is decided once those following samples have arrived, so no
decision depends on where a chunk ended. Candidates are classified in time order with the
adaptive levels SPKI/NPKI (signal/noise peak levels, updated 1/8 towards each peak),
THRESHOLD I = NPKI + 0.25 (SPKI - NPKI) and THRESHOLD II = THRESHOLD I / 2:

- learning phase: the first ``learn_s`` seconds set SPKI = max/3 and NPKI = mean/2 of the
  integrated signal, then their candidates are classified; while those seconds hold no
  candidate (a lead still off, a flat line) the learning phase starts again after them;
- refractory period ``refractory_s`` (200 ms): a candidate that close to the last QRS is
  ignored (it is the same complex);
- T-wave discrimination: a candidate within ``twave_s`` (360 ms) of the last QRS whose
  steepest slope is below ``twave_slope_ratio`` (1/2) of that QRS's is a T wave (noise);
- search-back: when no QRS came for ``searchback_rr`` (1.66) x the RR average, the highest
  noise candidate since the last QRS above THRESHOLD II (and not a T wave) becomes a QRS
  (SPKI updated 1/4); the RR average is the mean of the last 8 RR intervals that were
  92..116 % of it (``rr_initial_s`` until there is one; after 8 irregular intervals in a
  row it restarts from those, so a lasting change of rate is followed);
- an artefact far above the QRS level counts at most ``spki_step_max`` x SPKI in SPKI's
  update, so the beats after it still cross THRESHOLD II;
- relearning (the "reset"): after ``relearn_s`` with no QRS (lead off, a gain change), the
  levels are learnt again from the last ``learn_s`` seconds and the candidates there are
  classified again.

R peak. The R peak is the largest deflection of the morphology-band signal in
``r_window_s`` before the candidate, in the stream's current polarity (the sign of the
dominant QRS deflection, voted over the last ``polarity_beats`` beats with hysteresis
``polarity_hysteresis``): an inverted lead gives negative R peaks, which are located as
minima and flipped back (``Beat.inverted``). A parabola through the peak and its neighbours
refines it below one sample. The filter's delay for a QRS-shaped pulse (measured once at
construction) is subtracted, so ``Beat.r_index + Beat.r_offset_s * fs`` is the R peak in
the input's time base.

Beats. ``BEAT_PRE_S`` before to ``BEAT_POST_S`` after the refined R, taken from the
morphology-band signal with cubic (Catmull-Rom) interpolation at :data:`BEAT_FS_HZ`:
float32 ``(BEAT_SAMPLES,)`` in mV, R at sample 64. A beat is emitted by the ``push`` that
delivers its last needed sample (``Beat.end_index``: about ``BEAT_POST_S`` + 10 ms after R),
unless the detection itself came later (a search-back detection comes up to 1.66 RR after
its R). A beat that would need samples before the first one is not emitted.

Quality. Statuses, worst first:

- ``"nan"``: non-finite input samples in the window;
- ``"lead_off"``: a constant line (peak-to-peak <= ``lead_off_ptp_mV``), or the input pinned
  at its maximum or minimum for ``lead_off_fraction`` of the window;
- ``"saturated"``: clipping, the window's maximum or minimum value held for ``clip_min_s``
  in all (a peak of a real signal reaches its exact extreme value in one or two samples);
- ``"flat"``: peak-to-peak of the morphology band below ``flat_ptp_mV``;
- ``"noisy"``: (a) muscle noise: the median absolute curvature of the morphology band
  (second difference over steps of ~1/128 s, per s^2, so it reads the same at any fs),
  relative to the band's peak-to-peak amplitude, above ``curvature_max_per_s2``. The
  waves of a clean ECG are smooth, so over a window (mostly the quiet parts between waves)
  it stays at 10-90 /s^2 for every simulated person, while EMG-like noise of rms ``s`` in
  the band reads about 24,000 x ``s`` / peak-to-peak: the default 400 /s^2 flags EMG above
  ~1.7 % of the peak-to-peak amplitude (about 15 dB SNR of EMG alone); (b) artefacts: the
  band's peak-to-peak above ``artefact_ratio_max`` times the median QRS amplitude of the
  beats detected in the window (electrode motion; at most 1.6 x on simulated records,
  with noise or not); (c) no QRS detected in the window;
- else ``"ok"``.

- Blocks (:class:`QualityBlock`) tile the stream on a fixed grid of ``block_s`` (2 s);
  a block is assessed once ``block_lag_s`` has passed after its end (so the detections
  inside it are decided) and counts only detections decided by then.
- A beat is assessed on the ``block_s`` window of the stream that ends at its
  ``end_index`` (it covers the whole beat and the time before it), with the same tests,
  counting the detections up to and including its own — so it is emitted without waiting
  for its block to close, and its status never depends on the chunking.

Chunk invariance: ``push`` in chunks of 1, 7, 250 or 10,000 samples gives bitwise identical
beats and blocks (tests pin it): filters run sample-recursively with carried state, every
decision is tied to a sample index, and ring-buffer positions depend only on the sample
index. Cost: a few tens of microseconds per 62-sample chunk (no per-sample Python loops;
per-candidate and per-beat Python work only).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.signal import butter, iirnotch, lfilter, sosfilt, sosfilt_zi, tf2sos

try:  # scipy's own kernels: the public wrappers' argument checks cost more than the work
    from scipy.signal._sigtools import _linear_filter  # type: ignore[attr-defined]
    from scipy.signal._sosfilt import _sosfilt  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other scipy layouts fall back to the public API
    _sosfilt = _linear_filter = None

__all__ = [
    "BEAT_FS_HZ",
    "BEAT_POST_S",
    "BEAT_PRE_S",
    "BEAT_SAMPLES",
    "QUALITY_OK",
    "Beat",
    "BeatFrontend",
    "FrontendConfig",
    "FrontendOutput",
    "QualityBlock",
    "detect_r_peaks",
    "extract_beats",
]

BEAT_FS_HZ = 256.0  # beats are resampled to this rate
BEAT_PRE_S = 0.25  # R peak at sample 64 of the beat
BEAT_POST_S = 0.5
BEAT_SAMPLES = 192  # round(BEAT_FS_HZ * (BEAT_PRE_S + BEAT_POST_S))
QUALITY_OK = "ok"

_FS_RANGE_HZ = (100.0, 2048.0)
_CURVATURE_FS_HZ = 128.0  # the "noisy" curvature is taken at about this sample rate
_QRS_HALF_S = 0.06  # half-width of the window a QRS amplitude is measured in



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


# -- filters ----------------------------------------------------------------------------------


def _check_fs(fs_hz: float) -> float:
    fs = float(fs_hz)
    if not (math.isfinite(fs) and _FS_RANGE_HZ[0] <= fs <= _FS_RANGE_HZ[1]):
        raise ValueError(
            f"fs_hz must be in {_FS_RANGE_HZ[0]:g}..{_FS_RANGE_HZ[1]:g} Hz, got {fs_hz!r}"
        )
    return fs


def _morph_sos(fs: float, cfg: FrontendConfig) -> np.ndarray:
    lo, hi = cfg.morph_band_hz
    hi = min(hi, 0.45 * fs)
    parts = [
        butter(cfg.morph_hp_order, lo, "highpass", fs=fs, output="sos"),
        butter(cfg.morph_lp_order, hi, "lowpass", fs=fs, output="sos"),
    ]
    for f0 in cfg.notch_hz:
        if 0 < f0 < 0.45 * fs:
            b, a = iirnotch(f0, cfg.notch_q, fs=fs)
            parts.append(tf2sos(b, a))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float64)


def _qrs_sos(fs: float, cfg: FrontendConfig) -> np.ndarray:
    band = butter(cfg.qrs_order, cfg.qrs_band_hz, "bandpass", fs=fs, output="sos")
    # Pan-Tompkins five-point derivative made causal (2 samples late), in mV/s:
    # (fs/8)(1 + 2z^-1 - 2z^-3 - z^-4) = (fs/8)(1 - z^-2)(1 + z^-1)^2, two biquads
    deriv = np.array([[fs / 8.0, 0.0, -fs / 8.0, 1.0, 0.0, 0.0], [1.0, 2.0, 1.0, 1.0, 0.0, 0.0]])
    return np.ascontiguousarray(np.concatenate([band, deriv]), dtype=np.float64)


def _run_sos(sos: np.ndarray, row: np.ndarray, zi: np.ndarray) -> None:
    """Filter ``row`` ((1, n) C-contiguous float64) in place, updating ``zi`` ((1, s, 2))."""
    if _sosfilt is not None:
        _sosfilt(sos, row, zi)
    else:  # pragma: no cover
        out, zf = sosfilt(sos, row[0], zi=zi[0])
        row[0] = out
        zi[0] = zf


def _run_fir(b: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if _linear_filter is not None:
        return _linear_filter(b, _ONE, x, -1, zi)  # type: ignore[no-any-return]
    return lfilter(b, _ONE, x, zi=zi)  # type: ignore[no-any-return]  # pragma: no cover


_ONE = np.ones(1)


def _qrs_pulse(fs: float) -> tuple[np.ndarray, int]:
    """A QRS-like pulse (mV, 2 s at ``fs``) and the index of its R peak: an ECGSYN-like R
    wave (Gaussian, sd 12 ms, 1 mV) flanked by small Q and S waves."""
    n = round(2.0 * fs)
    t = (np.arange(n) - n // 2) / fs
    pulse = (
        np.exp(-0.5 * (t / 0.012) ** 2)
        - 0.1 * np.exp(-0.5 * ((t + 0.04) / 0.012) ** 2)
        - 0.25 * np.exp(-0.5 * ((t - 0.04) / 0.012) ** 2)
    )
    return pulse, n // 2


def _peak_delay(sos: np.ndarray, fs: float) -> float:
    """Delay (samples, fractional) of the R peak of :func:`_qrs_pulse` through ``sos``: the
    delay the morphology filter gives an R peak, which beats are aligned on."""
    pulse, r = _qrs_pulse(fs)
    out = sosfilt(sos, pulse)
    k = int(np.argmax(out))
    a, b, c = out[k - 1], out[k], out[k + 1]
    denom = a - 2.0 * b + c
    frac = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float(k + frac - r)


def _mwi_peak(sos_q: np.ndarray, b_mwi: np.ndarray, fs: float) -> float:
    """Peak of the integrated signal for the 1-mV :func:`_qrs_pulse`, (mV/s)^2."""
    pulse, _ = _qrs_pulse(fs)
    d = sosfilt(sos_q, pulse)
    return float(np.max(lfilter(b_mwi, _ONE, d * d)))


# -- helpers -----------------------------------------------------------------------------------


def _catmull_rom(y: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cubic (Catmull-Rom) interpolation of ``y`` between samples ``k`` and ``k + 1`` at
    fraction ``t`` in [0, 1); ``y`` has a sample before ``k.min()`` and two after
    ``k.max()``."""
    p0, p1, p2, p3 = y[k - 1], y[k], y[k + 1], y[k + 2]
    return p1 + 0.5 * t * (
        p2 - p0 + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0))
    )


def _median(a: np.ndarray) -> float:
    """Median (the lower one for even sizes) without np.median's overhead."""
    k = (a.size - 1) // 2
    return float(np.partition(a, k)[k])


@dataclass(frozen=True, eq=False)
class _Design:
    """What a front end derives from ``(fs, config)`` alone: filters and their unit steady
    states, the morphology filter's R delay, the smallest peak looked at, and every length in
    samples. Designed once per rate (:func:`_design`) and shared by every stream at that rate;
    nothing writes to its arrays (scipy's fast kernels need them writable, so they are not
    flagged read-only)."""

    sos_m: np.ndarray
    sos_q: np.ndarray
    zi_m_unit: np.ndarray  # (1, sections, 2)
    zi_q_unit: np.ndarray
    b_mwi: np.ndarray
    delay_m: float
    min_peak: float
    keep: int  # samples the ring holds once full: history_s of the stream
    max_piece: int
    beat_offsets: np.ndarray


@lru_cache(maxsize=16)  # a few rates in practice; a stranger's odd rates only evict
def _design(fs: float, cfg: FrontendConfig) -> _Design:
    sos_m = _morph_sos(fs, cfg)
    sos_q = _qrs_sos(fs, cfg)
    n_mwi = max(1, round(cfg.mwi_s * fs))
    b_mwi = np.full(n_mwi, 1.0 / n_mwi)
    keep = math.ceil(cfg.history_s * fs)
    return _Design(
        sos_m=sos_m,
        sos_q=sos_q,
        zi_m_unit=sosfilt_zi(sos_m)[None],
        zi_q_unit=sosfilt_zi(sos_q)[None],
        b_mwi=b_mwi,
        delay_m=_peak_delay(sos_m, fs),
        # integrated-signal peaks below that of a min_qrs_mV QRS are not even noise peaks
        min_peak=_mwi_peak(sos_q, b_mwi, fs) * cfg.min_qrs_mV**2,
        keep=keep,
        max_piece=keep // 4,
        beat_offsets=(np.arange(BEAT_SAMPLES) / BEAT_FS_HZ - BEAT_PRE_S) * fs,
    )


class BeatFrontend:
    """Stateful per-stream front end: ``push`` samples in, beats and quality blocks out.

    ``fs_hz``: the stream's sample rate, 100..2048 Hz (ValueError otherwise; the design range
    is 128..1000 Hz). :attr:`samples_seen` counts the samples pushed. Not thread-safe: one
    thread (the stream's shard) calls it. After :meth:`flush` the stream is over and
    :meth:`push` raises ``RuntimeError``.

    Memory: the filters are designed once per rate and shared; a stream owns its filter
    states and a ring of ``history_s`` of three signals (input, morphology band, integrated),
    allocated as samples arrive: :attr:`state_bytes` is at most ``history_s * fs * 20`` bytes
    (input samples that float32 holds exactly are kept as float32; a fourth byte per sample
    once a non-finite sample came), e.g. 60 KB at 250 Hz, plus a few KB of Python objects.
    """

    def __init__(self, fs_hz: float, config: FrontendConfig | None = None) -> None:
        cfg = FrontendConfig() if config is None else config
        fs = _check_fs(fs_hz)
        self.fs_hz = fs
        self.config = cfg
        self.samples_seen = 0
        self._flushed = False

        design = _design(fs, cfg)
        self._sos_m = design.sos_m
        self._sos_q = design.sos_q
        self._zi_m_unit = design.zi_m_unit
        self._zi_q_unit = design.zi_q_unit
        self._zi_m = design.zi_m_unit  # replaced (scaled copies) by the first push
        self._zi_q = design.zi_q_unit
        self._b_mwi = design.b_mwi
        self._n_mwi = n_mwi = design.b_mwi.size
        self._zi_mwi = np.zeros(n_mwi - 1)
        self._d_tail = np.zeros(n_mwi)  # |derivative| of the last n_mwi samples (slopes)
        self._delay_m = design.delay_m
        self._min_peak = design.min_peak
        self._last_valid = 0.0

        # ring buffers, sample i at i % cap: one piece never wraps, a window that does is
        # copied out. They grow (doubling) until they hold ``keep`` samples, so a short-lived
        # stream costs what it sent; ``keep`` bounds every look back (clamps below).
        self._keep = design.keep
        self._max_piece = design.max_piece
        self._cap = 0
        # input with non-finite samples held (float32 until a sample needs float64: the
        # quality tests compare exact values), morphology band, integrated signal, and
        # (from the first non-finite input sample on) which samples were non-finite
        self._x: np.ndarray = np.zeros(0, np.float32)
        self._y: np.ndarray = np.zeros(0)
        self._m: np.ndarray = np.zeros(0)
        self._nonfinite: np.ndarray | None = None

        # detector, in samples
        self._w = max(1, round(cfg.peak_window_s * fs))
        self._learn_n = round(cfg.learn_s * fs)
        self._refr_n = round(cfg.refractory_s * fs)
        self._twave_n = round(cfg.twave_s * fs)
        self._relearn_n = round(cfg.relearn_s * fs)
        self._r_lo = round(cfg.r_window_s[0] * fs)
        self._r_hi = round(cfg.r_window_s[1] * fs)
        self._qrs_half = max(1, round(_QRS_HALF_S * fs))
        self._scan_next = 1  # first integrated-signal index not yet examined for a local max
        # recent local maxima and confirmed candidates waiting for classification:
        # (index, integrated-signal value, steepest slope in the mwi window before it)
        self._lmax: deque[tuple[int, float, float]] = deque()
        self._lmax_next = 0  # position in _lmax of the first one not yet confirmed
        self._cands: deque[tuple[int, float, float]] = deque()
        self._learned = False
        self._learn_start = 0
        self._spki = 0.0
        self._npki = 0.0
        self._clock = 0  # samples_seen at which the decision being made became possible
        self._last_qrs: int | None = None  # integrated-signal index of the last QRS
        self._last_slope = 0.0
        self._noise_cands: list[tuple[int, float, float]] = []  # (index, peak, slope) since QRS
        self._rr: deque[float] = deque(maxlen=8)  # regular RR intervals, samples
        self._rr_all: deque[float] = deque(maxlen=8)  # all RR intervals, samples
        self._irregular = 0  # consecutive RR intervals outside 92..116 % of the average
        self._sb_done = False  # search-back of the current interval ran and found nothing
        self._relearn_ref = 0  # the next relearning is due relearn_n after this index
        self._votes: deque[float] = deque(maxlen=cfg.polarity_beats)
        self._inverted = False
        self._prev_r: float | None = None  # last R time, input samples (fractional)
        self._prev_t_y: float | None = None  # the same in the morphology band's samples
        self._pending: deque[tuple[float, int, float, int, bool, float | None]] = deque()
        # (r_index, decided_at, QRS peak-to-peak mV) of recent detections, for quality
        self._detections: deque[tuple[int, int, float]] = deque()
        self._r_log: list[int] | None = None  # every R index, for detect_r_peaks

        # quality
        self._block_n = max(1, round(cfg.block_s * fs))
        self._block_lag_n = round(cfg.block_lag_s * fs)
        self._next_block = 0
        self._clip_n = max(cfg.clip_min_samples, round(cfg.clip_min_s * fs))
        self._curv_step = max(1, round(fs / _CURVATURE_FS_HZ))
        self._curv_scale = (fs / self._curv_step) ** 2
        self._beat_offsets = design.beat_offsets

    # -- public ------------------------------------------------------------------------------

    def push(self, x: np.ndarray) -> FrontendOutput:
        """Feed the next samples (mV, any shape that ravels to 1-D, any float/int dtype).

        Returns the beats whose last sample arrived (and whose R was decided) and the quality
        blocks assessed during this call; an empty chunk is a no-op.
        """
        if self._flushed:
            raise RuntimeError("this BeatFrontend was flushed; start a new one for a new stream")
        data = np.asarray(x, dtype=np.float64).ravel()
        out = FrontendOutput()
        if data.size == 0:
            return out
        start = 0
        while start < data.size:
            want = min(data.size - start, self._max_piece)
            if self._cap < self._keep:
                self._reserve(self.samples_seen + want)
            # pieces end at the ring buffer's end, so none wraps around it
            room = self._cap - self.samples_seen % self._cap
            take = min(want, room)
            self._push_piece(data[start : start + take], out)
            start += take
        return out

    def flush(self) -> FrontendOutput:
        """End of stream: decide the last candidates (with the samples there are) and assess
        the last, possibly partial, block. Beats that would need samples past the end are
        dropped. Afterwards :meth:`push` raises ``RuntimeError``; a second flush is empty."""
        out = FrontendOutput()
        if self._flushed:
            return out
        self._flushed = True
        n = self.samples_seen
        if n == 0:
            return out
        self._find_candidates(n)
        self._classify(horizon=n, final=True)
        self._emit_beats(out)
        while self._next_block < n:
            start = self._next_block
            stop = min(start + self._block_n, n)
            status, detail = self._assess(start, stop, self._block_amps(start, stop, None))
            out.blocks.append(QualityBlock(start, stop, status, detail))
            self._next_block = stop
        return out

    # -- per piece -----------------------------------------------------------------------------

    def _push_piece(self, x: np.ndarray, out: FrontendOutput) -> None:
        """Process samples that fit in the ring buffer without wrapping around its end."""
        n = x.size
        n0 = self.samples_seen
        p = n0 % self._cap
        if math.isfinite(np.add.reduce(x)):  # (a cheap "all finite"; an overflow takes the
            xs = x  # careful path below, which handles finite samples exactly too)
            if self._nonfinite is not None:
                self._nonfinite[p : p + n] = False
        else:
            # hold the last finite value through NaN/Inf so the filters never see them
            finite = np.isfinite(x)
            idx = np.where(finite, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            xs = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last_valid)
            if self._nonfinite is None:
                self._nonfinite = np.zeros(self._cap, bool)
            self._nonfinite[p : p + n] = ~finite
        if self._x.dtype == np.float32:
            with np.errstate(over="ignore"):
                exact = np.array_equal(xs.astype(np.float32), xs)
            if not exact:
                self._x = self._x.astype(np.float64)  # keep the input exactly
        self._x[p : p + n] = xs
        if n0 == 0:
            self._zi_m = self._zi_m_unit * xs[0]
            self._zi_q = self._zi_q_unit * xs[0]
        self._last_valid = float(xs[-1])
        y = self._y[p : p + n]
        y[:] = xs
        _run_sos(self._sos_m, y[None], self._zi_m)
        d = xs.copy()[None]
        _run_sos(self._sos_q, d, self._zi_q)
        d = d[0]
        self._m[p : p + n], self._zi_mwi = _run_fir(self._b_mwi, d * d, self._zi_mwi)
        self.samples_seen = n0 + n
        self._find_candidates(self.samples_seen - self._w, d)
        self._classify(horizon=self.samples_seen - self._w, final=False)
        self._emit_beats(out)
        self._assess_blocks(out)

    def _reserve(self, need: int) -> None:
        """Grow the (not yet wrapped) ring buffers to hold ``need`` samples, at most ``keep``:
        doubling, so the copies cost O(1) per sample."""
        if need <= self._cap:
            return
        cap = min(self._keep, max(2 * self._cap, need, 256))
        n = self.samples_seen  # <= self._cap: nothing has wrapped yet
        arrays: list[np.ndarray] = [self._x, self._y, self._m]
        if self._nonfinite is not None:
            arrays.append(self._nonfinite)
        grown = []
        for old in arrays:
            new = np.zeros(cap, old.dtype)
            new[:n] = old[:n]
            grown.append(new)
        self._x, self._y, self._m = grown[:3]
        if self._nonfinite is not None:
            self._nonfinite = grown[3]
        self._cap = cap

    def _oldest(self) -> int:
        """The oldest sample index every ring still holds (the clamp of every look back)."""
        return max(0, self.samples_seen - self._keep + 1)

    def _view(self, ring: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (absolute indices) of a ring buffer: a view, or a copy
        where the window wraps around the ring's end."""
        if stop - start > self._cap or start < self.samples_seen - self._cap:
            raise RuntimeError("internal: window outside the ring buffer")  # pragma: no cover
        p = start % self._cap
        q = p + stop - start
        if q <= self._cap:
            return ring[p:q]
        return np.concatenate((ring[p:], ring[: q - self._cap]))

    @property
    def state_bytes(self) -> int:
        """Bytes of numpy buffers this stream owns (ring buffers and filter states); the
        shared filter designs are not counted."""
        arrays: list[np.ndarray | None] = [self._x, self._y, self._m, self._zi_m, self._zi_q,
                                           self._zi_mwi, self._d_tail, self._nonfinite]
        return sum(a.nbytes for a in arrays if a is not None)

    # -- detection -----------------------------------------------------------------------------

    def _find_candidates(self, limit: int, d: np.ndarray | None = None) -> None:
        """Confirm the candidates with index < ``limit``: their following ``peak_window_s``
        has arrived (``limit <= samples_seen - w``) or the stream ended (flush). ``d``: the
        derivative of the samples just pushed (``None`` at flush, when none were).

        The integrated signal rises and falls between its local maxima, so its maximum over
        any window is at the window's ends or at a local maximum inside: the dominance test
        needs the local maxima (kept in ``_lmax``) and two samples, not the whole window."""
        n = self.samples_seen
        w = self._w
        # local maxima (rising into the sample, not rising out of it) of every sample that has
        # both neighbours; those below min_peak can neither be candidates nor beat one
        lo = self._scan_next
        if n - 1 > lo:
            assert d is not None
            ext = self._view(self._m, lo - 1, n)
            mid = ext[1:-1]
            peaks = np.flatnonzero((mid > ext[:-2]) & (mid >= ext[2:]) & (mid >= self._min_peak))
            # each maximum's steepest slope (max |d| over the mwi window ending at it), taken
            # now so that no derivative history is kept; the tail holds the n_mwi samples
            # before this piece (zeros before the stream, which cannot raise a max of |d|)
            d_ext = np.abs(np.concatenate((self._d_tail, d)))
            self._d_tail = d_ext[-self._n_mwi :].copy()
            if peaks.size:
                ends = (peaks + lo + 1 - (n - d_ext.size)).tolist()  # positions in d_ext
                slopes = [float(d_ext[j - self._n_mwi : j].max()) for j in ends]
                self._lmax.extend(zip((peaks + lo).tolist(), mid[peaks].tolist(), slopes,
                                      strict=True))
            self._scan_next = n - 1
        elif d is not None:
            self._d_tail = np.abs(np.concatenate((self._d_tail, d)))[-self._n_mwi :].copy()
        lmax = self._lmax
        ring = self._m
        cap = self._cap
        k = self._lmax_next  # lmax[k] is the first local maximum not yet confirmed
        while k < len(lmax) and lmax[k][0] < limit:
            i, v, _ = lmax[k]
            left = ring[max(i - w, 0) % cap]
            j = k - 1
            while j >= 0 and lmax[j][0] > i - w and left < v:
                left = max(left, lmax[j][1])
                j -= 1
            if left < v:
                right = ring[min(i + w, n - 1) % cap]
                j = k + 1
                while j < len(lmax) and lmax[j][0] < i + w and right <= v:
                    right = max(right, lmax[j][1])
                    j += 1
                if right <= v:
                    self._cands.append(lmax[k])
            k += 1
        # keep the maxima that can still dominate a later one
        while k > 0 and lmax[0][0] < limit - w:
            lmax.popleft()
            k -= 1
        self._lmax_next = k

    def _thresholds(self) -> tuple[float, float]:
        thr1 = self._npki + 0.25 * (self._spki - self._npki)
        return thr1, 0.5 * thr1

    def _rr_limit(self) -> float:
        rr = sum(self._rr) / len(self._rr) if self._rr else self.config.rr_initial_s * self.fs_hz
        return self.config.searchback_rr * rr

    def _learn(self, start: int, stop: int) -> None:
        m = self._view(self._m, max(start, self._oldest()), stop)
        self._spki = float(m.max()) / 3.0
        self._npki = float(m.mean()) / 2.0
        self._learned = True

    def _classify(self, *, horizon: int, final: bool) -> None:
        """Classify the confirmed candidates in time order; ``horizon``: every candidate with
        index < horizon is known."""
        w = self._w
        while not self._learned:
            learn_end = self._learn_start + self._learn_n
            if horizon < learn_end and not final:
                return
            if not self._cands or self._cands[0][0] >= learn_end:
                if final and not self._cands:
                    return
                # nothing QRS-like yet (a lead still off, a flat line): levels learnt here
                # would be those of noise, so the learning phase starts again
                self._learn_start = learn_end
                continue
            self._learn(self._learn_start, min(learn_end, self.samples_seen))
            self._clock = max(self._clock, learn_end + w + 1)
            self._relearn_ref = learn_end
        cands = self._cands
        while True:
            nxt = cands[0][0] if cands else None
            # the time-ordered events: search-back, relearning, then the next candidate
            if self._last_qrs is not None and not self._sb_done:
                # (before the relearning is due, which bounds how far back the ring must reach)
                t_sb = self._last_qrs + min(int(self._rr_limit()), self._relearn_n)
                if t_sb < (nxt if nxt is not None else horizon):
                    self._clock = max(self._clock, t_sb + w + 1)
                    self._search_back(t_sb)
                    continue
            t_rl = self._relearn_ref + self._relearn_n
            if t_rl < (nxt if nxt is not None else horizon):
                self._clock = max(self._clock, t_rl + w + 1)
                self._relearn(t_rl)
                continue
            if nxt is None:
                return
            cand = cands.popleft()
            self._clock = max(self._clock, nxt + w + 1)
            self._candidate(*cand)

    def _candidate(self, i: int, v: float, slope: float) -> None:
        last = self._last_qrs
        if last is not None and i - last < self._refr_n:
            return
        thr1, _ = self._thresholds()
        if v > thr1:
            if (
                last is not None
                and i - last < self._twave_n
                and slope < self.config.twave_slope_ratio * self._last_slope
            ):
                self._noise(i, v, slope)
                return
            # an artefact far above the QRS level moves SPKI by at most spki_step_max x itself,
            # so the beats after it still cross THRESHOLD II
            v_level = min(v, self.config.spki_step_max * self._spki) if self._spki > 0 else v
            self._spki = 0.125 * v_level + 0.875 * self._spki
            self._qrs(i, slope)
        else:
            self._noise(i, v, slope)

    def _noise(self, i: int, v: float, slope: float) -> None:
        self._npki = 0.125 * v + 0.875 * self._npki
        self._noise_cands.append((i, v, slope))

    def _search_back(self, t_sb: int) -> None:
        _, thr2 = self._thresholds()
        last = self._last_qrs
        assert last is not None
        best: tuple[int, float, float] | None = None
        for i, v, slope in self._noise_cands:
            if i > t_sb or v <= thr2:
                continue
            if (
                i - last < self._twave_n
                and slope < self.config.twave_slope_ratio * self._last_slope
            ):
                continue
            if best is None or v > best[1]:
                best = (i, v, slope)
        if best is None:
            self._sb_done = True
            return
        i, v, slope = best
        self._spki = 0.25 * v + 0.75 * self._spki
        later = [c for c in self._noise_cands if c[0] >= i + self._refr_n]
        self._qrs(i, slope)
        self._noise_cands = later

    def _relearn(self, t: int) -> None:
        start = t - self._learn_n
        self._learn(start, t)
        self._relearn_ref = t
        again = [c for c in self._noise_cands if start <= c[0] <= t]
        self._noise_cands = [c for c in self._noise_cands if c[0] < start]
        self._cands.extendleft(reversed(again))

    def _qrs(self, i: int, slope: float) -> None:
        last = self._last_qrs
        if last is not None:
            rr = float(i - last)
            self._rr_all.append(rr)
            if self._rr:
                avg = sum(self._rr) / len(self._rr)
                regular = 0.92 * avg <= rr <= 1.16 * avg
            else:
                regular = True
            if regular:
                self._rr.append(rr)
                self._irregular = 0
            else:
                self._irregular += 1
                if self._irregular >= self._rr_all.maxlen:  # type: ignore[operator]
                    # a lasting change of rhythm: follow it rather than keep the old average
                    self._rr = deque(self._rr_all, maxlen=self._rr_all.maxlen)
                    self._irregular = 0
        self._last_qrs = i
        self._last_slope = slope
        self._noise_cands = []
        self._sb_done = False
        self._relearn_ref = i
        self._locate_r(i)

    # -- R peak and beats ----------------------------------------------------------------------

    def _locate_r(self, i: int) -> None:
        lo = max(i + self._r_lo, self._oldest())
        if self._prev_t_y is not None:  # R peaks at least a refractory period apart
            lo = max(lo, math.floor(self._prev_t_y) + self._refr_n)
        hi = i + self._r_hi + 1
        if hi - lo < 3:
            return  # the window is taken by the previous beat: the same complex
        seg = self._view(self._y, lo, hi)
        base = _median(seg)
        top = float(seg.max()) - base
        bottom = base - float(seg.min())
        vote = (top - bottom) / (top + bottom) if top + bottom > 0 else 0.0
        self._votes.append(vote)
        mean_vote = sum(self._votes) / len(self._votes)
        h = self.config.polarity_hysteresis
        if self._inverted and mean_vote > h:
            self._inverted = False
        elif not self._inverted and mean_vote < -h:
            self._inverted = True
        sign = -1.0 if self._inverted else 1.0
        k = int(np.argmax(seg)) if sign > 0 else int(np.argmin(seg))
        frac = 0.0
        if 0 < k < seg.size - 1:
            a, b, c = (sign * float(v) for v in seg[k - 1 : k + 2])
            denom = a - 2.0 * b + c
            if denom < 0:
                frac = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
        t_y = lo + k + frac  # R in the morphology-band signal's samples
        t_in = t_y - self._delay_m  # R in the input's time base
        r_index = math.floor(t_in + 0.5)
        rr_s = None if self._prev_r is None else (t_in - self._prev_r) / self.fs_hz
        self._prev_r = t_in
        self._prev_t_y = t_y
        # QRS amplitude: peak-to-peak within _QRS_HALF_S of R (what has arrived of it)
        h = self._qrs_half
        qrs = seg[max(k - h, 0) : k + h + 1]
        self._detections.append((r_index, self._clock, float(qrs.max() - qrs.min())))
        if self._r_log is not None:
            self._r_log.append(r_index)
        pos_first = t_y + self._beat_offsets[0]
        if math.floor(pos_first) - 1 < 0:
            return  # the beat would start before the stream
        end_index = int(np.floor(t_y + self._beat_offsets)[-1]) + 2  # as _emit_beats computes
        self._pending.append(
            (t_y, r_index, (t_in - r_index) / self.fs_hz, end_index, self._inverted, rr_s)
        )

    def _emit_beats(self, out: FrontendOutput) -> None:
        n = self.samples_seen
        while self._pending and self._pending[0][3] < n:
            t_y, r_index, r_off, end_index, inverted, rr_s = self._pending.popleft()
            pos = t_y + self._beat_offsets
            k = np.floor(pos)
            start = int(k[0]) - 1
            y = self._view(self._y, start, end_index + 1)
            samples = _catmull_rom(y, k.astype(np.intp) - start, pos - k)
            if inverted:
                samples = -samples
            w_start = end_index + 1 - self._block_n
            amps = [a for r, _, a in self._detections if w_start <= r <= r_index]
            status, _ = self._assess(w_start, end_index + 1, amps)
            out.beats.append(
                Beat(
                    r_index=r_index,
                    r_offset_s=r_off,
                    end_index=end_index,
                    samples=samples.astype(np.float32),
                    quality=status,
                    inverted=inverted,
                    rr_s=rr_s,
                )
            )
        if self._flushed:
            self._pending.clear()
        # keep the detections a block still to assess or a beat still to come may count: a
        # later beat's R is at or after the last R, and its window starts block_s before
        keep = self._next_block
        if self._prev_r is not None:
            keep = min(keep, math.floor(self._prev_r) - self._block_n)
        if self._pending:
            keep = min(
                keep, math.floor(self._pending[0][0] + self._beat_offsets[-1]) - self._block_n
            )
        while self._detections and self._detections[0][0] < keep:
            self._detections.popleft()

    # -- quality -------------------------------------------------------------------------------

    def _assess_blocks(self, out: FrontendOutput) -> None:
        n = self.samples_seen
        lag = self._block_lag_n
        while self._next_block + self._block_n + lag <= n:
            start = self._next_block
            stop = start + self._block_n
            status, detail = self._assess(start, stop, self._block_amps(start, stop, stop + lag))
            out.blocks.append(QualityBlock(start, stop, status, detail))
            self._next_block = stop

    def _block_amps(self, start: int, stop: int, decided_by: int | None) -> list[float]:
        """QRS amplitudes of the detections in ``[start, stop)`` decided by ``decided_by``
        (``None``: all so far)."""
        return [
            a
            for r, t, a in self._detections
            if start <= r < stop and (decided_by is None or t <= decided_by)
        ]

    def _assess(self, start: int, stop: int, amps: list[float]) -> tuple[str, str]:
        """Quality of samples ``[start, stop)`` (clipped to the stream and the ring), given
        the QRS peak-to-peak amplitudes ``amps`` (mV) of the beats detected there."""
        cfg = self.config
        start = max(start, self._oldest())
        n = stop - start
        nonfinite = self._nonfinite
        n_nan = 0 if nonfinite is None else np.count_nonzero(self._view(nonfinite, start, stop))
        if n_nan:
            return "nan", f"{n_nan} non-finite samples"
        x = self._view(self._x, start, stop)
        xmax, xmin = float(x.max()), float(x.min())
        at_max = int(np.count_nonzero(x == xmax))
        at_min = int(np.count_nonzero(x == xmin))
        if xmax - xmin <= cfg.lead_off_ptp_mV:
            return "lead_off", f"constant at {xmax:.4g} mV"
        if max(at_max, at_min) >= cfg.lead_off_fraction * n:
            value = xmax if at_max >= at_min else xmin
            return "lead_off", f"pinned at {value:.4g} mV for {max(at_max, at_min)}/{n} samples"
        if max(at_max, at_min) >= self._clip_n:
            return "saturated", f"{at_max} samples at max {xmax:.4g}, {at_min} at min {xmin:.4g}"
        y = self._view(self._y, start, stop)
        ptp = float(y.max() - y.min())
        if ptp < cfg.flat_ptp_mV:
            return "flat", f"band peak-to-peak {ptp:.3g} mV"
        # second difference at a fixed time step (~1/128 s), so noise reads the same at any fs
        yd = y[:: self._curv_step]
        curv = np.abs(yd[2:] + yd[:-2] - 2.0 * yd[1:-1])
        curvature = _median(curv) * self._curv_scale / ptp
        if curvature > cfg.curvature_max_per_s2:
            return "noisy", f"median curvature / peak-to-peak {curvature:.3g} /s^2"
        if not amps:
            return "noisy", "no QRS detected"
        ratio = ptp / _median(np.asarray(amps))
        if ratio > cfg.artefact_ratio_max:
            return "noisy", f"band peak-to-peak {ratio:.3g} x the QRS amplitude (artefacts)"
        return QUALITY_OK, f"median curvature / peak-to-peak {curvature:.3g} /s^2"


# -- whole records ------------------------------------------------------------------------------


def detect_r_peaks(
    signal: np.ndarray, fs_hz: float, config: FrontendConfig | None = None
) -> np.ndarray:
    """R-peak sample indices (int64, sorted) of a whole record (mV, 1-D), by the same
    streaming detector as :class:`BeatFrontend` (flushed at the end)."""
    fe = BeatFrontend(fs_hz, config)
    fe._r_log = []
    fe.push(signal)
    fe.flush()
    return np.asarray(fe._r_log, dtype=np.int64)


def extract_beats(
    signal: np.ndarray, fs_hz: float, config: FrontendConfig | None = None
) -> list[Beat]:
    """Every beat of a whole record (mV, 1-D), exactly as streaming it would give them."""
    fe = BeatFrontend(fs_hz, config)
    beats = fe.push(signal).beats
    beats.extend(fe.flush().beats)
    return beats
