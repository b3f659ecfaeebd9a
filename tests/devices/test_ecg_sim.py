"""ECG cohort simulator: determinism, streaming, true R peaks, sessions, SNR, sample rates."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from ecg_sessions import only_noise

from devices.ecg_cohort import ECGSYN_WAVES, cohort_subject, subject_session
from devices.ecg_sim import EcgSimulator, simulate_record


def _snr_db(noisy: np.ndarray, clean: np.ndarray) -> float:
    clean64 = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean64
    return 10.0 * math.log10(np.mean(clean64**2) / np.mean(noise**2))


def test_cohort_is_deterministic_and_people_differ() -> None:
    assert cohort_subject(5) == cohort_subject(5)
    assert cohort_subject(5) != cohort_subject(6)
    assert cohort_subject(5, seed=1) != cohort_subject(5)
    assert subject_session(cohort_subject(5), 2) == subject_session(cohort_subject(5), 2)
    for index in range(18):
        subject = cohort_subject(index)
        names = [w.name for w in subject.waves]
        assert names[:5] == ["P", "Q", "R", "S", "T"] and len(names) in (5, 6)
        assert set(names[5:]) <= {"T2", "R2"}
        # Around the ECGSYN defaults, never far from them.
        for wave, default in zip(subject.waves, ECGSYN_WAVES, strict=False):
            assert abs(wave.angle_rad - default.angle_rad) < math.radians(40)
            assert np.sign(wave.amplitude_mV) == np.sign(default.amplitude_mV)
    # Some people have a sixth wave.
    assert any(len(cohort_subject(i).waves) == 6 for i in range(18))


def test_record_is_deterministic_and_depends_on_its_key() -> None:
    subject = cohort_subject(3)
    a = simulate_record(subject, 1, fs_hz=250.0, duration_s=20.0)
    b = simulate_record(cohort_subject(3), 1, fs_hz=250.0, duration_s=20.0)
    assert np.array_equal(a.signal, b.signal) and np.array_equal(a.r_peaks, b.r_peaks)
    assert a.signal.dtype == np.float32 and a.signal.shape == (5000,)
    assert a.r_peaks.dtype == np.int64 and a.fs_hz == 250.0
    other_session = simulate_record(subject, 2, fs_hz=250.0, duration_s=20.0)
    other_subject = simulate_record(cohort_subject(4), 1, fs_hz=250.0, duration_s=20.0)
    assert not np.array_equal(a.signal, other_session.signal)
    assert not np.array_equal(a.signal, other_subject.signal)


@pytest.mark.parametrize("snr_db", [None, 10.0, math.inf])
def test_streaming_equals_the_record_whatever_the_read_sizes(snr_db: float | None) -> None:
    subject, fs = cohort_subject(7), 250.0
    record = simulate_record(subject, 1, fs_hz=fs, duration_s=40.0, snr_db=snr_db)
    rng = np.random.default_rng(0)
    for sizes in ([1] * 300 + [7] * 50 + [10_000], list(rng.integers(0, 3000, 20)), [10_000]):
        sim = EcgSimulator(subject, 1, fs_hz=fs, snr_db=snr_db)
        parts, total = [], 0
        for n in sizes:
            parts.append(sim.read(int(n)))
            total += int(n)
        parts.append(sim.read(max(0, len(record.signal) - total)))
        got = np.concatenate(parts)[: len(record.signal)]
        assert np.array_equal(got, record.signal)
        assert sim.position == max(total, len(record.signal))
        assert np.array_equal(sim.r_peaks(0, len(record.signal)), record.r_peaks)


def test_start_s_slices_the_same_stream() -> None:
    subject, fs = cohort_subject(2), 360.0
    whole = simulate_record(subject, 0, fs_hz=fs, duration_s=30.0, snr_db=12.0)
    part = simulate_record(subject, 0, fs_hz=fs, duration_s=10.0, snr_db=12.0, start_s=13.3)
    start = round(13.3 * fs)
    assert np.array_equal(part.signal, whole.signal[start : start + len(part.signal)])
    expected = whole.r_peaks[(whole.r_peaks >= start) & (whole.r_peaks < start + 3600)] - start
    assert np.array_equal(part.r_peaks, expected)


@pytest.mark.parametrize("fs_hz", [128.0, 250.0, 500.0, 1000.0])
def test_true_r_peaks_are_where_the_clean_signal_peaks(fs_hz: float) -> None:
    for index in (0, 1, 5, 9):
        subject = cohort_subject(index)
        record = simulate_record(subject, 1, fs_hz=fs_hz, duration_s=20.0, snr_db=math.inf)
        x, half = record.signal, round(0.1 * fs_hz)
        tolerance = max(1, round(0.005 * fs_hz))  # Q/S waves may pull the apex by a few ms
        peaks = record.r_peaks[(record.r_peaks >= half) & (record.r_peaks < len(x) - half)]
        assert len(peaks) > 10
        for p in peaks:
            assert abs(int(np.argmax(x[p - half : p + half + 1])) - half) <= tolerance
        # Beat rate matches the session's heart rate.
        hr_bpm = 60.0 * fs_hz / float(np.mean(np.diff(record.r_peaks)))
        assert hr_bpm == pytest.approx(subject_session(subject, 1).hr_bpm, rel=0.15)


def test_heart_rate_varies_like_a_real_tachogram() -> None:
    record = simulate_record(cohort_subject(11), 0, fs_hz=250.0, duration_s=300.0)
    rr = np.diff(record.r_peaks) / 250.0
    cv = float(np.std(rr) / np.mean(rr))
    assert 0.01 < cv < 0.15
    assert rr.min() > 0.33 and rr.max() < 2.0


@pytest.mark.parametrize("fs_hz", [100.0, 128.0, 333.3, 360.0, 1000.0, 2000.0])
def test_any_sample_rate_gives_the_same_beats(fs_hz: float) -> None:
    subject = cohort_subject(4)
    ref = simulate_record(subject, 2, fs_hz=500.0, duration_s=15.0)
    record = simulate_record(subject, 2, fs_hz=fs_hz, duration_s=15.0)
    assert record.signal.shape == (round(15.0 * fs_hz),)
    assert np.isfinite(record.signal).all()
    # Beats are drawn in seconds: the same R times at every rate.
    n = min(len(ref.r_peaks), len(record.r_peaks))
    assert abs(len(ref.r_peaks) - len(record.r_peaks)) <= 1
    t_ref, t = ref.r_peaks[:n] / 500.0, record.r_peaks[:n] / fs_hz
    assert np.max(np.abs(t_ref - t)) <= 0.5 / fs_hz + 0.5 / 500.0 + 1e-9


@pytest.mark.parametrize("snr_db", [0.0, 6.0, 12.0, 24.0])
def test_snr_override_hits_the_requested_snr(snr_db: float) -> None:
    for index in (0, 3, 8):
        subject = cohort_subject(index)
        clean = simulate_record(subject, 1, fs_hz=250.0, duration_s=64.0, snr_db=math.inf)
        noisy = simulate_record(subject, 1, fs_hz=250.0, duration_s=64.0, snr_db=snr_db)
        assert np.array_equal(clean.r_peaks, noisy.r_peaks)
        # Whole 8-s blocks: on target but for the 1-s gain ramps between blocks.
        assert _snr_db(noisy.signal, clean.signal) == pytest.approx(snr_db, abs=0.2)
        # Any long stretch (here starting mid-block) is on target within 0.5 dB or so; the
        # noise is not stationary (baseline drift, electrode motion), so short ones vary.
        part = slice(1000, 1000 + 48 * 250)
        assert _snr_db(noisy.signal[part], clean.signal[part]) == pytest.approx(snr_db, abs=0.6)


def test_natural_noise_and_custom_sessions() -> None:
    subject = cohort_subject(1)
    clean = simulate_record(subject, 1, fs_hz=250.0, duration_s=20.0, snr_db=math.inf)
    natural = simulate_record(subject, 1, fs_hz=250.0, duration_s=20.0)
    assert -10.0 < _snr_db(natural.signal, clean.signal) < 40.0
    quiet = only_noise(subject)
    assert not quiet.has_noise
    silent = simulate_record(subject, quiet, fs_hz=250.0, duration_s=20.0)
    assert np.array_equal(silent.signal, clean.signal)
    with pytest.raises(ValueError, match="noise"):
        simulate_record(subject, quiet, fs_hz=250.0, duration_s=1.0, snr_db=10.0)


@pytest.mark.parametrize(
    ("mains_hz", "fs_hz", "present"),
    [(50.0, 250.0, True), (60.0, 500.0, True), (50.0, 100.0, False)],
)
def test_powerline_interference(mains_hz: float, fs_hz: float, present: bool) -> None:
    subject = cohort_subject(1)
    only_mains = dataclasses.replace(
        only_noise(subject, "powerline_mV", 0.05), powerline_hz=mains_hz
    )
    clean = simulate_record(subject, 1, fs_hz=fs_hz, duration_s=10.0, snr_db=math.inf)
    noisy = simulate_record(subject, only_mains, fs_hz=fs_hz, duration_s=10.0)
    noise = noisy.signal.astype(np.float64) - clean.signal
    if not present:  # at or above 0.45 fs an ADC's anti-alias filter removes it
        assert np.max(np.abs(noise)) < 1e-6
        return
    spectrum = np.abs(np.fft.rfft(noise))
    freqs = np.fft.rfftfreq(len(noise), 1.0 / fs_hz)
    assert freqs[np.argmax(spectrum)] == pytest.approx(mains_hz, abs=0.2)


def test_sessions_differ_like_real_sessions() -> None:
    hr_spread, gain_spread, within, between = [], [], [], []
    subjects = [cohort_subject(i) for i in range(18)]
    for subject in subjects:
        sessions = [subject_session(subject, k) for k in range(3)]
        hr_spread.append(np.ptp([s.hr_bpm for s in sessions]))
        gain_spread.append(np.ptp([s.amplitude_scale for s in sessions]))
        angles = np.array([[w.angle_rad for w in s.waves[:5]] for s in sessions])
        within.append(np.abs(angles[1:] - angles[0]).mean())
        assert sessions[0].emg_mV != sessions[1].emg_mV
    for a, b in zip(subjects[:-1], subjects[1:], strict=True):
        between.append(
            np.abs(
                np.array([w.angle_rad for w in a.waves[:5]])
                - np.array([w.angle_rad for w in b.waves[:5]])
            ).mean()
        )
    assert np.median(hr_spread) > 2.0  # bpm
    assert np.median(gain_spread) > 0.1
    # Morphology drifts between sessions, much less than it differs between people.
    assert 0 < np.mean(within) < 0.4 * np.mean(between)


def test_fast_enough() -> None:
    subject = cohort_subject(0)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        simulate_record(subject, 1, fs_hz=250.0, duration_s=300.0)
        best = min(best, time.perf_counter() - start)
    assert best < 0.25  # ~0.03 s on an idle core; slack for a shared CI machine


def test_invalid_arguments() -> None:
    subject = cohort_subject(0)
    for kwargs in (
        {"fs_hz": 10.0},
        {"fs_hz": math.nan},
        {"duration_s": -1.0},
        {"start_s": -1.0},
        {"snr_db": math.nan},
    ):
        args = {"fs_hz": 250.0, "duration_s": 1.0} | kwargs
        with pytest.raises(ValueError):
            simulate_record(subject, 0, **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cohort_subject(-1)
    with pytest.raises(ValueError):
        subject_session(subject, -1)
    sim = EcgSimulator(subject, 0, fs_hz=250.0)
    with pytest.raises(ValueError):
        sim.read(-1)
    with pytest.raises(ValueError):
        sim.r_peaks(10, 5)
