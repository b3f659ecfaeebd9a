"""Objective speech quality of a decoded signal against its reference.

The codec evaluation scores what comes out of a codec (``deg``) against what went in
(``ref``): mono float at ``fs`` (16 kHz for the codec), same length, already aligned. A codec
with delay is aligned first with :func:`align`. Every metric refuses a pair it cannot score
honestly (different lengths, not 1-D, empty, NaN/Inf) with ``ValueError``.

Definitions (``e = ref - deg``):

- SNR = ``10 log10(sum ref^2 / sum e^2)`` over the whole signal. Identical signals would give
  +Inf, which JSON cannot hold; the noise energy is floored at ``10^(-SNR_CAP_DB/10)`` of the
  signal energy, so the SNR is capped at :data:`SNR_CAP_DB` = 100 dB (float32 rounding
  noise alone sits near 140 dB, so the cap only ever replaces "perfect"). A silent reference
  has no SNR: NaN (``engines.report.json_number`` writes it as null).
- Segmental SNR: the same per non-overlapping frame (20 ms; the tail is zero-padded, which
  changes neither energy ratio), each clamped to ``[min_db, max_db]`` (-10, 35 dB: the usual
  limits, so a frame of silence or a perfect frame does not dominate the mean), averaged over
  the *active* frames.
- Activity: a frame is active when the reference's energy in it is within
  :data:`ACTIVITY_DB` = 40 dB of the reference's loudest frame. Pauses of speech are left out
  of segmental SNR and LSD: their SNR is meaningless (noise against nothing).
- Log-spectral distance per band: Hann-windowed STFT (``n_fft`` 512, ``hop`` 256, no centring,
  tail zero-padded to a whole hop), ``P = |X|^2``; per active frame
  ``sqrt(mean over bins in band of (10 log10(P_ref + eps) - 10 log10(P_deg + eps))^2)``,
  averaged over active frames. A band ``[lo, hi)`` holds the bins with ``lo <= f < hi``, and
  Nyquist for the band that reaches it; "all" is the whole 0..fs/2 spectrum. ``eps`` is
  :data:`LSD_FLOOR_DB` = 100 dB below the reference's largest bin power, so exact zeros (digital
  silence, a brick-wall band limit) count as "100 dB down" instead of -Inf.
- PESQ: ITU-T P.862.2 wideband MOS-LQO via the ``pesq`` package (1.0 .. 4.64).
- STOI: classic short-time objective intelligibility via ``pystoi`` (0 .. 1).

Pure numpy/scipy plus the ``pesq``/``pystoi`` packages; no state, safe from any thread.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from devices.audio import CODEC_FS, resample
from engines.report import json_number

__all__ = [
    "ACTIVITY_DB",
    "LSD_FLOOR_DB",
    "SNR_CAP_DB",
    "align",
    "band_name",
    "log_spectral_distance_db",
    "pesq_wb",
    "quality_report",
    "segmental_snr_db",
    "snr_db",
    "stoi",
]

log = logging.getLogger(__name__)

SNR_CAP_DB = 100.0
ACTIVITY_DB = 40.0
LSD_FLOOR_DB = 100.0
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((0, 2000), (2000, 4000), (4000, 8000))
_PESQ_FS = 16_000


def _signal(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D mono signal, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or Inf samples")
    return a


def _pair(ref: Any, deg: Any) -> tuple[np.ndarray, np.ndarray]:
    r, d = _signal(ref, "ref"), _signal(deg, "deg")
    if r.size != d.size:
        raise ValueError(
            f"ref and deg differ in length ({r.size} vs {d.size} samples); align them first "
            "(engines.codec.quality.align)"
        )
    return r, d


def _db(num: np.ndarray | float, den: np.ndarray | float) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(num / den)


def snr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """Whole-signal SNR of ``deg`` against ``ref`` in dB, capped at :data:`SNR_CAP_DB`; NaN
    for an all-zero reference."""
    r, d = _pair(ref, deg)
    signal = float(np.sum(r * r))
    if signal == 0.0:
        return float("nan")
    noise = max(float(np.sum((r - d) ** 2)), signal * 10.0 ** (-SNR_CAP_DB / 10.0))
    return float(_db(signal, noise))


def _frames(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """(n_frames, frame) view of ``x``, zero-padded to a whole number of hops (>= 1 frame)."""
    n_frames = max(1, -(-(x.size - frame) // hop) + 1)
    padded = np.zeros((n_frames - 1) * hop + frame)
    padded[: x.size] = x
    return np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop]


def _active(energy: np.ndarray) -> np.ndarray:
    """Frames within :data:`ACTIVITY_DB` of the loudest (none if all are silent)."""
    top = float(energy.max())
    if top == 0.0:
        return np.zeros(energy.shape, bool)
    return energy >= top * 10.0 ** (-ACTIVITY_DB / 10.0)


def segmental_snr_db(
    ref: np.ndarray,
    deg: np.ndarray,
    *,
    frame: int = 320,
    min_db: float = -10.0,
    max_db: float = 35.0,
    active_only: bool = True,
) -> float:
    """Mean per-frame SNR in dB, each frame clamped to ``[min_db, max_db]``.

    ``frame``: samples per frame (320 = 20 ms at 16 kHz), non-overlapping. With
    ``active_only`` (default) frames more than :data:`ACTIVITY_DB` below the reference's
    loudest frame are skipped; NaN when no frame is left (silent reference).
    """
    r, d = _pair(ref, deg)
    if frame < 1:
        raise ValueError(f"frame must be >= 1 sample, got {frame}")
    if min_db >= max_db:
        raise ValueError(f"min_db ({min_db}) must be below max_db ({max_db})")
    signal = np.sum(_frames(r, frame, frame) ** 2, axis=1)
    noise = np.sum(_frames(r - d, frame, frame) ** 2, axis=1)
    # 0/0 (silent frame, exact copy) is NaN before clamping; only reachable without active_only.
    seg = np.clip(np.nan_to_num(_db(signal, noise), nan=min_db), min_db, max_db)
    keep = _active(signal) if active_only else np.ones(signal.shape, bool)
    return float(seg[keep].mean()) if keep.any() else float("nan")


def band_name(lo_hz: float, hi_hz: float) -> str:
    """Report key of a band: (0, 2000) -> "0-2kHz", (4000, 8000) -> "4-8kHz"."""
    return f"{lo_hz / 1000:g}-{hi_hz / 1000:g}kHz"


def log_spectral_distance_db(
    ref: np.ndarray,
    deg: np.ndarray,
    *,
    fs: int = CODEC_FS,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_fft: int = 512,
    hop: int = 256,
) -> dict[str, float]:
    """Log-spectral distance in dB per band and over the whole spectrum (key "all").

    Keys are :func:`band_name` of each band, e.g. ``{"0-2kHz": .., "2-4kHz": .., "4-8kHz": ..,
    "all": ..}``; 0 for identical signals; NaN everywhere for a silent reference. See the
    module docstring for the definition, the activity rule and the power floor.
    """
    r, d = _pair(ref, deg)
    if n_fft < 2 or not 1 <= hop <= n_fft:
        raise ValueError(f"need n_fft >= 2 and 1 <= hop <= n_fft, got n_fft={n_fft}, hop={hop}")
    nyquist = fs / 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / fs)
    masks: dict[str, np.ndarray] = {}
    for lo, hi in bands:
        if not 0 <= lo < hi <= nyquist:
            raise ValueError(f"band ({lo}, {hi}) Hz is not inside 0..{nyquist:g} Hz")
        mask = (freqs >= lo) & (freqs < hi)
        if hi >= nyquist:
            mask |= freqs == nyquist
        if not mask.any():
            raise ValueError(f"band ({lo}, {hi}) Hz holds no bin at n_fft={n_fft}, fs={fs}")
        masks[band_name(lo, hi)] = mask
    masks["all"] = np.ones(freqs.shape, bool)

    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann: overlap-adds flat at hop n_fft/2
    p_ref = np.abs(np.fft.rfft(_frames(r, n_fft, hop) * window, axis=1)) ** 2
    p_deg = np.abs(np.fft.rfft(_frames(d, n_fft, hop) * window, axis=1)) ** 2
    active = _active(p_ref.sum(axis=1))  # Parseval: the windowed frame's energy
    if not active.any():
        return {k: float("nan") for k in masks}
    eps = float(p_ref.max()) * 10.0 ** (-LSD_FLOOR_DB / 10.0)
    diff2 = (10.0 * np.log10(p_ref[active] + eps) - 10.0 * np.log10(p_deg[active] + eps)) ** 2
    return {k: float(np.sqrt(diff2[:, m].mean(axis=1)).mean()) for k, m in masks.items()}


def pesq_wb(ref: np.ndarray, deg: np.ndarray, fs: int = CODEC_FS) -> float | None:
    """Wideband PESQ MOS-LQO (ITU-T P.862.2), 1.0 .. 4.64; None (logged) when PESQ cannot
    score the pair (no utterance found, too short).

    P.862.2 is defined at 16 kHz: a pair at another ``fs`` is resampled to 16 kHz first.
    """
    from pesq import PesqError, pesq

    r, d = _pair(ref, deg)
    if not r.any():
        log.warning("PESQ cannot score a silent reference")
        return None
    if fs != _PESQ_FS:
        r = resample(r, fs, _PESQ_FS).astype(np.float64)
        d = resample(d, fs, _PESQ_FS).astype(np.float64)
    try:
        return float(pesq(_PESQ_FS, r, d, "wb"))
    except PesqError as exc:
        log.warning("PESQ cannot score this pair (%d samples): %s: %s",
                    r.size, type(exc).__name__, exc)
        return None


def stoi(ref: np.ndarray, deg: np.ndarray, fs: int = CODEC_FS) -> float:
    """Classic STOI, 0 .. 1 (pystoi, which resamples to 10 kHz itself).

    NaN (logged) when less than 30 STFT frames (~0.4 s) of speech remain after pystoi drops
    silent frames: pystoi would return a misleading 1e-5 there.
    """
    from pystoi import stoi as _stoi

    r, d = _pair(ref, deg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        value = float(_stoi(r, d, fs, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        log.warning("STOI undefined: too little active speech in %d samples", r.size)
        return float("nan")
    return value


def quality_report(ref: np.ndarray, deg: np.ndarray, fs: int = CODEC_FS) -> dict[str, Any]:
    """Every metric of this module for one aligned pair, JSON-ready (None where undefined).

    Keys: ``seconds``, ``snr_db``, ``segmental_snr_db`` (20 ms frames), ``lsd_db`` (dict as
    :func:`log_spectral_distance_db`, default bands clipped to ``fs/2``), ``pesq_wb``,
    ``stoi``.
    """
    r, d = _pair(ref, deg)
    bands = tuple((lo, min(hi, fs / 2)) for lo, hi in DEFAULT_BANDS if lo < fs / 2)
    lsd = log_spectral_distance_db(r, d, fs=fs, bands=bands)
    return {
        "seconds": json_number(r.size / fs),
        "snr_db": json_number(snr_db(r, d)),
        "segmental_snr_db": json_number(segmental_snr_db(r, d, frame=max(1, round(fs / 50)))),
        "lsd_db": {k: json_number(v) for k, v in lsd.items()},
        "pesq_wb": json_number(pesq_wb(r, d, fs)),
        "stoi": json_number(stoi(r, d, fs)),
    }


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(ref_aligned, deg_aligned, lag)``: ``deg`` shifted onto ``ref`` and both trimmed to
    their common part (equal lengths, dtype of the inputs kept).

    ``lag`` (samples, ``|lag| <= max_lag``) maximises the FFT cross-correlation
    ``sum_n ref[n] deg[n + lag]``: positive when ``deg`` is late (a codec's delay), so
    ``deg_aligned[n] = deg[n + lag]``. ``ref`` and ``deg`` may differ in length here.
    """
    from scipy.signal import correlate

    r, d = _signal(ref, "ref"), _signal(deg, "deg")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    # full correlation index j holds lag j - (len(ref) - 1)
    c = correlate(d, r, mode="full", method="fft")
    lags = np.arange(c.size) - (r.size - 1)
    window = np.abs(lags) <= max_lag
    lag = int(lags[window][np.argmax(c[window])])
    start, stop = max(0, -lag), min(r.size, d.size - lag)
    if stop <= start:
        raise ValueError(f"ref and deg do not overlap at lag {lag}")
    ref_a, deg_a = np.asarray(ref), np.asarray(deg)
    return ref_a[start:stop], deg_a[start + lag:stop + lag], lag
