"""Tests of the streaming ECG front end (engines.ecg.frontend): detection, beats, quality."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from ecg_sessions import only_noise

import engines.ecg
import engines.ecg.frontend.filters as filters_module
from devices import EcgRecord, cohort_subject, simulate_record, subject_session
from engines.ecg.frontend import (
    BEAT_FS_HZ,
    BEAT_POST_S,
    BEAT_PRE_S,
    BEAT_SAMPLES,
    QUALITY_OK,
    Beat,
    BeatFrontend,
    FrontendConfig,
    FrontendOutput,
    QualityBlock,
    detect_r_peaks,
    extract_beats,
)

R_AT = round(BEAT_PRE_S * BEAT_FS_HZ)


def _record(
    subject: int = 0,
    session: int = 1,
    *,
    fs: float = 250.0,
    duration_s: float = 30.0,
    snr_db: float | None = math.inf,
) -> EcgRecord:
    return simulate_record(
        cohort_subject(subject), session, fs_hz=fs, duration_s=duration_s, snr_db=snr_db
    )


def _run(x: np.ndarray, fs: float, chunk: int | None = None) -> FrontendOutput:
    """Stream ``x`` in chunks of ``chunk`` samples (all at once for None) and flush."""
    fe = BeatFrontend(fs)
    out = FrontendOutput()
    step = x.size if chunk is None else chunk
    for i in range(0, x.size, max(step, 1)):
        o = fe.push(x[i : i + step])
        out.beats.extend(o.beats)
        out.blocks.extend(o.blocks)
    o = fe.flush()
    out.beats.extend(o.beats)
    out.blocks.extend(o.blocks)
    assert fe.samples_seen == x.size
    return out


def _score(det: np.ndarray, truth: np.ndarray, fs: float, n: int) -> tuple[int, int, int]:
    """(true positives, false negatives, false positives) at +-50 ms, the first and last
    0.5 s left out (a beat cut by the record's edge)."""
    tol = 0.05 * fs
    lo, hi = 0.5 * fs, n - 0.5 * fs
    t_in = truth[(truth > lo) & (truth < hi)]
    d_in = det[(det > lo) & (det < hi)]
    fn = sum(1 for t in t_in if det.size == 0 or np.min(np.abs(det - t)) > tol)
    fp = sum(1 for d in d_in if truth.size == 0 or np.min(np.abs(truth - d)) > tol)
    return t_in.size - fn, fn, fp


def _beat_key(b: Beat) -> tuple[object, ...]:
    return (b.r_index, b.r_offset_s, b.end_index, b.quality, b.inverted, b.rr_s,
            b.samples.dtype, b.samples.shape, b.samples.tobytes())  # fmt: skip


# -- API ----------------------------------------------------------------------------------------


def test_public_api() -> None:
    assert set(engines.ecg.frontend.__all__) <= set(engines.ecg.__all__)
    for name in engines.ecg.frontend.__all__:
        assert getattr(engines.ecg, name) is getattr(engines.ecg.frontend, name)
    assert BEAT_SAMPLES == round(BEAT_FS_HZ * (BEAT_PRE_S + BEAT_POST_S)) == 192
    assert R_AT == 64 and QUALITY_OK == "ok"


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, engines.ecg, engines.ecg.frontend; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("fs", [0.0, 50.0, 99.0, 2049.0, 1e5, math.nan, math.inf, -250.0])
def test_sample_rate_out_of_range_raises(fs: float) -> None:
    with pytest.raises(ValueError, match="fs_hz"):
        BeatFrontend(fs)
    with pytest.raises(ValueError, match="fs_hz"):
        detect_r_peaks(np.zeros(1000), fs)


@pytest.mark.parametrize("fs", [100.0, 128.0, 1000.0, 2048.0])
def test_sample_rate_in_range_accepted(fs: float) -> None:
    assert BeatFrontend(fs).samples_seen == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"morph_band_hz": (40.0, 0.5)},
        {"qrs_band_hz": (0.0, 15.0)},
        {"mwi_s": 0.0},
        {"refractory_s": 0.4, "twave_s": 0.36},
        {"searchback_rr": 1.0},
        {"r_window_s": (0.0, 0.1)},
        {"history_s": 2.0},
    ],
)
def test_bad_config_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FrontendConfig(**kwargs)  # type: ignore[arg-type]


