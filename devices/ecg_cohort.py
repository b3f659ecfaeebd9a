"""The simulated cohort: who the people are, and how their recording sessions differ.

No multi-subject ECG database ships offline, so user recognition is trained and measured on a
simulated cohort (shared/DATA.md). Each person (:func:`cohort_subject`) has a fixed beat
morphology (ECGSYN waves, :class:`EcgWave`; :data:`ECGSYN_WAVES` are the defaults) and
heart-rate variability; each recording session (:func:`subject_session`) of that person differs
the way real sessions do. People differ around the ECGSYN defaults (a few degrees, a few tens of
% in width and amplitude); sessions drift a little (≈1–2°, 3 % width, 6 % amplitude) and change
the overall gain (electrode placement, ≈15 %) and the noise levels. Determined by (seed,
subject index, session). :mod:`devices.ecg_sim` turns a person and a session into samples.

Pure numpy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ECGSYN_WAVES",
    "EcgSession",
    "EcgSubject",
    "EcgWave",
    "cohort_subject",
    "subject_session",
]

_DEG = math.pi / 180.0
# Keys of this module's random streams (the last-but-one element of a generator key); the
# signal's own streams (devices.ecg_sim) are keyed 3 and up.
_K_SUBJECT, _K_SESSION = 1, 2


@dataclass(frozen=True, kw_only=True)
class EcgWave:
    """One Gaussian wave of the beat (ECGSYN style).

    ``angle_rad``: centre relative to the R peak as a phase angle at 60 bpm (``θ_i``;
    ``angle_rad / 2π`` seconds at 60 bpm). ``width_rad``: Gaussian standard deviation as a phase
    angle at 60 bpm (``b_i``). ``amplitude_mV``: height of the wave (negative: a downward wave).
    Waves named ``P``, ``T`` or ``T2`` scale in time with ``sqrt(RR)``; the others do not.
    """

    name: str
    angle_rad: float
    width_rad: float
    amplitude_mV: float

    def __post_init__(self) -> None:
        if not self.width_rad > 0:
            raise ValueError(f"wave {self.name}: width_rad must be > 0, got {self.width_rad}")

    @property
    def rate_dependent(self) -> bool:
        """Whether the wave's position and width scale with ``sqrt(RR)`` (P and T waves)."""
        return self.name[:1] in ("P", "T")


# ECGSYN's default angles and widths; amplitudes in mV of a typical lead II beat.
ECGSYN_WAVES = (
    EcgWave(name="P", angle_rad=-70 * _DEG, width_rad=0.25, amplitude_mV=0.15),
    EcgWave(name="Q", angle_rad=-15 * _DEG, width_rad=0.1, amplitude_mV=-0.12),
    EcgWave(name="R", angle_rad=0.0, width_rad=0.1, amplitude_mV=1.2),
    EcgWave(name="S", angle_rad=15 * _DEG, width_rad=0.1, amplitude_mV=-0.3),
    EcgWave(name="T", angle_rad=100 * _DEG, width_rad=0.4, amplitude_mV=0.35),
)


@dataclass(frozen=True, kw_only=True)
class EcgSubject:
    """One simulated person: beat morphology and heart-rhythm parameters.

    ``waves``: the person's beat (ECGSYN waves, see :class:`EcgWave`). ``hr_bpm``: resting mean
    heart rate. ``lf_hz``/``lf_rel``: Mayer-wave frequency and relative RR modulation depth.
    ``hf_rel``: respiratory sinus arrhythmia depth (relative RR). ``rr_noise_rel``: standard
    deviation of the random AR(1) part of RR (relative). ``hr_drift_rel``: depth of the slow
    random heart-rate drift within a session (relative RR, time scale 30 s). ``resp_hz``:
    breathing rate. ``resp_amp_rel``: relative beat-amplitude modulation by breathing.
    ``noise_scale``: how noisy this person's recordings tend to be (skin, movement; multiplies
    the session noise). ``powerline_hz``: mains frequency where this person lives.
    """

    index: int
    seed: int
    waves: tuple[EcgWave, ...]
    hr_bpm: float
    lf_hz: float = 0.1
    lf_rel: float = 0.02
    hf_rel: float = 0.02
    rr_noise_rel: float = 0.01
    hr_drift_rel: float = 0.03
    resp_hz: float = 0.25
    resp_amp_rel: float = 0.04
    noise_scale: float = 1.0
    powerline_hz: float = 50.0

    def __post_init__(self) -> None:
        if self.index < 0 or self.seed < 0:
            raise ValueError("index and seed must be >= 0")
        if not 20.0 <= self.hr_bpm <= 200.0:
            raise ValueError(f"hr_bpm must be in 20..200, got {self.hr_bpm}")
        if not self.waves or not any(w.name == "R" for w in self.waves):
            raise ValueError("waves must include an 'R' wave")


