"""Beats of simulated records through the service's own front end, and the eager models that
score them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from devices import cohort_subject, simulate_record

__all__ = ["Beats", "collect_beats", "load_model", "or_default", "run_model"]


def or_default(v: float | None, default: float) -> float:
    """``v``, or ``default`` where it is None (ranking figures that may be undefined)."""
    return default if v is None else v


@dataclass
class Beats:
    """Good beats of a set of records, in record order then time order.

    ``samples`` (n, 192) float32 model input rows; ``subject``, ``session``, ``record``
    (n,) int64 (``record`` numbers the records, so fused windows never straddle two);
    ``fs_hz`` (n,) float64 the stream rate of the beat's record; ``time_s`` (n,) the R peak's
    time in its session; ``ok`` (n,) bool the quality was ``"ok"`` (rows are good beats only
    unless collected with ``keep_refused``). ``found`` / ``good``: beats the front end found /
    passed as ``"ok"`` per subject (before any ``max_beats`` cut).
    """

    samples: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    record: np.ndarray
    fs_hz: np.ndarray
    time_s: np.ndarray
    ok: np.ndarray
    found: dict[int, int]
    good: dict[int, int]
    rejected: dict[str, int]
    signal_s: float
    n_records: int

    def __len__(self) -> int:
        return int(self.subject.size)

    def take(self, mask: np.ndarray) -> Beats:
        """The rows where ``mask`` holds (same counts and summary)."""
        return replace(
            self,
            samples=self.samples[mask],
            subject=self.subject[mask],
            session=self.session[mask],
            record=self.record[mask],
            fs_hz=self.fs_hz[mask],
            time_s=self.time_s[mask],
            ok=self.ok[mask],
        )

    def summary(self) -> dict[str, Any]:
        found = sum(self.found.values())
        refused = {
            s: 1.0 - self.good[s] / self.found[s] if self.found[s] else None for s in self.found
        }
        worst = max(refused, key=lambda s: or_default(refused[s], -1.0))
        return {
            "records": self.n_records,
            "signal_s": self.signal_s,
            "beats_found": found,
            "beats_good": sum(self.good.values()),
            "beats_used": int(self.ok.sum()),
            "beats_refused_by_quality": dict(sorted(self.rejected.items())),
            "refused_fraction_worst_subject": {"subject": worst, "fraction": refused[worst]},
            "subjects_without_good_beats": [s for s in self.found if self.good[s] == 0],
        }


def collect_beats(
    subjects: Sequence[int],
    sessions: Sequence[int],
    *,
    duration_s: float,
    fs_hz: Sequence[float],
    seed: int,
    max_beats: int | None = None,
    keep_refused: bool = False,
) -> Beats:
    """Good beats (all beats with ``keep_refused``) of ``duration_s`` seconds of each
    subject's sessions, split evenly over the stream rates ``fs_hz`` (rate ``k`` on its own
    stretch starting at ``k * duration_s / len(fs_hz)``, as
    :func:`engines.ecg.data.cohort_beats` splits the training data), each stretch one
    record through the whole-record front end (identical to the streaming one).
    ``max_beats``: use only the first good beats of each subject-session (no refused ones)."""
    from engines.ecg.frontend import BEAT_SAMPLES, QUALITY_OK, extract_beats

    rows: list[np.ndarray] = []
    labels: list[tuple[int, int, int, float, float, bool]] = []
    rejected: dict[str, int] = {}
    found: dict[int, int] = {}
    good: dict[int, int] = {}
    signal_s = 0.0
    r = 0
    seg = duration_s / len(fs_hz)
    for s in subjects:
        subject = cohort_subject(int(s), seed=seed)
        found[int(s)] = good[int(s)] = 0
        for session in sessions:
            kept = 0
            for k, fs in enumerate(fs_hz):
                start_s = k * seg
                record = simulate_record(
                    subject, int(session), fs_hz=float(fs), duration_s=seg, start_s=start_s
                )
                signal_s += record.duration_s
                beats = extract_beats(record.signal, record.fs_hz)
                found[int(s)] += len(beats)
                for b in beats:
                    ok = b.quality == QUALITY_OK
                    if ok:
                        good[int(s)] += 1
                    else:
                        rejected[b.quality] = rejected.get(b.quality, 0) + 1
                    if (ok and (max_beats is None or kept < max_beats)) or (
                        keep_refused and max_beats is None
                    ):
                        rows.append(b.samples)
                        t = start_s + b.r_index / record.fs_hz + b.r_offset_s
                        labels.append((int(s), int(session), r, float(fs), t, ok))
                        kept += int(ok)
                r += 1
    lab = np.array(labels, np.float64).reshape(-1, 6)
    samples = np.stack(rows).astype(np.float32) if rows else np.zeros((0, BEAT_SAMPLES), np.float32)
    return Beats(
        samples=samples,
        subject=lab[:, 0].astype(np.int64),
        session=lab[:, 1].astype(np.int64),
        record=lab[:, 2].astype(np.int64),
        fs_hz=lab[:, 3],
        time_s=lab[:, 4],
        ok=lab[:, 5] > 0,
        found=found,
        good=good,
        rejected=rejected,
        signal_s=signal_s,
        n_records=r,
    )


def run_model(module: Any, samples: np.ndarray, batch: int) -> np.ndarray:
    """Eager outputs of ``module`` for ``samples`` (n, 192): (n, out) float32."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, samples.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(samples[i : i + batch]))[:, None, :]
            outs.append(module(x).numpy().astype(np.float32))
    if not outs:  # no beats: the output width still has to be right
        with torch.inference_mode():
            width = module(torch.zeros((1, 1, samples.shape[1]))).shape[1]
        return np.zeros((0, width), np.float32)
    return np.concatenate(outs)


def load_model(spec: Any) -> tuple[Any, dict[str, Any]]:
    """``(module, info)``: the eager model and what the report says about its weights, or
    ``(None, info)`` with ``info["skipped"]`` when the weights are missing or broken."""
    from engines.errors import WeightsError

    card = spec.card()
    info: dict[str, Any] = {"name": spec.name, "weights": spec.weights}
    try:
        info["weights_sha256"] = spec.weights_sha256()
        module = spec.load()
    except WeightsError as exc:
        info["skipped"] = str(exc)
        return None, info
    keys = (
        "seed",
        "params",
        "training_beats",
        "training_beats_seen",
        "cohort_accuracy",
        "cohort_eer",
        "cohort_eer_k5",
        "validation_eer",
        "validation_eer_k5",
        "fuse_beats",
        "accept_threshold",
        "reject_threshold",
        "wall_s",
        "command",
        "torch",
    )
    info["card"] = {k: card[k] for k in keys if k in card}
    if not card:
        info["note"] = f"no weights card at {spec.card_path}"
    return module, info
