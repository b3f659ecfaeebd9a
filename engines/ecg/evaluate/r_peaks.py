"""The R-peak sections of the ECG evaluation: the front end's detector on simulated records
against their true R peaks, and on real recordings against neurokit2."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from devices import cohort_subject, simulate_record, subject_session
from engines.ecg.evaluate.protocol import (
    DETECTION_FS_HZ,
    DETECTION_MUSCLE_SNR_DB,
    DETECTION_SESSION,
    DETECTION_SNR_DB,
    END_GUARD_S,
    FRONTEND_MAX_FS_HZ,
    TOLERANCE_S,
    EvalSizes,
    log_progress,
)
from engines.ecg.metrics import match_peak_pairs, sensitivity_ppv

__all__ = ["DETECTION_NOISE", "r_peaks_real", "r_peaks_simulated"]


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_records: int = 0
    signal_s: float = 0.0
    abs_err_ms: list[float] | None = None

    def add(self, other: _Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.n_records += other.n_records
        self.signal_s += other.signal_s
        if other.abs_err_ms:
            self.abs_err_ms = (self.abs_err_ms or []) + other.abs_err_ms

    def summary(self) -> dict[str, Any]:
        sens, ppv = sensitivity_ppv(self.tp, self.fp, self.fn)
        err = np.asarray(self.abs_err_ms or [], np.float64)
        return {
            "sensitivity": sens,
            "ppv": ppv,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "n_records": self.n_records,
            "signal_s": self.signal_s,
            "timing_error_ms_median": float(np.median(err)) if err.size else None,
            "timing_error_ms_p95": float(np.percentile(err, 95)) if err.size else None,
        }


def _score_detection(
    true_idx: np.ndarray, detected: np.ndarray, fs_hz: float, n_samples: int | None = None
) -> _Counts:
    """Match within +-50 ms. With ``n_samples`` (the record length), true and detected peaks
    in the record's last :data:`END_GUARD_S` are left out: a detector can only confirm an R
    peak once some samples after it have arrived, and the record ends there, not the beat."""
    t = np.asarray(true_idx, np.int64)
    d = np.asarray(detected, np.int64)
    if n_samples is not None:
        end = n_samples - END_GUARD_S * fs_hz
        t, d = t[t < end], d[d < end]
    it, id_ = match_peak_pairs(t, d, TOLERANCE_S * fs_hz)
    tp = int(it.size)
    err = np.abs(d[id_] - t[it]).astype(np.float64)
    return _Counts(
        tp=tp,
        fp=int(d.size) - tp,
        fn=int(t.size) - tp,
        n_records=1,
        abs_err_ms=(1e3 * err / fs_hz).tolist(),
    )


@dataclass(frozen=True)
class _Noise:
    """One noise condition of the R-peak section: ``kind`` "session" (the session's own
    noise), "mix" (the session's noise mix rescaled to ``snr_db``) or "muscle" (EMG only, at
    ``snr_db``)."""

    kind: str
    snr_db: float | None = None

    @property
    def key(self) -> str:
        return self.kind if self.snr_db is None else f"{self.kind}_{self.snr_db:g}dB"

    def session(self, subject: Any) -> Any:
        sess = subject_session(subject, DETECTION_SESSION)
        if self.kind != "muscle":
            return sess
        # muscle noise alone: no wander, drift, mains or motion; a floor keeps the mix
        # non-empty for sessions recorded without EMG, the SNR rescale sets its level anyway
        return replace(
            sess,
            baseline_mV=0.0,
            electrode_drift_mV=0.0,
            powerline_mV=0.0,
            motion_mV=0.0,
            emg_mV=max(sess.emg_mV, 0.01),
        )


DETECTION_NOISE: tuple[_Noise, ...] = (
    _Noise("session"),
    *(_Noise("mix", snr) for snr in DETECTION_SNR_DB if snr is not None),
    *(_Noise("muscle", snr) for snr in DETECTION_MUSCLE_SNR_DB),
)


def _qrs_band_snr_db(subject: Any, session: Any, noisy: np.ndarray, fs_hz: float) -> float:
    """SNR (dB) inside the QRS detection band (5-15 Hz): clean ECG vs the added noise, both
    band-passed (zero-phase Butterworth, order 2). The broadband SNR of the simulator is
    dominated by baseline wander, which this band removes."""
    clean = simulate_record(
        subject, session, fs_hz=fs_hz, duration_s=noisy.size / fs_hz, snr_db=math.inf
    ).signal.astype(np.float64)
    sos = butter(2, (5.0, 15.0), btype="bandpass", fs=fs_hz, output="sos")
    c = sosfiltfilt(sos, clean)
    n = sosfiltfilt(sos, noisy.astype(np.float64) - clean)
    pn = float(np.mean(n**2))
    return math.inf if pn == 0 else float(10 * np.log10(np.mean(c**2) / pn))


def r_peaks_simulated(sizes: EvalSizes, seed: int, progress: bool) -> dict[str, Any]:
    from engines.ecg.frontend import detect_r_peaks

    cells: dict[tuple[float, str], _Counts] = {}
    band_snr: dict[str, list[float]] = {n.key: [] for n in DETECTION_NOISE}
    worst: dict[str, Any] | None = None
    for fs in DETECTION_FS_HZ:
        log_progress(progress, f"R peaks at {fs:g} Hz: {len(sizes.detection_subjects)} subjects")
        for noise in DETECTION_NOISE:
            cell = _Counts()
            for s in sizes.detection_subjects:
                subject = cohort_subject(int(s), seed=seed)
                session = noise.session(subject)
                rec = simulate_record(
                    subject, session, fs_hz=fs, duration_s=sizes.detection_s, snr_db=noise.snr_db
                )
                det = detect_r_peaks(rec.signal, rec.fs_hz)
                c = _score_detection(rec.r_peaks, det, rec.fs_hz, rec.signal.size)
                c.signal_s = rec.duration_s
                cell.add(c)
                if fs == DETECTION_FS_HZ[1]:
                    band_snr[noise.key].append(
                        _qrs_band_snr_db(subject, session, rec.signal, rec.fs_hz)
                    )
                sens, ppv = sensitivity_ppv(c.tp, c.fp, c.fn)
                low = min(v for v in (sens, ppv, 1.0) if v is not None)
                if worst is None or low < worst["min_sens_ppv"]:
                    worst = {
                        "subject": int(s),
                        "fs_hz": fs,
                        "noise": noise.key,
                        "sensitivity": sens,
                        "ppv": ppv,
                        "min_sens_ppv": low,
                    }
            cells[(fs, noise.key)] = cell

    def pooled(keys: Iterable[tuple[float, str]]) -> dict[str, Any]:
        total = _Counts()
        for key in keys:
            total.add(cells[key])
        return total.summary()

    by_noise = {}
    for noise in DETECTION_NOISE:
        entry = pooled((fs, noise.key) for fs in DETECTION_FS_HZ)
        snrs = np.array(band_snr[noise.key])
        entry["qrs_band_snr_db_median"] = float(np.median(snrs)) if snrs.size else None
        entry["qrs_band_snr_db_min"] = float(snrs.min()) if snrs.size else None
        by_noise[noise.key] = entry
    keys = [n.key for n in DETECTION_NOISE]
    return {
        "session": DETECTION_SESSION,
        "subjects": list(sizes.detection_subjects),
        "duration_s_per_record": sizes.detection_s,
        "tolerance_ms": 1e3 * TOLERANCE_S,
        "end_guard_s": END_GUARD_S,
        "noise_note": "session: the session's own noise; mix_XdB: that noise mix rescaled to a "
        "broadband SNR of X dB (devices.ecg_sim definition: clean power / all noise power); "
        "muscle_XdB: EMG alone at X dB. qrs_band_snr_db_*: the SNR inside the 5-15 Hz QRS "
        f"band, over the {DETECTION_FS_HZ[1]:g} Hz records",
        "overall_note": "the target pool: the session's own noise and the rescaled mix "
        "(30-10 dB) at every rate; the muscle-noise stress levels are reported apart",
        "overall": pooled(k for k in cells if not k[1].startswith("muscle")),
        "muscle_stress": pooled(k for k in cells if k[1].startswith("muscle")),
        "by_fs_hz": {f"{fs:g}": pooled((fs, k) for k in keys) for fs in DETECTION_FS_HZ},
        "by_noise": by_noise,
        "cells": {
            f"{fs:g}Hz_{k}": cells[(fs, k)].summary() for fs in DETECTION_FS_HZ for k in keys
        },
        "worst_record": worst,
    }


def _neurokit_peaks(signal: np.ndarray, fs_hz: float) -> np.ndarray:
    import neurokit2 as nk

    cleaned = nk.ecg_clean(np.asarray(signal, np.float64), sampling_rate=fs_hz, method="neurokit")
    _, info = nk.ecg_peaks(cleaned, sampling_rate=fs_hz, method="neurokit")
    return np.asarray(info["ECG_R_Peaks"], np.int64)


def _mean_hr_bpm(peaks: np.ndarray, fs_hz: float) -> float | None:
    if peaks.size < 2:
        return None
    rr = np.diff(np.sort(peaks)) / fs_hz
    return float(60.0 / rr.mean())


def r_peaks_real(data_dir: Path, progress: bool) -> dict[str, Any]:
    try:
        from devices.ecg_recordings import REAL_RECORDINGS, load_real_recording
    except ImportError as exc:
        return {"skipped": f"devices.ecg_recordings not available: {exc}"}
    try:
        import neurokit2  # noqa: F401
    except ImportError:
        return {"skipped": "neurokit2 not installed (pip install 'sigstream[eval]')"}
    from engines.ecg.frontend import detect_r_peaks

    if not Path(data_dir).is_dir():
        return {"skipped": f"no real recordings: {data_dir} is absent (run `make ecg-data`)"}
    out: dict[str, Any] = {
        "data_dir": str(data_dir),
        "reference": "neurokit2.ecg_clean + ecg_peaks, method 'neurokit'",
        "note": "agreement, not accuracy: sensitivity = neurokit2's R peaks we also found, "
        "ppv = our R peaks neurokit2 also found; peaks in the last "
        f"{END_GUARD_S:g} s are left out; beats_* count every peak",
        "tolerance_ms": 1e3 * TOLERANCE_S,
        "recordings": {},
    }
    pooled = _Counts()
    for name in REAL_RECORDINGS:
        try:
            rec = load_real_recording(name, data_dir)
        except (OSError, ValueError) as exc:
            out["recordings"][name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        log_progress(progress, f"real recording {name}: {rec.duration_s:.0f} s at {rec.fs_hz:g} Hz")
        t0 = time.perf_counter()
        # the front end takes 100..2000 Hz: a faster recording is decimated by an integer
        # factor first, as a gateway would have to, and the peaks mapped back
        factor = max(1, math.ceil(rec.fs_hz / FRONTEND_MAX_FS_HZ))
        x = rec.signal if factor == 1 else resample_poly(rec.signal, 1, factor)
        ours = np.asarray(detect_r_peaks(x, rec.fs_hz / factor), np.int64) * factor
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = _neurokit_peaks(rec.signal, rec.fs_hz)
        t_ref = time.perf_counter() - t0
        c = _score_detection(ref, ours, rec.fs_hz, rec.signal.size)
        c.signal_s = rec.duration_s
        pooled.add(c)
        entry = c.summary()
        entry.update(
            {
                "fs_hz": rec.fs_hz,
                "decimated_by": factor,
                "duration_s": rec.duration_s,
                "beats_ours": int(ours.size),
                "beats_neurokit2": int(ref.size),
                "mean_hr_bpm_ours": _mean_hr_bpm(ours, rec.fs_hz),
                "mean_hr_bpm_neurokit2": _mean_hr_bpm(ref, rec.fs_hz),
                "seconds_ours": t_ours,
                "seconds_neurokit2": t_ref,
            }
        )
        out["recordings"][name] = entry
    out["overall"] = pooled.summary()
    return out