@dataclass(frozen=True, kw_only=True)
class EcgSession:
    """One recording session of a person: what changes between sessions.

    ``index``: 0 = enrolment, 1, 2, ... later sessions. ``hr_bpm``: mean heart rate that day.
    ``resp_hz``: breathing rate. ``amplitude_scale``: overall gain (electrode placement, skin
    contact). ``waves``: the person's waves after this session's small morphology drift.
    Noise levels (mV): ``baseline_mV`` amplitude of respiratory baseline wander;
    ``electrode_drift_mV`` scale of the slow random drift; ``emg_mV`` standard deviation of
    muscle noise outside bursts, ``emg_burst_gain`` extra gain at the top of a burst;
    ``powerline_mV`` amplitude of mains interference at ``powerline_hz``; ``motion_mV``
    standard deviation of electrode-motion jumps, ``motion_rate_hz`` their rate (events/s).
    """

    index: int
    hr_bpm: float
    resp_hz: float
    amplitude_scale: float
    waves: tuple[EcgWave, ...]
    baseline_mV: float
    electrode_drift_mV: float
    emg_mV: float
    emg_burst_gain: float
    powerline_mV: float
    powerline_hz: float
    motion_mV: float
    motion_rate_hz: float

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"session index must be >= 0, got {self.index}")
        if not 20.0 <= self.hr_bpm <= 200.0:
            raise ValueError(f"hr_bpm must be in 20..200, got {self.hr_bpm}")
        if not self.resp_hz > 0 or not self.powerline_hz > 0:
            raise ValueError("resp_hz and powerline_hz must be > 0")
        if not self.waves or not any(w.name == "R" for w in self.waves):
            raise ValueError("waves must include an 'R' wave")
        levels = (
            self.baseline_mV,
            self.electrode_drift_mV,
            self.emg_mV,
            self.emg_burst_gain,
            self.powerline_mV,
            self.motion_mV,
            self.motion_rate_hz,
        )
        if min(levels) < 0 or not all(math.isfinite(v) for v in levels):
            raise ValueError("noise levels must be finite and >= 0")

    @property
    def has_noise(self) -> bool:
        return (
            max(self.baseline_mV, self.electrode_drift_mV, self.emg_mV, self.powerline_mV) > 0
            or self.motion_mV * self.motion_rate_hz > 0
        )


def _lognormal(rng: np.random.Generator, sigma: float) -> float:
    return float(np.exp(sigma * rng.standard_normal()))


