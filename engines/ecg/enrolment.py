"""From a recording to enrolment templates and explanations, offline (the ``sigstream ecg``
commands): beats through the same streaming front end the service runs, embeddings from the
eager embedding model.

Runs on the caller's thread; loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.ecg.frontend import QUALITY_OK, Beat, extract_beats
from engines.errors import InputContractError
from engines.spec import ModelSpec

__all__ = ["MIN_ENROLMENT_BEATS", "EnrolmentBeats", "embed_beats", "enrolment_beats"]

MIN_ENROLMENT_BEATS = 5
"""Fewer good beats than this make no template: the mean would follow one beat's noise."""


@dataclass(frozen=True, kw_only=True)
class EnrolmentBeats:
    """The beats of a recording: ``beats`` the good ones used (at most ``max_beats``),
    ``total`` every beat found, ``rejected`` by quality status."""

    beats: list[Beat]
    total: int
    rejected: dict[str, int]

    def samples(self) -> np.ndarray:
        """``(n, 192)`` float32, the model's input rows."""
        return np.stack([b.samples for b in self.beats]).astype(np.float32)


def enrolment_beats(signal: np.ndarray, fs_hz: float, *, max_beats: int | None = None
                    ) -> EnrolmentBeats:
    """The good beats of ``signal`` (1-D, mV, ``fs_hz``), first ones first.

    Raises :class:`~engines.errors.InputContractError` when fewer than
    :data:`MIN_ENROLMENT_BEATS` good beats are found (the message says why: the quality
    statuses of the beats that were refused).
    """
    found = extract_beats(np.asarray(signal, dtype=np.float64), fs_hz)
    good = [b for b in found if b.quality == QUALITY_OK]
    rejected: dict[str, int] = {}
    for b in found:
        if b.quality != QUALITY_OK:
            rejected[b.quality] = rejected.get(b.quality, 0) + 1
    if len(good) < MIN_ENROLMENT_BEATS:
        why = ", ".join(f"{n} {status}" for status, n in sorted(rejected.items())) or "none"
        raise InputContractError(
            f"only {len(good)} good beats in {len(signal) / fs_hz:.1f} s of signal "
            f"({len(found)} found; refused: {why}); at least {MIN_ENROLMENT_BEATS} are needed"
        )
    if max_beats is not None:
        good = good[:max_beats]
    return EnrolmentBeats(beats=good, total=len(found), rejected=rejected)


def embed_beats(spec: ModelSpec, beats: np.ndarray, *, model: Any = None) -> np.ndarray:
    """Embeddings ``(n, 64)`` float32 of ``beats`` ``(n, 192)`` with the eager model of
    ``spec`` (loaded unless ``model`` is given)."""
    import torch

    module = model if model is not None else spec.load()
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(beats, np.float32))[:, None, :])
    return out.numpy().astype(np.float32)
