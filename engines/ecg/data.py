"""Beats of simulated subjects through the real streaming front end: the ECG training data.

Every beat the models see went the way a live beat goes: :func:`devices.ecg_sim.simulate_record`
(the subject's morphology, heart-rate variability and the session's noise) at a wearable's
stream rate, then :func:`engines.ecg.frontend.extract_beats` (band-pass, Pan-Tompkins R peaks,
resampling to 256 Hz, polarity, quality). Beats whose quality is not ``"ok"`` are dropped, as the
service drops them.

Stream rates: a subject-session's ``duration_s`` is split evenly over ``fs_hz`` (default
:data:`TRAIN_FS_HZ`, 128 to 500 Hz, the span of the wearables), each rate on its own stretch of
the session (``start_s`` + k * ``duration_s / len(fs_hz)``), so the beats are all different and
the model learns to ignore the rate the beat was recorded at (resampling leaves its marks).

Cache: generated sets are kept in memory (an LRU of :func:`cohort_beats` calls within the
process); nothing is written to disk. Arrays handed out are read-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from devices import cohort_subject, simulate_record
from engines.ecg.frontend import BEAT_SAMPLES, QUALITY_OK, extract_beats

__all__ = [
    "CALIBRATION_SUBJECTS",
    "COHORT_SUBJECTS",
    "POOL_SUBJECTS",
    "TRAIN_FS_HZ",
    "BeatSet",
    "cohort_beats",
    "session_beats",
]

#: Stream rates the training beats are recorded at (Hz).
TRAIN_FS_HZ: tuple[float, ...] = (128.0, 250.0, 360.0, 500.0)
#: Closed-set cohort (paper table): subject ids 0..17.
COHORT_SUBJECTS: tuple[int, ...] = tuple(range(18))
#: Embedding training pool.
POOL_SUBJECTS: tuple[int, ...] = tuple(range(100, 400))
#: Threshold calibration (validation) subjects.
CALIBRATION_SUBJECTS: tuple[int, ...] = tuple(range(400, 450))


@dataclass(frozen=True, kw_only=True)
class BeatSet:
    """Beats with their labels, row-aligned.

    ``beats`` float32 ``(n, 192)`` mV at 256 Hz; ``subjects``, ``sessions`` int64 ``(n,)``;
    ``fs_hz`` float32 ``(n,)`` the stream rate each beat was recorded at; ``time_s`` float64
    ``(n,)`` the R peak's time in its record (for ordering beats of one recording).
    """

    beats: np.ndarray
    subjects: np.ndarray
    sessions: np.ndarray
    fs_hz: np.ndarray
    time_s: np.ndarray

    def __len__(self) -> int:
        return int(self.beats.shape[0])

    def select(self, mask: np.ndarray) -> BeatSet:
        """The rows where ``mask`` (bool ``(n,)`` or indices) holds."""
        return BeatSet(
            beats=self.beats[mask],
            subjects=self.subjects[mask],
            sessions=self.sessions[mask],
            fs_hz=self.fs_hz[mask],
            time_s=self.time_s[mask],
        )


def session_beats(
    subject: int,
    session: int,
    *,
    fs_hz: float,
    duration_s: float,
    start_s: float = 0.0,
    snr_db: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Good beats of one simulated recording: ``(beats (n, 192) float32, r_time_s (n,))``.

    ``seed`` is the cohort seed of :func:`devices.ecg_cohort.cohort_subject` (0 for everything
    shipped). ``snr_db=None`` keeps the session's own noise levels.
    """
    record = simulate_record(
        cohort_subject(subject, seed=seed),
        session,
        fs_hz=fs_hz,
        duration_s=duration_s,
        snr_db=snr_db,
        start_s=start_s,
    )
    found = extract_beats(record.signal, record.fs_hz)
    good = [b for b in found if b.quality == QUALITY_OK]
    if not good:
        return np.zeros((0, BEAT_SAMPLES), np.float32), np.zeros(0)
    beats = np.stack([b.samples for b in good]).astype(np.float32, copy=False)
    times = np.array([start_s + b.r_index / fs_hz + b.r_offset_s for b in good])
    return beats, times


@lru_cache(maxsize=16)
def _cached(
    subjects: tuple[int, ...],
    sessions: tuple[int, ...],
    duration_s: float,
    fs_hz: tuple[float, ...],
    start_s: float,
    snr_db: float | None,
    seed: int,
) -> BeatSet:
    parts: list[np.ndarray] = []
    labels: list[tuple[int, int, float, int]] = []
    times: list[np.ndarray] = []
    seg = duration_s / len(fs_hz)
    for subject in subjects:
        for session in sessions:
            for k, fs in enumerate(fs_hz):
                beats, t = session_beats(
                    subject, session, fs_hz=fs, duration_s=seg, start_s=start_s + k * seg,
                    snr_db=snr_db, seed=seed,
                )
                parts.append(beats)
                times.append(t)
                labels.append((subject, session, fs, beats.shape[0]))
    n = [count for *_, count in labels]
    out = BeatSet(
        beats=np.concatenate(parts) if parts else np.zeros((0, BEAT_SAMPLES), np.float32),
        subjects=np.repeat([s for s, *_ in labels], n).astype(np.int64),
        sessions=np.repeat([s for _, s, *_ in labels], n).astype(np.int64),
        fs_hz=np.repeat([f for _, _, f, _ in labels], n).astype(np.float32),
        time_s=np.concatenate(times) if times else np.zeros(0),
    )
    for a in (out.beats, out.subjects, out.sessions, out.fs_hz, out.time_s):
        a.flags.writeable = False
    return out


def cohort_beats(
    subjects: Iterable[int],
    sessions: Iterable[int],
    *,
    duration_s: float,
    fs_hz: Iterable[float] = TRAIN_FS_HZ,
    start_s: float = 0.0,
    snr_db: float | None = None,
    seed: int = 0,
) -> BeatSet:
    """Good beats of every ``subject`` x ``session``: ``duration_s`` of signal each, split over
    the stream rates ``fs_hz`` (see the module docstring). Rows are ordered by subject, session,
    rate, time. Cached in memory for identical arguments."""
    rates = tuple(float(f) for f in fs_hz)
    if not rates:
        raise ValueError("fs_hz must name at least one stream rate")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    return _cached(
        tuple(int(s) for s in subjects),
        tuple(int(s) for s in sessions),
        float(duration_s),
        rates,
        float(start_s),
        None if snr_db is None else float(snr_db),
        int(seed),
    )
