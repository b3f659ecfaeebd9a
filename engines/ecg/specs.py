"""Frozen specs of the two ECG beat models (paper §3).

Input ``(1, 192)``: one beat, float32 mV, 256 Hz, R peak at sample 64, as produced by
:mod:`engines.ecg.frontend`. The spectrogram is computed inside the model.

- ``"cnn"`` -> ``ecg_cnn``: closed-set identification, ``(18,)`` logits over cohort subjects
  0..17 (``extra["classes"]`` maps the logit index to the subject id).
- ``"embedding"`` -> ``ecg_embedding``: ``(64,)`` L2-normalised embedding compared by cosine
  with enrolled templates; the card (``ecg_embedding.json``) holds the calibrated
  ``accept_threshold`` / ``reject_threshold``.

Weights ``engines/ecg/weights/ecg_<key>.pt`` (state_dict) with a ``.json`` training card, written by
:func:`engines.ecg.train.train_ecg` (``sigstream train ecg --model <key> --seed N``).
"""

from __future__ import annotations

from pathlib import Path

from engines.ecg.spectrogram import (
    BEAT_FS_HZ,
    BEAT_SAMPLES,
    HOP,
    MAX_FREQ_HZ,
    N_FFT,
    N_FRAMES,
    N_FREQ,
)
from engines.spec import ModelSpec, deferred_build

__all__ = ["COHORT_CLASSES", "ECG_SPECS", "EMBEDDING_DIM", "WEIGHTS_DIR"]

#: The shipped weights of this family, with their training cards.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Cohort subject id of each classifier output (logit index -> subject).
COHORT_CLASSES: tuple[int, ...] = tuple(range(18))
EMBEDDING_DIM = 64

_COMMON = {
    "beat_fs_hz": BEAT_FS_HZ,
    "r_peak_sample": 64,
    "input_units": "mV",
    "spectrogram": {
        "n_fft": N_FFT,
        "hop": HOP,
        "window": "hann (periodic)",
        "max_freq_hz": MAX_FREQ_HZ,
        "shape": [N_FREQ, N_FRAMES],
        "value": "log(power / sum(w^2) + 1e-3) of the zero-mean unit-variance beat",
    },
}

ECG_SPECS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(
        name="ecg_cnn",
        build=deferred_build("engines.ecg.cnn:EcgClassifier", n_classes=len(COHORT_CLASSES)),
        input_shape=(1, BEAT_SAMPLES),
        output_shape=(len(COHORT_CLASSES),),
        weights="ecg_cnn.pt",
        weights_dir=WEIGHTS_DIR,
        sample_rate_hz=BEAT_FS_HZ,
        description="beat spectrogram -> 3 conv-BN-ReLU, 2 max-pools -> 18-subject logits",
        extra={**_COMMON, "output": "logits", "classes": list(COHORT_CLASSES)},
    ),
    "embedding": ModelSpec(
        name="ecg_embedding",
        build=deferred_build("engines.ecg.cnn:EcgEmbedder", dim=EMBEDDING_DIM),
        input_shape=(1, BEAT_SAMPLES),
        output_shape=(EMBEDDING_DIM,),
        weights="ecg_embedding.pt",
        weights_dir=WEIGHTS_DIR,
        sample_rate_hz=BEAT_FS_HZ,
        description="beat spectrogram -> 3 conv-BN-ReLU, 2 max-pools -> 64-d unit embedding",
        extra={**_COMMON, "output": "embedding", "metric": "cosine"},
    ),
}
