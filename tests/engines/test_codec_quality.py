"""Tests of the codec quality metrics and reference codecs (engines.codec.quality, .baselines)
on real speech (ALSA's Front_Center.wav, 1.43 s at 16 kHz)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from devices.audio import CODEC_FS, read_audio
from engines.codec.baselines import (
    OpusCodec,
    g711_roundtrip,
    mulaw_decode,
    mulaw_encode,
    opus_at,
    opus_speed,
)
from engines.codec.bitstream import measured_kbps
from engines.codec.quality import (
    SNR_CAP_DB,
    align,
    log_spectral_distance_db,
    pesq_wb,
    quality_report,
    segmental_snr_db,
    snr_db,
    stoi,
)

SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")
BANDS = ("0-2kHz", "2-4kHz", "4-8kHz", "all")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not SPEECH.is_file():
        pytest.skip(f"{SPEECH} not installed (alsa-utils)")
    return read_audio(SPEECH, fs=CODEC_FS)


def _noisy(x: np.ndarray, snr: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise *= math.sqrt(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2) / 10 ** (snr / 10))
    return (x + noise).astype(np.float32)


def test_identical_signals_score_perfect(speech: np.ndarray) -> None:
    assert snr_db(speech, speech) == SNR_CAP_DB
    assert segmental_snr_db(speech, speech) == 35.0
    assert log_spectral_distance_db(speech, speech) == dict.fromkeys(BANDS, 0.0)
    assert pesq_wb(speech, speech) == pytest.approx(4.64, abs=0.01)
    assert stoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    report = quality_report(speech, speech)
    assert report["snr_db"] == SNR_CAP_DB
    assert set(report["lsd_db"]) == set(BANDS)
    json.dumps(report, allow_nan=False)


def test_undefined_figures_are_nan_or_none(speech: np.ndarray) -> None:
    silence = np.zeros(CODEC_FS, np.float32)
    assert math.isnan(snr_db(silence, silence))
    assert math.isnan(segmental_snr_db(silence, silence))
    assert all(math.isnan(v) for v in log_spectral_distance_db(silence, silence).values())
    assert pesq_wb(silence, silence) is None  # no utterance
    assert math.isnan(stoi(speech[:3000], speech[:3000]))  # < 30 STOI frames
    report = quality_report(silence, silence)
    assert report["snr_db"] is None and report["pesq_wb"] is None
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("target", [0.0, 10.0, 20.0])
def test_snr_of_white_noise_at_known_snr(speech: np.ndarray, target: float) -> None:
    deg = _noisy(speech, target)
    assert snr_db(speech, deg) == pytest.approx(target, abs=0.5)
    # Stationary noise hurts quiet frames most: the per-frame mean lies below the global
    # figure (measured 5.0 dB at 10 dB), and lower still when the pauses count too.
    seg = segmental_snr_db(speech, deg)
    assert -10.0 <= segmental_snr_db(speech, deg, active_only=False) < seg < target


def test_lsd_grows_with_noise(speech: np.ndarray) -> None:
    lsd = [log_spectral_distance_db(speech, _noisy(speech, snr))["all"] for snr in (30, 20, 10)]
    assert 0 < lsd[0] < lsd[1] < lsd[2]


def test_lowpass_loses_only_the_high_band(speech: np.ndarray) -> None:
    sos = butter(12, 4000, fs=CODEC_FS, output="sos")
    lsd = log_spectral_distance_db(speech, sosfiltfilt(sos, speech).astype(np.float32))
    assert lsd["4-8kHz"] > 15.0
    assert lsd["0-2kHz"] < 0.5
    assert lsd["0-2kHz"] < lsd["2-4kHz"] < lsd["4-8kHz"]


@pytest.mark.parametrize("delay", [0, 37, -25, 160])
def test_align_recovers_a_known_delay(speech: np.ndarray, delay: int) -> None:
    if delay >= 0:
        deg = np.concatenate([np.zeros(delay, np.float32), speech])
    else:
        deg = speech[-delay:]
    ref_a, deg_a, lag = align(speech, deg, max_lag=200)
    assert lag == delay
    assert ref_a.size == deg_a.size == speech.size - max(0, -delay)
    np.testing.assert_array_equal(ref_a, deg_a)


def test_align_respects_max_lag(speech: np.ndarray) -> None:
    deg = np.concatenate([np.zeros(300, np.float32), speech])
    assert abs(align(speech, deg, max_lag=100)[2]) <= 100


@pytest.mark.parametrize("kbps", [16, 32])
def test_opus_rate_length_and_delay(speech: np.ndarray, kbps: int) -> None:
    codec = OpusCodec(kbps * 1000)
    packets = codec.encode(speech)
    assert len({len(p) for p in packets}) == 1  # CBR, DTX off: every packet the same size
    assert measured_kbps(packets, speech.size / CODEC_FS) == pytest.approx(kbps, rel=0.10)
    decoded = codec.decode(packets, speech.size)
    assert decoded.dtype == np.float32 and decoded.shape == speech.shape
    assert abs(align(speech, decoded, max_lag=400)[2]) <= 1
    assert codec.encode(speech) == packets  # a fresh encoder per call


def test_opus_quality_rises_with_bitrate(speech: np.ndarray) -> None:
    # Measured on this file: PESQ-WB 3.62 at 16 kbps, 4.50 at 32 kbps; STOI 0.990, 0.998.
    d16, k16 = opus_at(speech, 16)
    d32, k32 = opus_at(speech, 32)
    p16, p32 = pesq_wb(speech, d16), pesq_wb(speech, d32)
    assert p16 is not None and p32 is not None
    assert p32 > p16 > 3.0
    assert stoi(speech, d32) > stoi(speech, d16) > 0.95
    assert k16 == pytest.approx(16, rel=0.10) and k32 == pytest.approx(32, rel=0.10)


def test_opus_speed_is_reported(speech: np.ndarray) -> None:
    speed = opus_speed(speech, 16, repeats=1)
    assert set(speed) == {"kbps", "audio_s", "encode_rtf", "decode_rtf", "repeats"}
    assert 0 < speed["encode_rtf"] < 1 and 0 < speed["decode_rtf"] < 1


def test_mulaw_known_codes() -> None:
    lin = np.array([0, -1, 1, 32767, -32768, 1000, -1000], np.int16)
    assert mulaw_encode(lin).tolist() == [0xFF, 0x7E, 0xFF, 0x80, 0x00, 0xCE, 0x4E]
    codes = np.array([0xFF, 0x7F, 0x80, 0x00, 0x7E], np.uint8)
    assert (mulaw_decode(codes) * 32768).astype(np.int16).tolist() == [0, 0, 32124, -32124, -8]


def test_mulaw_bit_exact_against_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    lin = np.arange(-32768, 32768, dtype=np.int16)
    ref_codes = np.frombuffer(audioop.lin2ulaw(lin.tobytes(), 2), np.uint8)
    np.testing.assert_array_equal(mulaw_encode(lin), ref_codes)
    codes = np.arange(256, dtype=np.uint8)
    ref_lin = np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), np.int16)
    np.testing.assert_array_equal((mulaw_decode(codes) * 32768).astype(np.int16), ref_lin)
    # float input is the same samples scaled by 1/32768
    np.testing.assert_array_equal(mulaw_encode(lin / 32768.0), ref_codes)


def test_g711_roundtrip(speech: np.ndarray) -> None:
    # Measured: PESQ-WB 2.17 (narrowband judged by a wideband model), STOI 0.996.
    decoded, kbps = g711_roundtrip(speech)
    assert kbps == 64.0 and decoded.shape == speech.shape and decoded.dtype == np.float32
    assert align(speech, decoded, max_lag=50)[2] == 0
    p = pesq_wb(speech, decoded)
    assert p is not None and p > 1.8
    lsd = log_spectral_distance_db(speech, decoded)
    assert lsd["4-8kHz"] > 20.0 and lsd["0-2kHz"] < 4.0


@pytest.mark.parametrize(
    ("ref", "deg", "match"),
    [
        (np.zeros(100), np.zeros(99), "differ in length"),
        (np.zeros((100, 2)), np.zeros((100, 2)), "1-D"),
        (np.zeros(100), np.full(100, np.nan), "NaN"),
        (np.zeros(0), np.zeros(0), "empty"),
    ],
)
def test_bad_input_raises(ref: np.ndarray, deg: np.ndarray, match: str) -> None:
    for metric in (snr_db, segmental_snr_db, log_spectral_distance_db, pesq_wb, stoi):
        with pytest.raises(ValueError, match=match):
            metric(ref, deg)
    with pytest.raises(ValueError, match=match):
        quality_report(ref, deg)


def test_bad_codec_input_raises() -> None:
    with pytest.raises(ValueError, match="bitrate"):
        OpusCodec(1000)
    with pytest.raises(ValueError, match="1-D"):
        OpusCodec(16000).encode(np.zeros((320, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        mulaw_encode(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="fewer than"):
        OpusCodec(16000).decode([], 320)


def test_other_sample_rates() -> None:
    if not SPEECH.is_file():
        pytest.skip(f"{SPEECH} not installed (alsa-utils)")
    x48 = read_audio(SPEECH, fs=48_000)
    assert pesq_wb(x48, x48, fs=48_000) == pytest.approx(4.64, abs=0.01)  # resampled to 16 kHz
    x8 = read_audio(SPEECH, fs=8_000)
    report = quality_report(x8, _noisy(x8, 20.0), fs=8_000)
    assert set(report["lsd_db"]) == {"0-2kHz", "2-4kHz", "all"}
    assert report["snr_db"] == pytest.approx(20.0, abs=0.5)
