"""Scoring beat embeddings against enrolled templates: identify, verify, decide, fuse beats.

Scores are cosine similarities in [-1, 1] between a (fused) probe embedding and unit templates
(:class:`~engines.ecg.templates.TemplateStore`). Decisions use two thresholds calibrated on
validation subjects (stored in the embedding model's card, see :mod:`engines.ecg.calibration`)::

    score >= accept_threshold                     -> "accept"
    score <  reject_threshold                     -> "reject"
    otherwise                                     -> "uncertain" (wait for more beats)

A claim ("this is alice") is verified against alice's template alone, with its own threshold
``verify_threshold``: one impostor template can be crossed by chance far less often than the
best of many, so the same false-accept rate allows a lower threshold (``accept`` when the score
reaches it, else ``reject``).

Fusion: the probe of a stream is the normalised mean of the unit embeddings of its last ``k``
good beats (:class:`FusionState`). Averaging unit vectors cancels beat-to-beat noise, so
genuine scores rise and impostor scores concentrate; ``k = 1`` scores single beats.

Pure numpy; no state besides :class:`FusionState` (one per stream, used by the stream's thread).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

__all__ = ["ACCEPT", "REJECT", "UNCERTAIN", "FusionState", "MatchResult", "Matcher", "fuse"]

Decision = Literal["accept", "reject", "uncertain"]
ACCEPT: Final = "accept"
REJECT: Final = "reject"
UNCERTAIN: Final = "uncertain"


def fuse(embeddings: np.ndarray) -> np.ndarray:
    """Normalised mean of ``(n, dim)`` embeddings (each normalised first): float32 ``(dim,)``.

    A 1-D input is one embedding. Raises ``ValueError`` for no rows, non-finite values or a
    zero mean.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim == 1:
        # One embedding (every beat, several times per beat in the service): normalise only.
        norm = math.sqrt(float(e @ e)) if e.size else 0.0
        if not math.isfinite(norm):
            raise ValueError("embeddings hold NaN or infinite values")
        if norm <= 1e-12:
            raise ValueError("embeddings cancel out")
        return (e / norm).astype(np.float32)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"embeddings must be (n >= 1, dim), got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings hold NaN or infinite values")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    mean = (e / np.maximum(norms, 1e-12)).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm <= 1e-12:
        raise ValueError("embeddings cancel out")
    return (mean / norm).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class MatchResult:
    """Outcome of scoring one probe.

    ``user``: best-scoring enrolled user (identification) or the claimed one (verification);
    ``None`` when nobody is enrolled. ``score``: its cosine (``-inf`` when nobody is enrolled).
    ``decision``: see the module docstring. ``scores``: float32 ``(U,)`` cosine against every
    template, in the order of the template names. ``n_beats``: beats fused into the probe.
    """

    user: str | None
    score: float
    decision: Decision
    scores: np.ndarray
    n_beats: int


class FusionState:
    """The last ``k`` good-beat embeddings of one stream; :meth:`fused` is their fusion."""

    def __init__(self, k: int) -> None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._k = int(k)
        self._buf: deque[np.ndarray] = deque(maxlen=self._k)

    @property
    def k(self) -> int:
        return self._k

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def full(self) -> bool:
        return len(self._buf) == self._k

    def add(self, embedding: np.ndarray) -> None:
        """Append one embedding ``(dim,)`` (the oldest drops out once ``k`` are held)."""
        e = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if not np.isfinite(e).all():
            raise ValueError("embedding holds NaN or infinite values")
        if self._buf and e.shape != self._buf[0].shape:
            raise ValueError(f"embedding has {e.size} values, the state holds {self._buf[0].size}")
        self._buf.append(e.copy())

    def reset(self) -> None:
        """Forget every beat (a new wearer, lead off, a long gap)."""
        self._buf.clear()

    def embeddings(self) -> np.ndarray:
        """The held embeddings, oldest first, float32 ``(n, dim)``."""
        if not self._buf:
            raise ValueError("no embeddings held")
        return np.stack(list(self._buf))

    def fused(self) -> np.ndarray | None:
        """Fused embedding ``(dim,)`` float32, or ``None`` when no beat is held."""
        return fuse(self.embeddings()) if self._buf else None