def test_empty_chunk_is_a_no_op() -> None:
    rec = _record(duration_s=12.0)
    fe = BeatFrontend(rec.fs_hz)
    assert fe.push(np.empty(0)) == FrontendOutput()
    assert fe.samples_seen == 0
    got = FrontendOutput()
    for i in range(0, rec.signal.size, 500):
        o = fe.push(rec.signal[i : i + 500])
        got.beats.extend(o.beats)
        got.blocks.extend(o.blocks)
        assert fe.push(np.array([], dtype=np.float32)) == FrontendOutput()
    o = fe.flush()
    got.beats.extend(o.beats)
    got.blocks.extend(o.blocks)
    ref = _run(rec.signal, rec.fs_hz)
    assert [_beat_key(b) for b in got.beats] == [_beat_key(b) for b in ref.beats]
    assert got.blocks == ref.blocks


def test_flush_ends_the_stream() -> None:
    fe = BeatFrontend(250.0)
    fe.push(_record(duration_s=5.0).signal)
    fe.flush()
    assert fe.flush() == FrontendOutput()
    with pytest.raises(RuntimeError):
        fe.push(np.zeros(10))
    assert BeatFrontend(250.0).flush() == FrontendOutput()


def test_accepts_integer_and_2d_input() -> None:
    rec = _record(duration_s=10.0)
    counts = np.round(rec.signal * 200).astype(np.int16)  # an ADC's integers (5 uV steps)
    a = _run(counts.astype(np.float64) / 200, rec.fs_hz)
    fe = BeatFrontend(rec.fs_hz)
    b = fe.push((counts / 200)[None, :]).beats + fe.flush().beats
    assert [_beat_key(x) for x in a.beats] == [_beat_key(x) for x in b]
    assert len(_run(counts, rec.fs_hz).beats) == len(a.beats)


# -- chunk invariance ---------------------------------------------------------------------------


@pytest.mark.parametrize("fs", [128.0, 250.0, 1000.0])
def test_output_does_not_depend_on_chunking(fs: float) -> None:
    rec = _record(3, fs=fs, duration_s=40.0 if fs < 1000 else 20.0, snr_db=10.0)
    x = rec.signal.copy()
    x[int(7.0 * fs) : int(7.3 * fs)] = np.nan  # the NaN path too
    ref = _run(x, fs)
    assert len(ref.beats) > 15 and len(ref.blocks) >= 10
    chunks = [1, 7, 250, 10_000] if fs < 1000 else [7, 62, 250, 10_000]
    for chunk in chunks:
        got = _run(x, fs, chunk)
        assert [_beat_key(b) for b in got.beats] == [_beat_key(b) for b in ref.beats], chunk
        assert got.blocks == ref.blocks, chunk
    # and chunks of random sizes
    rng = np.random.default_rng(0)
    fe = BeatFrontend(fs)
    got = FrontendOutput()
    i = 0
    while i < x.size:
        n = int(rng.integers(0, 400))
        o = fe.push(x[i : i + n])
        got.beats.extend(o.beats)
        got.blocks.extend(o.blocks)
        i += n
    o = fe.flush()
    got.beats.extend(o.beats)
    got.blocks.extend(o.blocks)
    assert [_beat_key(b) for b in got.beats] == [_beat_key(b) for b in ref.beats]
    assert got.blocks == ref.blocks


# -- memory and the cost of a new stream --------------------------------------------------------


