"""Speech material, offline: a text-to-speech training corpus and the real speech held out.

Training speech is synthesised by the TTS engines Debian ships (``flite``, ``espeak-ng``,
``festival``) in many voices, from the English prose of ``/usr/share/common-licenses`` (split
into sentences, each voice reading different ones). Every clip is resampled to 16 kHz and
stored under ``.data/speech/tts/<voice>.wav``; :func:`build_corpus` skips voices already there,
so the corpus is made once per machine (about a minute on one core).

The held-out evaluation speech is real: the voice clips of ``alsa-utils``
(``/usr/share/sounds/alsa/*.wav``, 48 kHz, one speaker) — never used in training.

``flite``'s voice ``kal16`` and ``festival``'s ``kal_diphone`` are the same speaker (kal); the
validation voice used during training (:data:`VALIDATION_VOICES`) is left out of the training
list entirely.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.audio import CODEC_FS, read_audio, write_audio

__all__ = [
    "REAL_SPEECH_DIR",
    "TTS_VOICES",
    "VALIDATION_VOICES",
    "Voice",
    "build_corpus",
    "load_corpus",
    "real_speech",
]

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".data/speech")
REAL_SPEECH_DIR = Path("/usr/share/sounds/alsa")
_TEXT_DIR = Path("/usr/share/common-licenses")
_TEXTS = ("GPL-3", "Apache-2.0", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0")


@dataclass(frozen=True)
class Voice:
    """One TTS voice: ``engine`` (flite, espeak-ng, festival), the engine's voice id, and the
    seconds of speech to make with it."""

    name: str
    engine: str
    voice: str
    seconds: float = 75.0


TTS_VOICES: tuple[Voice, ...] = (
    Voice("flite-slt", "flite", "slt"),
    Voice("flite-rms", "flite", "rms"),
    Voice("flite-awb", "flite", "awb"),
    Voice("espeak-us-f2", "espeak-ng", "en-us+f2"),
    Voice("espeak-us-m3", "espeak-ng", "en-us+m3"),
    Voice("espeak-gb-f4", "espeak-ng", "en-gb+f4"),
    Voice("espeak-gb-m1", "espeak-ng", "en-gb+m1"),
    Voice("espeak-rp-f1", "espeak-ng", "en-gb-x-rp+f1"),
    Voice("espeak-rp-m5", "espeak-ng", "en-gb-x-rp+m5"),
    Voice("espeak-scot-m2", "espeak-ng", "en-gb-scotland+m2"),
    Voice("espeak-scot-f3", "espeak-ng", "en-gb-scotland+f3"),
    Voice("espeak-lanc-m4", "espeak-ng", "en-gb-x-gbclan+m4"),
    Voice("espeak-car-m6", "espeak-ng", "en-029+m6"),
    Voice("espeak-us-klatt", "espeak-ng", "en-us+klatt2"),
    Voice("festival-kal", "festival", "kal_diphone"),
)
#: Synthesised like the others but never trained on: the validation set of training.
VALIDATION_VOICES: tuple[Voice, ...] = (
    Voice("flite-kal16", "flite", "kal16", seconds=30.0),
    Voice("espeak-us-f4", "espeak-ng", "en-us+f4", seconds=30.0),
)


def _sentences() -> list[str]:
    """Prose sentences of 6-30 words, in a fixed order."""
    out: list[str] = []
    for name in _TEXTS:
        path = _TEXT_DIR / name
        if not path.is_file():
            continue
        text = re.sub(r"\s+", " ", path.read_text(errors="replace"))
        for sentence in re.split(r"(?<=[.;:!?])\s+", text):
            sentence = re.sub(r"[^A-Za-z0-9,.;:'()!? -]", " ", sentence).strip()
            if 6 <= len(sentence.split()) <= 30:
                out.append(sentence)
    if not out:
        raise RuntimeError(f"no text to synthesise: {_TEXT_DIR} is empty or missing")
    return out


def _synthesise(voice: Voice, text: str, wav: Path) -> None:
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.voice, "-t", text, "-o", str(wav)]
    elif voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.voice, "-w", str(wav), text]
    else:
        cmd = ["text2wave", "-eval", f"(voice_{voice.voice})", "-o", str(wav)]
    subprocess.run(cmd, input=text.encode() if voice.engine == "festival" else None,
                   check=True, capture_output=True, timeout=120)


def _make_voice(voice: Voice, sentences: list[str], out: Path) -> None:
    # Each voice starts reading at its own place in the text (a hash of its name).
    start = int(hashlib.sha256(voice.name.encode()).hexdigest()[:8], 16) % len(sentences)
    pieces: list[np.ndarray] = []
    total = 0
    gap = np.zeros(int(0.15 * CODEC_FS), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        for i in range(len(sentences)):
            if total >= voice.seconds * CODEC_FS:
                break
            _synthesise(voice, sentences[(start + i) % len(sentences)], wav)
            speech = read_audio(wav)
            peak = float(np.max(np.abs(speech))) or 1.0
            pieces += [speech * (0.5 / peak), gap]
            total += speech.size + gap.size
    write_audio(out, np.concatenate(pieces))


def build_corpus(root: Path = DEFAULT_DIR) -> Path:
    """Synthesise the missing voices of :data:`TTS_VOICES` and :data:`VALIDATION_VOICES` into
    ``root/tts``; returns that folder. Raises ``RuntimeError`` naming a missing TTS engine."""
    folder = Path(root) / "tts"
    folder.mkdir(parents=True, exist_ok=True)
    sentences = _sentences()
    for voice in (*TTS_VOICES, *VALIDATION_VOICES):
        out = folder / f"{voice.name}.wav"
        if out.is_file():
            continue
        tool = {"festival": "text2wave"}.get(voice.engine, voice.engine)
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"TTS engine {tool!r} not found: install the Debian packages flite, espeak-ng, "
                "festival and festvox-kallpc16k (see README)"
            )
        log.info("synthesising %s (%s %s)", voice.name, voice.engine, voice.voice)
        _make_voice(voice, sentences, out)
    return folder


def load_corpus(voices: tuple[Voice, ...], root: Path = DEFAULT_DIR) -> dict[str, np.ndarray]:
    """The voices' speech (16 kHz float32), synthesising what is missing first."""
    folder = build_corpus(root)
    return {v.name: read_audio(folder / f"{v.name}.wav") for v in voices}


def real_speech(folder: Path = REAL_SPEECH_DIR) -> dict[str, np.ndarray]:
    """The held-out real speech clips (``alsa-utils``), 16 kHz float32, by file stem."""
    clips = {p.stem: read_audio(p) for p in sorted(folder.glob("*.wav")) if p.stem != "Noise"}
    if not clips:
        raise FileNotFoundError(
            f"no real speech in {folder}: install the Debian package alsa-utils"
        )
    return clips