def cohort_subject(index: int, *, seed: int = 0) -> EcgSubject:
    """The simulated person ``index`` of cohort ``seed`` (deterministic).

    People differ around the ECGSYN defaults: P angle ±6°, Q/S ±2.5°, T ±8° (1 sd); widths
    ×e^N(0, 0.15); amplitudes ×e^N(0, σ) with σ 0.25 (R) to 0.5 (Q); a third of them get a
    sixth wave (``T2`` biphasic T or ``R2`` notched R). Heart rate 55–85 bpm.
    """
    if index < 0 or seed < 0:
        raise ValueError("index and seed must be >= 0")
    rng = np.random.default_rng([seed, index, _K_SUBJECT])
    angle_sd = {"P": 7.0, "Q": 3.0, "R": 0.0, "S": 3.0, "T": 9.0}
    width_sd = {"P": 0.2, "Q": 0.2, "R": 0.18, "S": 0.2, "T": 0.2}
    amp_sd = {"P": 0.4, "Q": 0.55, "R": 0.25, "S": 0.5, "T": 0.45}
    waves = []
    for wave in ECGSYN_WAVES:
        waves.append(
            EcgWave(
                name=wave.name,
                angle_rad=wave.angle_rad + angle_sd[wave.name] * _DEG * rng.standard_normal(),
                width_rad=wave.width_rad * _lognormal(rng, width_sd[wave.name]),
                amplitude_mV=wave.amplitude_mV * _lognormal(rng, amp_sd[wave.name]),
            )
        )
    extra = rng.uniform()
    by_name = {w.name: w for w in waves}
    if extra < 0.18:  # biphasic T: a negative lobe just after the T wave
        t = by_name["T"]
        waves.append(
            EcgWave(
                name="T2",
                angle_rad=t.angle_rad + rng.uniform(22.0, 35.0) * _DEG,
                width_rad=t.width_rad * rng.uniform(0.5, 0.8),
                amplitude_mV=-t.amplitude_mV * rng.uniform(0.25, 0.6),
            )
        )
    elif extra < 0.33:  # notched / slurred R downstroke
        r = by_name["R"]
        waves.append(
            EcgWave(
                name="R2",
                angle_rad=rng.uniform(6.0, 10.0) * _DEG,
                width_rad=r.width_rad * rng.uniform(0.4, 0.7),
                amplitude_mV=r.amplitude_mV * rng.uniform(0.1, 0.25),
            )
        )
    return EcgSubject(
        index=index,
        seed=seed,
        waves=tuple(waves),
        hr_bpm=float(rng.uniform(55.0, 85.0)),
        lf_hz=float(rng.uniform(0.08, 0.12)),
        lf_rel=float(rng.uniform(0.01, 0.04)),
        hf_rel=float(rng.uniform(0.01, 0.04)),
        rr_noise_rel=float(rng.uniform(0.005, 0.02)),
        hr_drift_rel=float(rng.uniform(0.02, 0.05)),
        resp_hz=float(rng.uniform(0.2, 0.33)),
        resp_amp_rel=float(rng.uniform(0.02, 0.06)),
        noise_scale=_lognormal(rng, 0.5),
        powerline_hz=50.0 if rng.uniform() < 0.6 else 60.0,
    )


def subject_session(subject: EcgSubject, session: int) -> EcgSession:
    """Session ``session`` of ``subject`` (deterministic): heart rate ×e^N(0, 0.08), breathing
    rate ×e^N(0, 0.08), gain ×e^N(0, 0.15), morphology drift (angles ±1° QRS / ±2° P, T;
    widths ×e^N(0, 0.03); amplitudes ×e^N(0, 0.06)) and noise levels (the person's
    ``noise_scale`` × a per-session factor; the enrolment session 0 is recorded at rest, 0.7×).
    """
    if session < 0:
        raise ValueError(f"session must be >= 0, got {session}")
    rng = np.random.default_rng([subject.seed, subject.index, _K_SESSION, session])
    waves = tuple(
        EcgWave(
            name=w.name,
            angle_rad=w.angle_rad
            + (0.0 if w.name == "R" else (2.0 if w.rate_dependent else 1.0))
            * _DEG
            * rng.standard_normal(),
            width_rad=w.width_rad * _lognormal(rng, 0.03),
            amplitude_mV=w.amplitude_mV * _lognormal(rng, 0.06),
        )
        for w in subject.waves
    )
    noise = subject.noise_scale * _lognormal(rng, 0.4) * (0.7 if session == 0 else 1.0)
    return EcgSession(
        index=session,
        hr_bpm=float(np.clip(subject.hr_bpm * _lognormal(rng, 0.06), 40.0, 150.0)),
        resp_hz=subject.resp_hz * _lognormal(rng, 0.08),
        amplitude_scale=_lognormal(rng, 0.15),
        waves=waves,
        baseline_mV=0.08 * noise * _lognormal(rng, 0.4),
        electrode_drift_mV=0.1 * noise * _lognormal(rng, 0.4),
        emg_mV=0.01 * noise * _lognormal(rng, 0.5),
        emg_burst_gain=float(rng.uniform(0.0, 3.0)),
        powerline_mV=0.01 * _lognormal(rng, 0.7),
        powerline_hz=subject.powerline_hz,
        motion_mV=0.3 * noise * _lognormal(rng, 0.3),
        motion_rate_hz=float(rng.uniform(0.005, 0.03)),
    )