def test_state_per_stream_is_bounded_in_bytes() -> None:
    """A stream's buffers hold history_s of three signals and grow only with what it sent:
    20 bytes a sample (float32 input, float64 band and integrated signal), 60 KB at 250 Hz."""
    fs = 250.0
    history = FrontendConfig().history_s
    rec = _record(duration_s=40.0)
    fe = BeatFrontend(fs)
    fe.push(rec.signal[:62])
    assert fe.state_bytes <= 8 * 1024  # one chunk: a short-lived stream costs little
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(62, rec.signal.size, 62):
            fe.push(rec.signal[i : i + 62])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert fe.state_bytes <= history * fs * 20 + 2048
    assert grown <= history * fs * 20 + 16 * 1024  # Python objects (deques of events) too
    # input float32 cannot hold exactly, and non-finite samples: 8 + 8 + 8 + 1 bytes a sample
    x = rec.signal.astype(np.float64) + 1e-9
    x[100] = np.nan
    fe = BeatFrontend(fs)
    fe.push(x)
    assert fe.state_bytes <= history * fs * 25 + 2048


def test_filters_are_designed_once_per_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new stream designs no filter: streams at one rate share one design (counted by the
    calls to scipy's filter design, not timed)."""
    calls: list[object] = []
    real = filters_module.butter

    def counting_butter(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(filters_module, "butter", counting_butter)
    filters_module.design_filters.cache_clear()
    first = BeatFrontend(250.0)
    first.push(np.zeros(62))
    per_rate = len(calls)
    assert per_rate > 0
    for _ in range(50):
        fe = BeatFrontend(250.0)
        fe.push(np.zeros(62))
        assert fe._sos_m is first._sos_m
    assert len(calls) == per_rate
    BeatFrontend(500.0)
    assert len(calls) == 2 * per_rate
    filters_module.design_filters.cache_clear()  # no design made with the counting wrapper stays


def test_extract_beats_and_detect_r_peaks_are_the_stream() -> None:
    rec = _record(2, duration_s=20.0)
    ref = _run(rec.signal, rec.fs_hz, 62)
    assert [_beat_key(b) for b in extract_beats(rec.signal, rec.fs_hz)] == [
        _beat_key(b) for b in ref.beats
    ]
    r = detect_r_peaks(rec.signal, rec.fs_hz)
    assert r.dtype == np.int64 and np.all(np.diff(r) > 0)
    assert set(b.r_index for b in ref.beats) <= set(r.tolist())


# -- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fs", [128.0, 250.0, 360.0, 500.0, 1000.0])
@pytest.mark.parametrize("snr_db", [math.inf, 20.0, 10.0])
def test_detection_sensitivity_and_ppv(fs: float, snr_db: float) -> None:
    tp = fn = fp = 0
    for subject in (0, 1, 2, 3, 4, 5):
        for session in (0, 1):
            rec = _record(subject, session, fs=fs, duration_s=40.0, snr_db=snr_db)
            det = detect_r_peaks(rec.signal, fs)
            a, b, c = _score(det, rec.r_peaks, fs, rec.signal.size)
            tp, fn, fp = tp + a, fn + b, fp + c
    assert tp > 400
    assert tp / (tp + fn) >= 0.995, (tp, fn, fp)
    assert tp / (tp + fp) >= 0.995, (tp, fn, fp)


def test_detection_with_the_sessions_own_noise() -> None:
    tp = fn = fp = 0
    for subject in range(100, 110):
        rec = _record(subject, 2, duration_s=40.0, snr_db=None)
        a, b, c = _score(detect_r_peaks(rec.signal, 250.0), rec.r_peaks, 250.0, rec.signal.size)
        tp, fn, fp = tp + a, fn + b, fp + c
    assert tp / (tp + fn) >= 0.995 and tp / (tp + fp) >= 0.995, (tp, fn, fp)


@pytest.mark.parametrize("fs", [128.0, 250.0, 1000.0])
def test_r_peak_timing(fs: float) -> None:
    errors = []
    for subject in (0, 1, 2, 3):
        rec = _record(subject, fs=fs, duration_s=30.0, snr_db=10.0)
        for b in extract_beats(rec.signal, fs):
            t = b.r_index + b.r_offset_s * fs  # R in the input's samples, sub-sample
            assert abs(b.r_offset_s) <= 0.5 / fs + 1e-12
            errors.append((t - rec.r_peaks[np.argmin(np.abs(rec.r_peaks - t))]) / fs)
    err = np.abs(np.array(errors))
    assert err.max() < 0.02  # well within +-20 ms
    assert err.mean() < 0.004


def test_tall_t_waves_are_not_beats() -> None:
    subject = cohort_subject(5)
    session = subject_session(subject, 1)
    waves = tuple(
        dataclasses.replace(w, amplitude_mV=1.2 if w.name == "T" else w.amplitude_mV)
        for w in session.waves
    )
    rec = simulate_record(
        subject, dataclasses.replace(session, waves=waves), fs_hz=250.0, duration_s=40.0
    )
    tp, fn, fp = _score(detect_r_peaks(rec.signal, 250.0), rec.r_peaks, 250.0, 10_000)
    assert fn == 0 and fp == 0


def test_search_back_finds_a_small_beat() -> None:
    rec = _record(0, duration_s=30.0)
    fs = rec.fs_hz
    x = rec.signal.astype(np.float64)
    r = int(rec.r_peaks[15])
    h = int(0.06 * fs)
    x[r - h : r + h] *= 0.4  # a QRS below THRESHOLD I, above THRESHOLD II
    det = detect_r_peaks(x, fs)
    assert np.min(np.abs(det - r)) <= 0.05 * fs
    assert _score(det, rec.r_peaks, fs, x.size)[1:] == (0, 0)
    beat = min(extract_beats(x, fs), key=lambda b: abs(b.r_index - r))
    assert abs(beat.r_index - r) <= 0.05 * fs


def test_detection_recovers_after_a_gain_drop() -> None:
    rec = _record(1, duration_s=50.0)
    fs = rec.fs_hz
    x = rec.signal.astype(np.float64)
    x[int(20 * fs) :] *= 0.1  # electrode contact worsens: a tenth of the amplitude
    det = detect_r_peaks(x, fs)
    later = rec.r_peaks[rec.r_peaks > 30 * fs]
    found = sum(1 for t in later if np.min(np.abs(det - t)) <= 0.05 * fs)
    assert found >= len(later) - 1
    assert _score(det[det > 30 * fs], later, fs, x.size)[2] == 0


def test_inverted_lead_is_flipped_back() -> None:
    rec = _record(0, duration_s=30.0, snr_db=20.0)
    upright = extract_beats(rec.signal, rec.fs_hz)
    flipped = extract_beats(-rec.signal, rec.fs_hz)
    assert not any(b.inverted for b in upright)
    assert all(b.inverted for b in flipped)
    assert [b.r_index for b in flipped] == [b.r_index for b in upright]
    for a, b in zip(upright, flipped, strict=True):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)
        assert b.samples[R_AT] > 0.5  # R points up again


# -- beats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fs", [128.0, 250.0, 500.0])
def test_beats(fs: float) -> None:
    rec = _record(1, fs=fs, duration_s=30.0)
    beats = extract_beats(rec.signal, fs)
    assert len(beats) >= rec.r_peaks.size - 2
    for prev, b in zip([None, *beats[:-1]], beats, strict=True):
        assert b.samples.dtype == np.float32 and b.samples.shape == (BEAT_SAMPLES,)
        assert b.quality == QUALITY_OK and not b.inverted
        assert abs(int(np.argmax(b.samples)) - R_AT) <= 1  # the R peak sits at sample 64
        # emitted ~BEAT_POST_S after R: the window's end plus the band-pass delay
        latency_s = (b.end_index - b.r_index) / fs
        assert BEAT_POST_S <= latency_s < BEAT_POST_S + 0.03
        if prev is None:
            assert b.rr_s is None
        else:
            assert b.rr_s == pytest.approx(
                (b.r_index - prev.r_index) / fs + b.r_offset_s - prev.r_offset_s
            )
    # the same person's beats look alike
    stack = np.stack([b.samples for b in beats])
    corr = np.corrcoef(stack)
    assert np.median(corr) > 0.95


def test_beat_is_emitted_by_the_push_that_completes_it() -> None:
    rec = _record(0, duration_s=15.0)
    fe = BeatFrontend(rec.fs_hz)
    cfg = FrontendConfig()
    # the first decisions: the learning phase and the candidates' following window are over
    ready = round(cfg.learn_s * rec.fs_hz) + round(cfg.peak_window_s * rec.fs_hz)
    emitted = 0
    for i, v in enumerate(rec.signal):
        for b in fe.push(np.array([v])).beats:
            emitted += 1
            assert b.end_index == i if b.end_index >= ready else i == ready - 1
    assert emitted >= rec.r_peaks.size - 2
    fe.flush()


# -- quality ------------------------------------------------------------------------------------


def _statuses(x: np.ndarray, fs: float) -> tuple[set[str], set[str], FrontendOutput]:
    out = _run(x, fs)
    return {b.status for b in out.blocks}, {b.quality for b in out.beats}, out


def test_quality_blocks_tile_the_stream() -> None:
    rec = _record(0, duration_s=21.3)
    out = _run(rec.signal, rec.fs_hz, 100)
    assert all(isinstance(b, QualityBlock) for b in out.blocks)
    assert out.blocks[0].start_index == 0 and out.blocks[-1].stop_index == rec.signal.size
    for a, b in zip(out.blocks, out.blocks[1:], strict=False):
        assert a.stop_index == b.start_index
    assert {b.stop_index - b.start_index for b in out.blocks[:-1]} == {500}


@pytest.mark.parametrize("fs", [128.0, 250.0, 1000.0])
def test_clean_signal_is_ok(fs: float) -> None:
    rec = _record(4, fs=fs, duration_s=30.0, snr_db=20.0)
    blocks, beats, out = _statuses(rec.signal, fs)
    assert beats == {QUALITY_OK}
    assert {b.status for b in out.blocks[:-1]} == {QUALITY_OK}  # the last is cut short


def test_flat_signal() -> None:
    rng = np.random.default_rng(1)
    x = 0.3 + 0.005 * rng.standard_normal(5000)  # a lead with 5 uV of noise and no ECG
    blocks, beats, _ = _statuses(x, 250.0)
    assert blocks == {"flat"} and beats <= {"flat"}
    rec = _record(0)  # ECG at a 50th of its size
    blocks, beats, _ = _statuses(rec.signal / 50, 250.0)
    assert "flat" in blocks and beats <= {"flat"}


def test_lead_off_constant_and_pinned() -> None:
    blocks, beats, _ = _statuses(np.full(5000, 1.25), 250.0)
    assert blocks == {"lead_off"} and beats == set()
    rec = _record(0, duration_s=20.0)
    x = rec.signal.astype(np.float64)
    x[2500:] = 5.0  # the amplifier goes to its rail when the electrode comes off
    x[3500:3510] = 0.0  # a glitch does not make it a signal
    out = _run(x, 250.0)
    late = [b.status for b in out.blocks if b.start_index >= 2600]
    assert late and set(late) == {"lead_off"}
    early = [b.status for b in out.blocks if b.stop_index <= 2500]
    assert set(early) == {QUALITY_OK}


def test_clipped_signal_is_saturated() -> None:
    rec = _record(0, duration_s=20.0)
    x = rec.signal.astype(np.float64)
    top = 0.6 * float(np.max(x))
    clipped = np.minimum(x, top)
    blocks, beats, out = _statuses(clipped, 250.0)
    assert {b.status for b in out.blocks[:-1]} == {"saturated"}
    assert beats == {"saturated"}
    assert len(out.beats) >= rec.r_peaks.size - 2  # still detected


def test_emg_noise_is_noisy() -> None:
    subject = cohort_subject(2)
    session = only_noise(subject, "emg_mV", 0.05)
    rec = simulate_record(subject, session, fs_hz=250.0, duration_s=20.0, snr_db=5.0)
    blocks, beats, out = _statuses(rec.signal, 250.0)
    assert blocks == {"noisy"} and beats == {"noisy"}
    assert "curvature" in out.blocks[0].detail
    # white noise with no ECG at all
    noise = 0.3 * np.random.default_rng(2).standard_normal(5000)
    blocks, beats, _ = _statuses(noise, 250.0)
    assert blocks == {"noisy"} and beats <= {"noisy"}


def test_motion_artefacts_are_noisy() -> None:
    rec = _record(0, duration_s=20.0)
    fs = rec.fs_hz
    x = rec.signal.astype(np.float64)
    t = np.arange(x.size) / fs
    for t0 in (4.3, 9.1, 13.7):  # baseline jumps of 4 mV with a slow recovery
        x += np.where(t >= t0, 4.0 * np.exp(-(t - t0) / 0.5), 0.0)
    out = _run(x, fs)
    hit = [b for b in out.blocks if b.start_index <= 9.1 * fs < b.stop_index]
    assert hit[0].status == "noisy" and "artefact" in hit[0].detail
    quiet = [b.status for b in out.blocks if 16 * fs <= b.start_index < 19 * fs]
    assert quiet and set(quiet) == {QUALITY_OK}


def test_nan_burst() -> None:
    rec = _record(0, duration_s=30.0)
    fs = rec.fs_hz
    x = rec.signal.astype(np.float64)
    a, b = int(10.0 * fs), int(10.4 * fs)
    x[a:b] = np.nan
    x[b + 100] = np.inf
    out = _run(x, fs)
    nan_blocks = [q for q in out.blocks if q.status == "nan"]
    assert nan_blocks and all(q.start_index <= b + 100 and q.stop_index > a for q in nan_blocks)
    assert nan_blocks[0].detail.startswith(f"{b - a + 1} ")  # the NaNs and the Inf
    for beat in out.beats:
        window = (beat.end_index + 1 - round(2.0 * fs), beat.end_index + 1)
        overlaps = window[0] <= b + 100 and window[1] > a
        assert (beat.quality == "nan") == overlaps
        assert np.all(np.isfinite(beat.samples))
    # the filters were not poisoned: detection carries on after the burst
    later = rec.r_peaks[rec.r_peaks > 12 * fs]
    det = detect_r_peaks(x, fs)
    assert all(np.min(np.abs(det - t)) <= 0.05 * fs for t in later[:-1])
    assert sum(q.status == QUALITY_OK for q in out.blocks if q.start_index >= 14 * fs) >= 6


def test_stream_starting_with_nan() -> None:
    rec = _record(0, duration_s=15.0)
    x = rec.signal.astype(np.float64)
    x[:100] = np.nan
    out = _run(x, rec.fs_hz)
    assert out.blocks[0].status == "nan"
    assert any(b.quality == QUALITY_OK for b in out.beats)


def test_stream_starting_with_the_lead_off() -> None:
    rec = _record(2, duration_s=40.0, snr_db=20.0)
    fs = rec.fs_hz
    x = rec.signal.astype(np.float64)
    start = int(6.3 * fs)
    x[:start] = 0.005 * np.random.default_rng(3).standard_normal(start)  # 5 uV, no ECG
    det = detect_r_peaks(x, fs)
    truth = rec.r_peaks[rec.r_peaks > start + 0.3 * fs]
    tp, fn, fp = _score(det[det > start], truth, fs, x.size)
    assert fn == 0 and fp <= 1  # at most the step where the ECG comes in
    out = _run(x, fs)
    assert {b.status for b in out.blocks if b.stop_index <= start} == {"flat"}
