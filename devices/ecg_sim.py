"""Simulated ECG — an ECGSYN-style generator (McSharry et al. 2003).

:func:`simulate_record` and :class:`EcgSimulator` turn a person of the simulated cohort
(:func:`~devices.ecg_cohort.cohort_subject`) in one of their recording sessions
(:func:`~devices.ecg_cohort.subject_session`) into samples (mV).

Beat morphology (ECGSYN). A beat is a sum of Gaussian waves P, Q, R, S, T (and for some
people a sixth one: ``"T2"``, the second lobe of a biphasic T, or ``"R2"``, a notch/slur on the
R downstroke). ECGSYN places wave ``i`` at phase angle ``θ_i`` with width ``b_i`` (radians of
one cycle) on a limit cycle; at 60 bpm one cycle is 1 s, so here a wave is centred
``θ_i / 2π`` seconds from its R peak with standard deviation ``b_i / 2π`` seconds, and the
signal is synthesised directly in the time domain, beat by beat. Like ECGSYN's heart-rate
correction, the QRS (Q, R, S, R2) keeps its duration at every heart rate while the P and T
waves (P, T, T2) move and widen with ``sqrt(RR)`` (Bazett-like QT adaptation; RR of the
interval that ends at the beat, seconds). Defaults (ECGSYN): θ = −70°, −15°, 0°, 15°, 100°;
b = 0.25, 0.1, 0.1, 0.1, 0.4 rad. Amplitudes are given directly in mV (ECGSYN's are
derivative gains rescaled afterwards). How people and sessions
differ around these defaults: :mod:`devices.ecg_cohort`.

Heart-rate variability. The RR tachogram is
``RR_k = RR_0 (1 + a_LF sin(2π f_LF t) + a_HF sin(2π f_resp t) + e_k)``: a Mayer-wave LF
component (≈0.1 Hz), respiratory sinus arrhythmia at the breathing rate (≈0.2–0.33 Hz, RR
shortest at peak inspiration), an AR(1) random part ``e_k`` and a slow random drift of the
mean (value noise, knots every 30 s, a few %; left out of the formula above). Breathing also
modulates each beat's amplitude by a few % and the baseline.

Noise (all added to the clean ECG; its "power" is the mean square about 0 mV):

- baseline wander: a sinusoid at the breathing rate (``baseline_mV`` amplitude);
- electrode drift: a slow random drift (``electrode_drift_mV``), smooth value noise with knots
  every 4 s and 1 s (Catmull-Rom interpolated), i.e. below ≈0.5 Hz;
- muscle (EMG): white noise band-passed to 20–150 Hz (FIR, unit variance; ``emg_mV`` standard
  deviation) with bursts where a slow random envelope exceeds a threshold (``emg_burst_gain``);
- powerline: ``powerline_hz`` (50 or 60 Hz) with a 3rd harmonic at a quarter of the amplitude,
  each left out when above 0.45 fs (an ADC's anti-alias filter would remove it), amplitude
  slowly modulated ±20 %;
- electrode motion: rare baseline jumps with a 30 ms rise and an exponential recovery
  (0.3–1.5 s), ``motion_rate_hz`` events per second, ``motion_mV`` standard deviation.

``snr_db`` (optional) rescales the whole noise mix, keeping its proportions, so that
``10 log10(P_clean / P_noise) = snr_db`` in every internal block (8 s); the gain ramps
linearly from one block's value to the next over 1 s around each boundary, so it never steps.
Measured over whole blocks the SNR is on target to ≈0.1 dB; over an arbitrary stretch of
tens of seconds to ≈0.5 dB (the noise is not stationary: drift, EMG bursts, motion events).
``snr_db=math.inf`` gives the clean ECG exactly.

Determinism and streaming. Everything random is drawn from generators keyed by
``(subject.seed, subject.index, session, stream, block)``: beats in blocks of 64 beats (a
sequential R-time sequence, extended as needed), slow noise in blocks of knots (in seconds,
so it does not depend on fs), EMG white noise in blocks of samples. The signal is made in
fixed 8-s blocks of samples; :func:`simulate_record` and :class:`EcgSimulator` slice the same
blocks, so the samples are bitwise identical whatever the read sizes or ``start_s``.
Determined by (seed, subject index, session, fs). Vectorised numpy (no per-sample Python
loop); 300 s at 250 Hz take a few ms.

Pure numpy/scipy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy.signal import convolve, firwin

from devices.ecg_cohort import EcgSession, EcgSubject, subject_session

__all__ = [
    "EcgRecord",
    "EcgSimulator",
    "simulate_record",
]

_BLOCK_S = 8.0  # signal block (seconds): the unit of generation, SNR gain and caching
_SNR_RAMP_S = 1.0  # the SNR gain moves from one block's value to the next over this time
_BEAT_BLOCK = 64  # beats drawn per random generator
_KNOT_BLOCK = 64  # value-noise knots drawn per random generator
_MOTION_WINDOW_S = 16.0  # electrode-motion events are drawn per window of this length
_MOTION_TAU_S = (0.3, 1.5)  # recovery time constant range of a motion event
_MOTION_RISE_S = 0.03
_MOTION_SPAN_TAUS = 8.0  # an event is cut 8 time constants after it starts (e^-8 = 3e-4)
_RR_RANGE_S = (0.33, 2.0)  # RR clipped here (180..30 bpm) so beat windows stay bounded
_WAVE_SPAN_SIGMAS = 6.0  # a wave is computed ±6 sigma around its centre (e^-18 of its height)
_FS_RANGE_HZ = (50.0, 10_000.0)

# Keys of the independent random streams (the last-but-one element of every generator key;
# 1 and 2 are the cohort's, devices.ecg_cohort).
_K_PHASES, _K_BEATS = 3, 4
_K_DRIFT_SLOW, _K_DRIFT_FAST, _K_EMG_ENV, _K_EMG, _K_MAINS, _K_MOTION = 5, 6, 7, 8, 9, 10
_K_HR_DRIFT = 11
_HR_DRIFT_KNOT_S = 30.0  # the heart rate wanders on a time scale of half a minute

_F = TypeVar("_F", float, np.ndarray)


@dataclass(frozen=True, kw_only=True)
class EcgRecord:
    """A stretch of ECG. ``signal``: float32 (n,) in mV. ``fs_hz``: samples per second.
    ``r_peaks``: int64 sample indices (into ``signal``) of the true R peaks, sorted; empty
    for recordings read from files (unknown)."""

    signal: np.ndarray
    fs_hz: float
    r_peaks: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs_hz


def _catmull_rom(p0: _F, p1: _F, p2: _F, p3: _F, u: _F) -> _F:
    """Catmull-Rom spline between knots ``p1`` and ``p2`` at fraction ``u`` in [0, 1)."""
    return 0.5 * (
        2.0 * p1
        + (p2 - p0) * u
        + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u * u
        + (3.0 * (p1 - p2) + p3 - p0) * u * u * u
    )


class _Generator:
    """The signal of one (subject, session, fs), made in fixed blocks of ``block_len`` samples.

    Holds the R-time sequence drawn so far and a few recent blocks; single-threaded.
    """

    def __init__(
        self,
        subject: EcgSubject,
        session: int | EcgSession,
        *,
        fs_hz: float,
        snr_db: float | None,
    ) -> None:
        fs_hz = float(fs_hz)
        if not (math.isfinite(fs_hz) and _FS_RANGE_HZ[0] <= fs_hz <= _FS_RANGE_HZ[1]):
            raise ValueError(f"fs_hz must be in {_FS_RANGE_HZ[0]:g}..{_FS_RANGE_HZ[1]:g}")
        if snr_db is not None and (math.isnan(snr_db) or snr_db == -math.inf):
            raise ValueError(f"snr_db must be a number or +inf, got {snr_db}")
        self.subject = subject
        self.session = subject_session(subject, session) if isinstance(session, int) else session
        if snr_db is not None and math.isfinite(snr_db) and not self.session.has_noise:
            raise ValueError("snr_db needs noise to scale, and this session has none")
        self.fs_hz = fs_hz
        self.snr_db = snr_db
        self.block_len = round(_BLOCK_S * fs_hz)
        self._ramp = max(1, round(_SNR_RAMP_S * fs_hz))
        self._key = (subject.seed, subject.index)
        sess = self.session
        phases = np.random.default_rng([*self._key, _K_PHASES, sess.index]).uniform(
            0.0, 2.0 * np.pi, 4
        )
        self._resp_phase, self._lf_phase, self._baseline_phase, self._mains_phase = phases

        # Wave table, (n_waves,) each: centre and sd in seconds at 60 bpm, amplitude.
        waves = sess.waves
        self._wave_c = np.array([w.angle_rad for w in waves]) / (2.0 * np.pi)
        self._wave_s = np.array([w.width_rad for w in waves]) / (2.0 * np.pi)
        self._wave_a = np.array([w.amplitude_mV for w in waves])
        self._wave_rate = np.array([w.rate_dependent for w in waves])
        # Beat window: covers every wave ±6 sd at any RR in range (sqrt(RR) <= sqrt(2) for P/T).
        k = np.where(self._wave_rate, math.sqrt(_RR_RANGE_S[1]), 1.0)
        pre_s = max(0.0, float(np.max(-self._wave_c * k + _WAVE_SPAN_SIGMAS * self._wave_s * k)))
        post_s = max(0.0, float(np.max(self._wave_c * k + _WAVE_SPAN_SIGMAS * self._wave_s * k)))
        self._pre = math.ceil(pre_s * fs_hz)
        self._post = math.ceil(post_s * fs_hz)

        # Beats: R times (s), RR ending at each beat (s), per-beat gain, per-wave jitter.
        self._t_r = np.empty(0)
        self._m_r = np.empty(0, np.int64)
        self._rr = np.empty(0)
        self._gain = np.empty(0)
        self._jitter = np.empty((0, len(waves)))
        self._beat_blocks = 0
        self._t_last = 0.0
        self._e_last = 0.0

        # EMG: FIR band-pass 20..150 Hz (or 0.45 fs), unit noise gain.
        hi = min(150.0, 0.45 * fs_hz)
        taps = 2 * round(0.04 * fs_hz) + 1
        h = firwin(taps, [20.0, hi], pass_zero=False, fs=fs_hz)
        self._emg_fir = h / math.sqrt(float(np.sum(h * h)))

        self._drawn: dict[tuple[int, ...], np.ndarray] = {}  # see _draw
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # clean, noise
        self._powers: dict[int, tuple[float, float]] = {}
        self._final: dict[int, np.ndarray] = {}

    # -- beats ------------------------------------------------------------------------------
    def _extend_beats(self, until_s: float) -> None:
        """Draw beat blocks until the last R time is past ``until_s`` seconds."""
        subj, sess = self.subject, self.session
        rr0 = 60.0 / sess.hr_bpm
        rho = 0.8  # beat-to-beat correlation of the random RR part
        w_lf, w_hf = 2.0 * math.pi * subj.lf_hz, 2.0 * math.pi * sess.resp_hz
        # RSA: RR is shortest at peak inspiration (phase pi/2 of the breathing sinusoid).
        while self._t_last <= until_s:
            b = self._beat_blocks
            rng = np.random.default_rng([*self._key, _K_BEATS, sess.index, b])
            w = rng.standard_normal(_BEAT_BLOCK) * (subj.rr_noise_rel * math.sqrt(1 - rho**2))
            beat_jit = rng.standard_normal(_BEAT_BLOCK) * 0.01
            wave_jit = 1.0 + 0.02 * rng.standard_normal((_BEAT_BLOCK, len(sess.waves)))
            t_r, rr = np.empty(_BEAT_BLOCK), np.empty(_BEAT_BLOCK)
            t, e = self._t_last, self._e_last
            if b == 0:
                e = float(w[0]) / math.sqrt(1 - rho**2)  # stationary start
                t = float(rng.uniform(0.1, 0.1 + rr0)) - rr0  # the first beat lands here + RR
            # Knots of the slow heart-rate drift that this block's beats can reach.
            k0 = math.floor(max(t, 0.0) / _HR_DRIFT_KNOT_S) - 1
            k1 = math.floor((max(t, 0.0) + _BEAT_BLOCK * _RR_RANGE_S[1]) / _HR_DRIFT_KNOT_S) + 2
            knots = self._knots(_K_HR_DRIFT, k0, k1)
            for j in range(_BEAT_BLOCK):  # per beat (≈1/s), not per sample
                e = rho * e + float(w[j])
                x = max(t, 0.0) / _HR_DRIFT_KNOT_S
                i = math.floor(x)
                p0, p1, p2, p3 = knots[i - k0 - 1 : i - k0 + 3]
                drift = _catmull_rom(p0, p1, p2, p3, x - i)
                r = rr0 * (
                    1.0
                    + subj.hr_drift_rel * drift
                    + subj.lf_rel * math.sin(w_lf * t + self._lf_phase)
                    - subj.hf_rel * math.sin(w_hf * t + self._resp_phase)
                    + e
                )
                r = min(max(r, _RR_RANGE_S[0]), _RR_RANGE_S[1])
                t += r
                t_r[j], rr[j] = t, r
            self._t_last, self._e_last = t, e
            gain = (
                sess.amplitude_scale
                * (1.0 + subj.resp_amp_rel * np.sin(w_hf * t_r + self._resp_phase))
                * (1.0 + beat_jit)
            )
            self._t_r = np.concatenate([self._t_r, t_r])
            self._m_r = np.concatenate([self._m_r, np.rint(t_r * self.fs_hz).astype(np.int64)])
            self._rr = np.concatenate([self._rr, rr])
            self._gain = np.concatenate([self._gain, gain])
            self._jitter = np.concatenate([self._jitter, wave_jit])
            self._beat_blocks += 1

    def r_peaks(self, start: int, stop: int) -> np.ndarray:
        """True R-peak sample indices in ``[start, stop)``, int64, sorted."""
        self._extend_beats((stop + 1) / self.fs_hz)
        lo, hi = np.searchsorted(self._m_r, [start, stop], side="left")
        return self._m_r[lo:hi].copy()

    def _clean(self, n0: int, n1: int) -> np.ndarray:
        fs = self.fs_hz
        self._extend_beats((n1 + self._pre + 1) / fs)
        lo = int(np.searchsorted(self._m_r, n0 - self._post, side="left"))
        hi = int(np.searchsorted(self._m_r, n1 + self._pre, side="right"))
        out = np.zeros(n1 - n0)
        if hi <= lo:
            return out
        t_r, m_r, rr = self._t_r[lo:hi], self._m_r[lo:hi], self._rr[lo:hi]
        idx = m_r[:, None] + np.arange(-self._pre, self._post + 1)  # (beats, window)
        dt = idx / fs - t_r[:, None]
        k = np.where(self._wave_rate[None, :], np.sqrt(rr)[:, None], 1.0)  # (beats, waves)
        centre, sd = self._wave_c * k, self._wave_s * k
        amp = self._wave_a * self._jitter[lo:hi] * self._gain[lo:hi, None]
        beats = np.zeros(idx.shape)
        for i in range(len(self._wave_a)):
            z = (dt - centre[:, i : i + 1]) / sd[:, i : i + 1]
            beats += amp[:, i : i + 1] * np.exp(-0.5 * z * z)
        inside = (idx >= n0) & (idx < n1)
        # bincount adds the beats in order, so a sample's value does not depend on the block.
        out += np.bincount(idx[inside] - n0, weights=beats[inside], minlength=n1 - n0)
        return out

    # -- noise ------------------------------------------------------------------------------
    def _knots(self, stream: int, first: int, last: int) -> np.ndarray:
        """Standard normal knot values ``first..last`` (>= -1) of one value-noise stream."""
        shift = 1  # knot -1 is needed before t = 0
        b0, b1 = (first + shift) // _KNOT_BLOCK, (last + shift) // _KNOT_BLOCK
        values = np.concatenate(
            [
                self._draw((stream, b), lambda rng: rng.standard_normal(_KNOT_BLOCK))
                for b in range(b0, b1 + 1)
            ]
        )
        start = first + shift - b0 * _KNOT_BLOCK
        return values[start : start + last - first + 1]

    def _value_noise(self, stream: int, spacing_s: float, t: np.ndarray) -> np.ndarray:
        """Smooth random function of time: Catmull-Rom spline through N(0, 1) knots."""
        x = t / spacing_s
        i = np.floor(x).astype(np.int64)
        first = int(i[0]) - 1
        knots = self._knots(stream, first, int(i[-1]) + 2)
        j = i - first
        return _catmull_rom(knots[j - 1], knots[j], knots[j + 1], knots[j + 2], x - i)

    def _draw(
        self, key: tuple[int, ...], make: Callable[[np.random.Generator], np.ndarray]
    ) -> np.ndarray:
        """``make(rng)`` for the generator of ``(seed, subject, key[0], session, *key[1:])``,
        remembered for a while: neighbouring blocks draw the same knots and events."""
        values = self._drawn.get(key)
        if values is None:
            stream, *rest = key
            rng = np.random.default_rng([*self._key, stream, self.session.index, *rest])
            values = make(rng)
            if len(self._drawn) >= 64:
                self._drawn.pop(next(iter(self._drawn)))  # the oldest
            self._drawn[key] = values
        return values

    def _emg_white(self, b: int) -> np.ndarray:
        return self._draw(
            (_K_EMG, round(self.fs_hz * 1000), b + 1),
            lambda rng: rng.standard_normal(self.block_len),
        )

    @staticmethod
    def _motion_events(rng: np.random.Generator, rate_hz: float) -> np.ndarray:
        """(3, count): start offset in the window (fraction), amplitude (sd units), tau (s)."""
        count = int(rng.poisson(rate_hz * _MOTION_WINDOW_S))
        return np.stack(
            [
                rng.uniform(size=count),
                rng.standard_normal(count),
                rng.uniform(*_MOTION_TAU_S, size=count),
            ]
        )

    def _motion(self, t: np.ndarray) -> np.ndarray:
        sess = self.session
        out = np.zeros_like(t)
        if sess.motion_mV <= 0 or sess.motion_rate_hz <= 0:
            return out
        span_s = _MOTION_SPAN_TAUS * _MOTION_TAU_S[1]
        w0 = max(0, math.floor((t[0] - span_s) / _MOTION_WINDOW_S))
        w1 = math.floor(t[-1] / _MOTION_WINDOW_S)
        rate = sess.motion_rate_hz
        for w in range(w0, w1 + 1):
            frac, amps, taus = self._draw((_K_MOTION, w), lambda r: self._motion_events(r, rate))
            starts = (w + frac) * _MOTION_WINDOW_S
            for t0, a, tau in zip(starts, sess.motion_mV * amps, taus, strict=True):
                lo, hi = np.searchsorted(t, [t0, t0 + _MOTION_SPAN_TAUS * tau])
                if hi > lo:
                    d = t[lo:hi] - t0
                    out[lo:hi] += a * (1.0 - np.exp(-d / _MOTION_RISE_S)) * np.exp(-d / tau)
        return out

    def _noise(self, b: int, t: np.ndarray) -> np.ndarray:
        sess, fs = self.session, self.fs_hz
        noise = sess.baseline_mV * np.sin(
            2.0 * np.pi * sess.resp_hz * t + self._resp_phase + self._baseline_phase
        )
        if sess.electrode_drift_mV > 0:
            noise += sess.electrode_drift_mV * (
                self._value_noise(_K_DRIFT_SLOW, 4.0, t)
                + 0.5 * self._value_noise(_K_DRIFT_FAST, 1.0, t)
            )
        if sess.emg_mV > 0:
            taps = len(self._emg_fir)
            white = np.concatenate([self._emg_white(b - 1)[-(taps - 1) :], self._emg_white(b)])
            emg = convolve(white, self._emg_fir, mode="valid")
            envelope = 1.0 + sess.emg_burst_gain * np.maximum(
                self._value_noise(_K_EMG_ENV, 0.5, t) - 1.0, 0.0
            )
            noise += sess.emg_mV * envelope * emg
        if sess.powerline_mV > 0:
            f = sess.powerline_hz
            mains = np.zeros_like(t)
            for harmonic, rel in ((1, 1.0), (3, 0.25)):
                if harmonic * f < 0.45 * fs:
                    mains += rel * np.sin(2.0 * np.pi * harmonic * f * t + self._mains_phase)
            am = 1.0 + 0.2 * np.tanh(self._value_noise(_K_MAINS, 2.0, t))
            noise += sess.powerline_mV * am * mains
        noise += self._motion(t)
        return noise

    # -- blocks -----------------------------------------------------------------------------
    def _parts(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Clean ECG and natural-level noise of block ``b`` (float64, (block_len,))."""
        parts = self._blocks.get(b)
        if parts is None:
            n0 = b * self.block_len
            t = np.arange(n0, n0 + self.block_len) / self.fs_hz
            parts = (self._clean(n0, n0 + self.block_len), self._noise(b, t))
            if len(self._blocks) >= 4:
                self._blocks.pop(min(self._blocks))
            self._blocks[b] = parts
        return parts

    def _snr_gain(self, b: int) -> float:
        """Noise gain that puts block ``b`` at ``snr_db``."""
        if b not in self._powers:
            clean, noise = self._parts(b)
            if len(self._powers) >= 8:
                self._powers.pop(min(self._powers))
            self._powers[b] = (float(np.mean(clean * clean)), float(np.mean(noise * noise)))
        p_clean, p_noise = self._powers[b]
        assert self.snr_db is not None
        if p_noise <= 0.0:
            return 0.0
        return math.sqrt(p_clean / (p_noise * 10.0 ** (self.snr_db / 10.0)))

    def block(self, b: int) -> np.ndarray:
        """Final signal of block ``b``, float64 (block_len,) mV."""
        final = self._final.get(b)
        if final is not None:
            return final
        if self.snr_db is not None and self.snr_db == math.inf:
            final = self._parts(b)[0].copy()
        elif self.snr_db is None:
            clean, noise = self._parts(b)
            final = clean + noise
        else:
            g_prev = self._snr_gain(max(b - 1, 0))
            g_here = self._snr_gain(b)
            g_next = self._snr_gain(b + 1)
            clean, noise = self._parts(b)
            # The block's own gain, ramped linearly to its neighbours' over _SNR_RAMP_S centred
            # on each boundary (both sides meet half-way), so the noise level never steps.
            ramp = self._ramp
            pos = np.arange(self.block_len) + 0.5  # sample centre relative to the block start
            gain = np.full(self.block_len, g_here)
            head, tail = pos < ramp / 2, pos > self.block_len - ramp / 2
            gain[head] = g_prev + (g_here - g_prev) * (pos[head] + ramp / 2) / ramp
            gain[tail] = g_here + (g_next - g_here) * (pos[tail] - self.block_len + ramp / 2) / ramp
            final = clean + gain * noise
        if len(self._final) >= 2:
            self._final.pop(min(self._final))
        self._final[b] = final
        return final

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the stream, float32 mV."""
        out = np.empty(stop - start, np.float32)
        pos = start
        while pos < stop:
            b = pos // self.block_len
            n0 = b * self.block_len
            take = min(stop, n0 + self.block_len) - pos
            out[pos - start : pos - start + take] = self.block(b)[pos - n0 : pos - n0 + take]
            pos += take
        return out


def simulate_record(
    subject: EcgSubject,
    session: int | EcgSession,
    *,
    fs_hz: float,
    duration_s: float,
    snr_db: float | None = None,
    start_s: float = 0.0,
) -> EcgRecord:
    """``duration_s`` seconds of ``subject``'s ECG in ``session`` (an index, or an
    :class:`EcgSession` of one's own), sampled at ``fs_hz`` (50..10000 Hz), starting
    ``start_s`` seconds into the session.

    Samples ``round(start_s * fs_hz)`` to that plus ``round(duration_s * fs_hz)`` of the
    session's stream: exactly those :class:`EcgSimulator` returns there. ``snr_db``: rescale the
    noise mix to this SNR (``None``: the session's own noise levels; ``math.inf``: clean).
    ``r_peaks`` are relative to the start of the record.
    """
    if not (duration_s >= 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if not (start_s >= 0 and math.isfinite(start_s)):
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    gen = _Generator(subject, session, fs_hz=fs_hz, snr_db=snr_db)
    start = round(start_s * gen.fs_hz)
    stop = start + round(duration_s * gen.fs_hz)
    return EcgRecord(
        signal=gen.samples(start, stop),
        fs_hz=gen.fs_hz,
        r_peaks=gen.r_peaks(start, stop) - start,
    )


class EcgSimulator:
    """A session's ECG as an endless stream: :meth:`read` gives the next samples.

    The samples do not depend on the read sizes: they equal :func:`simulate_record`'s. One
    thread reads it. :attr:`position` is the number of samples read so far.
    """

    def __init__(
        self,
        subject: EcgSubject,
        session: int | EcgSession,
        *,
        fs_hz: float,
        snr_db: float | None = None,
    ) -> None:
        self._gen = _Generator(subject, session, fs_hz=fs_hz, snr_db=snr_db)
        self.subject = subject
        self.session = self._gen.session
        self.fs_hz = self._gen.fs_hz
        self.snr_db = snr_db
        self.position = 0

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples, float32 (n,) mV."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = self._gen.samples(self.position, self.position + n)
        self.position += n
        return out

    def r_peaks(self, start: int, stop: int) -> np.ndarray:
        """True R-peak indices (samples since the stream start) in ``[start, stop)``, int64."""
        if start < 0 or stop < start:
            raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
        return self._gen.r_peaks(start, stop)
