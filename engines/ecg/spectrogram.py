"""Single-beat STFT spectrogram (paper §3): the image the ECG CNN looks at.

A beat is ``BEAT_SAMPLES`` = 192 float32 samples at ``BEAT_FS_HZ`` = 256 Hz in mV (R peak at
sample 64, from :mod:`engines.ecg.frontend`). The spectrogram is computed in four steps:

1. per-beat normalisation: ``(x - mean) / sqrt(var + NORM_EPS)`` — removes the electrode gain
   and offset, which change between sessions and say nothing about the person;
2. zero padding of ``N_FFT // 2`` samples on both sides ("center" framing, so frame ``t`` is
   centred on sample ``t * HOP``);
3. a periodic-Hann windowed DFT of ``N_FFT`` = 64 samples (4 Hz bins, 0.25 s window) every
   ``HOP`` = 4 samples (15.6 ms), keeping bins 0..``N_FREQ - 1`` = 0..48 Hz — the band where a
   (band-passed) ECG beat has its energy;
4. ``log(power / sum(w**2) + LOG_EPS)``: power normalised so unit-variance white noise has mean
   power 1 per bin; the epsilon sets a floor 30 dB below that.

Output ``(N_FREQ, N_FRAMES)`` = (13, 49) float32 per beat.

:class:`engines.ecg.cnn.BeatSpectrogram` does this in torch with a fixed-weight ``conv1d``
(:func:`dft_kernels`: cos and sin kernels times the window), so the whole model is plain conv /
mul / add / log ops that export to ONNX and compile with TensorRT (no complex numbers, no
``torch.stft``). :func:`beat_spectrogram` is the numpy reference (``numpy.fft.rfft`` on explicit
frames, float64 inside). This module is numpy only: the beat contract is read without torch.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BEAT_FS_HZ",
    "BEAT_SAMPLES",
    "HOP",
    "LOG_EPS",
    "MAX_FREQ_HZ",
    "NORM_EPS",
    "N_FFT",
    "N_FRAMES",
    "N_FREQ",
    "beat_spectrogram",
    "dft_kernels",
    "frame_times_s",
    "frequencies_hz",
    "hann_window",
]

# The beat contract of engines.ecg.frontend, repeated here (not imported) so the model modules
# do not depend on the DSP module; tests pin that both agree.
BEAT_FS_HZ = 256.0
BEAT_SAMPLES = 192
N_FFT = 64
HOP = 4
MAX_FREQ_HZ = 50.0
#: Bins 0..12 (0..48 Hz); bin 13 (52 Hz) would exceed MAX_FREQ_HZ.
N_FREQ = int(math.floor(MAX_FREQ_HZ * N_FFT / BEAT_FS_HZ)) + 1
N_FRAMES = BEAT_SAMPLES // HOP + 1
NORM_EPS = 1e-6  # in normalised units: a flat beat maps to zeros, never to NaN
LOG_EPS = 1e-3  # -30 dB floor under the white-noise level


def hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (scipy ``get_window("hann", n)``, ``torch.hann_window(n)``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def frequencies_hz() -> np.ndarray:
    """Centre frequency of each spectrogram row, float64 ``(N_FREQ,)``."""
    return np.arange(N_FREQ) * BEAT_FS_HZ / N_FFT


def frame_times_s() -> np.ndarray:
    """Centre time of each spectrogram column from the beat's first sample, ``(N_FRAMES,)``."""
    return np.arange(N_FRAMES) * HOP / BEAT_FS_HZ


_POWER_SCALE = 1.0 / float(np.sum(hann_window() ** 2))


def dft_kernels() -> np.ndarray:
    """``(2 * N_FREQ, 1, N_FFT)`` float64: windowed cos kernels then windowed -sin kernels, scaled
    so that their squared outputs are the normalised power of step 4."""
    n = np.arange(N_FFT)
    k = np.arange(N_FREQ)[:, None]
    w = hann_window()
    phase = 2.0 * np.pi * k * n / N_FFT
    kernels = np.concatenate([w * np.cos(phase), -w * np.sin(phase)])[:, None, :]
    return kernels * math.sqrt(_POWER_SCALE)


def beat_spectrogram(beat: np.ndarray) -> np.ndarray:
    """Numpy reference of :class:`engines.ecg.cnn.BeatSpectrogram`.

    ``beat``: ``(..., BEAT_SAMPLES)`` float beat(s) in mV. Returns float32
    ``(..., N_FREQ, N_FRAMES)`` log power (natural log, see the module docstring).
    """
    x = np.asarray(beat, dtype=np.float64)
    if x.shape[-1:] != (BEAT_SAMPLES,):
        raise ValueError(f"a beat has {BEAT_SAMPLES} samples, got shape {x.shape}")
    x = x - x.mean(axis=-1, keepdims=True)
    x = x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + NORM_EPS)
    pad = [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
    xp = np.pad(x, pad)
    starts = np.arange(N_FRAMES) * HOP
    frames = xp[..., starts[:, None] + np.arange(N_FFT)]  # (..., T, N_FFT)
    spectrum = np.fft.rfft(frames * hann_window(), axis=-1)[..., :N_FREQ]  # (..., T, F)
    power = spectrum.real**2 + spectrum.imag**2
    logp = np.log(power * _POWER_SCALE + LOG_EPS)
    return np.swapaxes(logp, -1, -2).astype(np.float32)
