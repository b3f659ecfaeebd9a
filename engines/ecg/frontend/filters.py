"""Filters of the ECG front end, designed once per sample rate (:func:`design_filters`), the fast
kernels that run them with carried state, and the interpolation that cuts beats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, iirnotch, lfilter, sosfilt, sosfilt_zi, tf2sos

from engines.ecg.frontend.config import BEAT_FS_HZ, BEAT_PRE_S, BEAT_SAMPLES, FrontendConfig

try:  # scipy's own kernels: the public wrappers' argument checks cost more than the work
    from scipy.signal._sigtools import _linear_filter  # type: ignore[attr-defined]
    from scipy.signal._sosfilt import _sosfilt  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other scipy layouts fall back to the public API
    _sosfilt = _linear_filter = None

__all__ = [
    "FS_RANGE_HZ",
    "FilterDesign",
    "catmull_rom",
    "check_fs",
    "design_filters",
    "median_lower",
    "run_fir",
    "run_sos",
]

FS_RANGE_HZ = (100.0, 2048.0)


def check_fs(fs_hz: float) -> float:
    """``fs_hz`` as a float, if the front end takes it (ValueError otherwise)."""
    fs = float(fs_hz)
    if not (math.isfinite(fs) and FS_RANGE_HZ[0] <= fs <= FS_RANGE_HZ[1]):
        raise ValueError(
            f"fs_hz must be in {FS_RANGE_HZ[0]:g}..{FS_RANGE_HZ[1]:g} Hz, got {fs_hz!r}"
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


def run_sos(sos: np.ndarray, row: np.ndarray, zi: np.ndarray) -> None:
    """Filter ``row`` ((1, n) C-contiguous float64) in place, updating ``zi`` ((1, s, 2))."""
    if _sosfilt is not None:
        _sosfilt(sos, row, zi)
    else:  # pragma: no cover
        out, zf = sosfilt(sos, row[0], zi=zi[0])
        row[0] = out
        zi[0] = zf


def run_fir(b: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def catmull_rom(y: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cubic (Catmull-Rom) interpolation of ``y`` between samples ``k`` and ``k + 1`` at
    fraction ``t`` in [0, 1); ``y`` has a sample before ``k.min()`` and two after
    ``k.max()``."""
    p0, p1, p2, p3 = y[k - 1], y[k], y[k + 1], y[k + 2]
    return p1 + 0.5 * t * (
        p2 - p0 + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0))
    )


def median_lower(a: np.ndarray) -> float:
    """Median (the lower one for even sizes) without np.median's overhead."""
    k = (a.size - 1) // 2
    return float(np.partition(a, k)[k])


@dataclass(frozen=True, eq=False)
class FilterDesign:
    """What a front end derives from ``(fs, config)`` alone: filters and their unit steady
    states, the morphology filter's R delay, the smallest peak looked at, and every length in
    samples. Designed once per rate (:func:`design_filters`) and shared by every stream at
    that rate; nothing writes to its arrays (scipy's fast kernels need them writable, so they
    are not flagged read-only)."""

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
def design_filters(fs: float, cfg: FrontendConfig) -> FilterDesign:
    sos_m = _morph_sos(fs, cfg)
    sos_q = _qrs_sos(fs, cfg)
    n_mwi = max(1, round(cfg.mwi_s * fs))
    b_mwi = np.full(n_mwi, 1.0 / n_mwi)
    keep = math.ceil(cfg.history_s * fs)
    return FilterDesign(
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