class Matcher:
    """Cosine scoring and the accept / reject / uncertain rule (see the module docstring).

    ``accept_threshold >= reject_threshold``, both in [-1, 1]; ``verify_threshold`` (default:
    ``accept_threshold``) decides claims. ``fuse_beats``: the ``k`` of :meth:`new_state` (how
    many beats a stream fuses before a decision counts as final).
    """

    def __init__(
        self,
        accept_threshold: float,
        reject_threshold: float,
        *,
        verify_threshold: float | None = None,
        fuse_beats: int = 1,
    ) -> None:
        a, r = float(accept_threshold), float(reject_threshold)
        v = a if verify_threshold is None else float(verify_threshold)
        if not (-1.0 <= r <= a <= 1.0) or not -1.0 <= v <= 1.0:
            raise ValueError(
                f"need -1 <= reject_threshold <= accept_threshold <= 1 and verify_threshold in "
                f"[-1, 1], got {r}, {a} and {v}"
            )
        if int(fuse_beats) < 1:
            raise ValueError(f"fuse_beats must be >= 1, got {fuse_beats}")
        self.accept_threshold = a
        self.reject_threshold = r
        self.verify_threshold = v
        self.fuse_beats = int(fuse_beats)

    @classmethod
    def from_card(cls, card: Mapping[str, Any], *, fuse_beats: int | None = None) -> Matcher:
        """From the embedding model's card: ``accept_threshold`` / ``reject_threshold`` of its
        ``fuse_beats``, or, when ``fuse_beats`` is given and the card calibrated that ``k``
        (``thresholds_by_k``), that row's. Raises ``KeyError`` when the card has no thresholds
        (or none for the ``k`` asked for)."""
        card_k = int(card.get("fuse_beats", 1))
        k = card_k if fuse_beats is None else int(fuse_beats)
        if k != card_k:
            row = card.get("thresholds_by_k", {}).get(str(k))
            if row is None:
                raise KeyError(f"the card has no thresholds calibrated for fuse_beats={k}")
            return cls(row["accept_threshold"], row["reject_threshold"],
                       verify_threshold=row.get("verify_threshold"), fuse_beats=k)
        row = card.get("thresholds_by_k", {}).get(str(k), {})
        return cls(card["accept_threshold"], card["reject_threshold"],
                   verify_threshold=row.get("verify_threshold"), fuse_beats=k)

    def __repr__(self) -> str:
        return (
            f"Matcher(accept_threshold={self.accept_threshold:.4f},"
            f" reject_threshold={self.reject_threshold:.4f},"
            f" verify_threshold={self.verify_threshold:.4f}, fuse_beats={self.fuse_beats})"
        )

    def new_state(self) -> FusionState:
        """A fusion state of ``fuse_beats`` beats for one stream."""
        return FusionState(self.fuse_beats)

    def decide(self, score: float) -> Decision:
        if score >= self.accept_threshold:
            return ACCEPT
        if score < self.reject_threshold:
            return REJECT
        return UNCERTAIN

    @staticmethod
    def _templates(templates: tuple[Sequence[str], np.ndarray]) -> tuple[list[str], np.ndarray]:
        names, matrix = templates
        m = np.asarray(matrix, dtype=np.float32)
        names = list(names)
        if m.ndim != 2 or m.shape[0] != len(names):
            raise ValueError(f"templates: {len(names)} names for a matrix of shape {m.shape}")
        return names, m

    def score(
        self, embeddings: np.ndarray, templates: tuple[Sequence[str], np.ndarray]
    ) -> MatchResult:
        """Identify: fuse ``embeddings`` ``(n, dim)`` (or one ``(dim,)``), score it against
        every template of ``templates`` = ``(names, matrix (U, dim))`` as returned by
        :meth:`TemplateStore.templates`, and decide on the best one."""
        probe = fuse(embeddings)
        n = 1 if np.ndim(embeddings) == 1 else int(np.shape(embeddings)[0])
        names, m = self._templates(templates)
        if m.shape[0] == 0:
            return MatchResult(
                user=None, score=float("-inf"), decision=REJECT,
                scores=np.zeros(0, np.float32), n_beats=n,
            )
        if m.shape[1] != probe.size:
            raise ValueError(f"templates have dim {m.shape[1]}, embeddings {probe.size}")
        scores = (m @ probe).astype(np.float32)
        best = int(np.argmax(scores))
        value = float(scores[best])
        return MatchResult(
            user=names[best], score=value, decision=self.decide(value), scores=scores, n_beats=n
        )

    def verify(
        self,
        embeddings: np.ndarray,
        claim: str,
        templates: tuple[Sequence[str], np.ndarray],
    ) -> MatchResult:
        """Verify the claim "this is ``claim``": score the fused probe against that user's
        template only and accept at ``verify_threshold``. An unknown ``claim`` is rejected
        (score ``-inf``)."""
        names, m = self._templates(templates)
        probe = fuse(embeddings)
        n = 1 if np.ndim(embeddings) == 1 else int(np.shape(embeddings)[0])
        if m.shape[0] and m.shape[1] != probe.size:
            raise ValueError(f"templates have dim {m.shape[1]}, embeddings {probe.size}")
        scores = (m @ probe).astype(np.float32) if m.shape[0] else np.zeros(0, np.float32)
        if claim not in names:
            return MatchResult(user=claim, score=float("-inf"), decision=REJECT,
                               scores=scores, n_beats=n)
        value = float(scores[names.index(claim)])
        decision: Decision = ACCEPT if value >= self.verify_threshold else REJECT
        return MatchResult(user=claim, score=value, decision=decision, scores=scores, n_beats=n)
