"""Training of the ECG beat models (paper §3) on the simulated cohort, and threshold calibration.

Entry point: :func:`train_ecg` — what ``sigstream train ecg --model cnn|embedding --seed N``
calls. All beats come through the real front end (:mod:`engines.ecg.data`), only ``"ok"`` beats,
recorded at a mix of stream rates (128, 250, 360, 500 Hz).

Closed-set classifier (``model="cnn"``)
    The paper's setting: 18 subjects (0..17), cross-entropy, Adam. Trained on **session 0
    only**; the card reports the accuracy on sessions 1 and 2 (other days: morphology drift,
    other heart rate, other noise), never seen in training — the split is by session, never by
    random beat (beats of one recording are near-copies of each other, a random split would
    measure memory).

    Departure from the paper: the trunk (spectrogram + 3 conv layers) starts from the trained
    embedding model's trunk (``trunk_init="embedding"``: ``ecg_embedding.pt`` in the same
    folder, so train the embedding first), then the whole classifier is fine-tuned on cohort
    session 0 (head lr 2e-3, trunk lr 2e-4). Why: trained from scratch on one session (the
    paper's way, ``trunk_init="none"``), the network learns whatever separates the 18 people
    *on that day* — including things that drift between sessions (T-wave timing with heart
    rate, the session's noise floor) — and it has no way to tell which features are stable.
    The embedding trunk learnt that from 300 other people recorded on 5 sessions each; the
    cohort's own later sessions are still never used. Measured on sessions 1-2 (seed 0):
    from scratch 98.8 % (16/32/64 channels, 400 s per subject) to 99.0 % (24/48/96, 1200 s),
    with the embedding trunk 99.7 % after 1000 steps.

Embedding (``model="embedding"``)
    Metric learning on 318 identities: the pool subjects 100..399 with sessions 0..4 (several
    sessions per identity teach the model what does *not* identify a person: drift, heart rate,
    noise) plus the cohort 0..17 with session 0 only.

    Loss: additive-margin softmax (CosFace, Wang et al. 2018): a learned unit "proxy" vector
    ``w_c`` per training identity, logits ``s * (cos(e, w_c) - m * [c == y])``, cross-entropy.
    Why this one: (1) it optimises exactly the geometry used at match time, cosine to a unit
    vector (an enrolled template plays the proxy's role); the margin ``m`` forces every beat to
    be closer to its own proxy than to any other by ``m`` in cosine, which is what makes a
    single threshold work for people never seen in training; (2) no pair or triplet mining:
    each beat is compared with all 318 proxies in one matrix product, so every batch carries
    signal and the loss does not depend on batch composition or a mining schedule — stable
    and cheap on one CPU core, where triplet losses need large batches to find hard negatives;
    (3) plain softmax (no margin) separates the training classes but leaves them loose, and
    ArcFace's angular margin adds ``acos`` and is less stable from scratch with small models.
    ``s = 30``, ``m = 0.3``.

Both: Adam, cosine learning-rate decay to 0 over a fixed number of steps (deterministic,
known wall time), batch 128 drawn class-balanced (a subject whose sessions lost more beats to
the quality check is not under-represented), augmentation of every training beat (heart-rate
stretch of P and T, R jitter, smooth wave-amplitude drift, band-limited noise from near-clean
to 25 % of the beat's std, baseline tilt: see ``_augment``; without the noise the classifier
learnt one subject's session-0 EMG floor as its identity and failed on the cleaner later
sessions), dropout before the last linear layer.

Calibration (embedding) of the accept, reject and verify thresholds, per number of fused
beats: :mod:`engines.ecg.calibration`.

Figures in the card (the targets are the brief's):

- cnn: closed-set accuracy on cohort sessions 1-2 (target >= 99 %).
- embedding: validation EER (calibration subjects), and cohort EER single beat on sessions 1-2
  against templates from session 0 (target <= 2 %), plus identification accuracy among the 18
  cohort templates.

Determinism: ``torch.manual_seed(seed)``, numpy generators derived from ``seed`` with
``SeedSequence`` (batch order, augmentation), 1 torch thread, deterministic algorithms. Same
seed, config and machine -> bit-identical weights. The simulated data do not depend on the
seed (the cohort is fixed, ``devices.ecg_cohort`` seed 0).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
import torch
from torch import nn

from engines import training
from engines.ecg.calibration import (
    ACCEPT_FAR,
    ENROL_BEATS,
    FUSION_KS,
    REJECT_FAR,
    calibrate,
    evaluate_cohort,
)
from engines.ecg.cnn import EcgClassifier, EcgEmbedder
from engines.ecg.data import (
    CALIBRATION_SUBJECTS,
    COHORT_SUBJECTS,
    POOL_SUBJECTS,
    TRAIN_FS_HZ,
    cohort_beats,
)
from engines.ecg.specs import ECG_SPECS, WEIGHTS_DIR
from engines.ecg.spectrogram import BEAT_FS_HZ
from engines.errors import WeightsMismatchError, WeightsNotFoundError

__all__ = [
    "EcgTrainConfig",
    "default_config",
    "train_ecg",
]

_STREAM_TAG = {"order": 1, "augment": 2}
_R_SAMPLE = 64.0  # R peak position in a beat (engines.ecg.frontend)


@dataclass(frozen=True, kw_only=True)
class EcgTrainConfig:
    """Everything that shapes a training run (defaults: :func:`default_config`).

    Data: ``train_subjects`` x ``train_sessions`` with ``train_duration_s`` of signal each, plus
    (embedding) ``extra_subjects`` x ``extra_sessions``; rates ``fs_hz``.
    ``trunk_init``: ``"none"`` (random) or ``"embedding"`` (the trunk of ``ecg_embedding.pt`` in
    the output folder); ``trunk_lr``: the trunk's learning rate (``None``: ``lr``).
    Evaluation: cohort ``eval_subjects`` sessions ``eval_sessions`` with ``eval_duration_s``
    each (templates from ``enrol_duration_s`` of session 0); calibration on
    ``calib_subjects`` (``calib_duration_s`` of session 1 as probes) with the templates of
    ``calib_distractors`` in the gallery too.
    """

    steps: int
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    train_subjects: tuple[int, ...] = COHORT_SUBJECTS
    train_sessions: tuple[int, ...] = (0,)
    train_duration_s: float = 400.0
    extra_subjects: tuple[int, ...] = ()
    extra_sessions: tuple[int, ...] = ()
    extra_duration_s: float = 0.0
    fs_hz: tuple[float, ...] = TRAIN_FS_HZ
    augment: bool = True
    margin: float = 0.3
    scale: float = 30.0
    eval_subjects: tuple[int, ...] = COHORT_SUBJECTS
    eval_sessions: tuple[int, ...] = (1, 2)
    eval_duration_s: float = 120.0
    enrol_duration_s: float = 40.0
    calib_subjects: tuple[int, ...] = CALIBRATION_SUBJECTS
    calib_duration_s: float = 240.0
    calib_distractors: tuple[int, ...] = COHORT_SUBJECTS
    trunk_init: str = "none"
    trunk_lr: float | None = None
    fuse_beats: int = 5
    history_points: int = 10


def default_config(model: str) -> EcgTrainConfig:
    """The shipped configuration of ``model`` (``"cnn"`` or ``"embedding"``)."""
    if model == "cnn":
        return EcgTrainConfig(
            steps=1500,
            train_duration_s=400.0,
            calib_subjects=(),
            calib_distractors=(),
            trunk_init="embedding",
            trunk_lr=2e-4,
        )
    if model == "embedding":
        return EcgTrainConfig(
            steps=11000,
            train_subjects=POOL_SUBJECTS,
            train_sessions=(0, 1, 2, 3, 4),
            train_duration_s=60.0,
            extra_subjects=COHORT_SUBJECTS,
            extra_sessions=(0,),
            extra_duration_s=300.0,
        )
    raise ValueError(f"unknown ECG model {model!r}; choose from {sorted(ECG_SPECS)}")


class _CosFace(nn.Module):
    """Additive-margin softmax head: unit proxies, ``s * (cos - m * onehot)`` logits."""

    def __init__(self, dim: int, n_classes: int, *, scale: float, margin: float) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, dim) / math.sqrt(dim))
        self.scale = scale
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = emb @ nn.functional.normalize(self.proxies, dim=1).T
        onehot = nn.functional.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * (cos - self.margin * onehot)


_NOISE_SOS = scipy.signal.butter(4, 40.0, fs=BEAT_FS_HZ, output="sos")


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomise what does not identify a person, per beat ``(n, 192)``:

    - heart rate: the time axis outside the QRS (+-60 ms about R) is stretched by a factor in
      [0.93, 1.07] — P and T move and widen with the RR interval while the QRS keeps its
      duration (as in the simulator and in people), ~+-15 % of heart rate; then a shift of up
      to +-3 samples (R alignment jitter), edge-padded;
    - session drift of the wave amplitudes: a smooth gain over the beat (3 random cosines,
      +-4 % each);
    - additive noise low-passed at 40 Hz like the front end's band (EMG that survives it), its
      std log-uniform in [0.3 %, 25 %] of the beat's std: every subject is seen clean and noisy,
      so the noise floor of one recording session cannot become an identity cue;
    - a baseline tilt of up to +-10 % of the beat's std.
    """
    n, length = x.shape
    d = np.arange(length, dtype=np.float64)[None, :] - _R_SAMPLE
    stretch = rng.uniform(0.93, 1.07, size=(n, 1))
    knee = 0.06 * BEAT_FS_HZ
    warped = np.where(np.abs(d) <= knee, d, np.sign(d) * (knee + (np.abs(d) - knee) * stretch))
    shift = rng.integers(-3, 4, size=(n, 1))
    src = np.clip(_R_SAMPLE + warped + shift, 0.0, length - 1.0)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, length - 1)
    w = src - lo
    rows = np.arange(n)[:, None]
    y = (1.0 - w) * x[rows, lo] + w * x[rows, hi]
    phase = 2.0 * np.pi * np.arange(length)[None, :] / length
    gain = np.ones((n, length))
    for j in (1, 2, 3):
        gain += rng.uniform(-0.04, 0.04, size=(n, 1)) * np.cos(
            j * phase + rng.uniform(0.0, 2.0 * np.pi, size=(n, 1))
        )
    y = y * gain
    std = y.std(axis=1, keepdims=True) + 1e-6
    level = np.exp(rng.uniform(np.log(0.003), np.log(0.25), size=(n, 1)))
    white = rng.standard_normal((n, length + 64))
    noise = scipy.signal.sosfilt(_NOISE_SOS, white, axis=1)[:, 64:]  # past the filter's start
    noise /= noise.std(axis=1, keepdims=True) + 1e-12
    tilt = rng.uniform(-0.1, 0.1, size=(n, 1)) * np.linspace(-1.0, 1.0, length)[None, :]
    return (y + std * (level * noise + tilt)).astype(np.float32)


def _balanced_sampler(
    labels: np.ndarray, rng: np.random.Generator
) -> Callable[[int], np.ndarray]:
    """Batches drawn class-first (a uniform class, then a uniform beat of it): a subject with
    fewer good beats is seen as often as the others."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = np.flatnonzero(counts)

    def draw(size: int) -> np.ndarray:
        c = present[rng.integers(0, present.size, size=size)]
        within = np.floor(rng.random(size) * counts[c]).astype(np.int64)
        return order[starts[c] + within]

    return draw


def train_ecg(
    *,
    model: str = "cnn",
    seed: int = 0,
    out_dir: Path | None = None,
    config: EcgTrainConfig | None = None,
    progress: bool = True,
    threads: int = 1,
) -> dict[str, Any]:
    """Train ECG model ``model`` (``"cnn"`` or ``"embedding"``) from scratch; save weights + card.

    Writes ``<out_dir>/ecg_<model>.pt`` (state_dict) and ``ecg_<model>.json`` (card);
    ``out_dir`` defaults to the shipped weights folder. ``config`` defaults to
    :func:`default_config`. Returns the card (a dict). Blocking; runs on the calling thread
    with ``threads`` torch threads.
    """
    if model not in ECG_SPECS:
        raise ValueError(f"unknown ECG model {model!r}; choose from {sorted(ECG_SPECS)}")
    cfg = config or default_config(model)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)

    with training.deterministic_torch(threads):
        return _train(model, seed, out, cfg, progress, threads)


def _init_trunk(net: EcgClassifier | EcgEmbedder, how: str, folder: Path) -> dict[str, Any]:
    """Initialise ``net.trunk`` as ``how`` says; returns what the card records about it."""
    if how == "none":
        return {"from": "random (torch.manual_seed)"}
    if how != "embedding":
        raise ValueError(f"trunk_init must be 'none' or 'embedding', got {how!r}")
    spec = ECG_SPECS["embedding"]
    path = folder / spec.weights
    if not path.exists():
        raise WeightsNotFoundError(
            f"trunk_init='embedding' needs {path}: train the embedding into the same folder"
            " first (sigstream train ecg --model embedding --seed N)"
        )
    donor = spec.load(path)
    if not isinstance(donor, EcgEmbedder):
        raise WeightsMismatchError(f"{path}: not an EcgEmbedder")
    try:
        net.trunk.load_state_dict(donor.trunk.state_dict())
    except RuntimeError as exc:
        raise WeightsMismatchError(
            f"{path}: its trunk does not fit the classifier: {exc}") from exc
    return {"from": spec.weights, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _train(
    model: str, seed: int, out: Path, cfg: EcgTrainConfig, progress: bool, threads: int
) -> dict[str, Any]:
    spec = ECG_SPECS[model]
    t_start = time.perf_counter()
    data = cohort_beats(
        cfg.train_subjects, cfg.train_sessions, duration_s=cfg.train_duration_s, fs_hz=cfg.fs_hz
    )
    parts = [data]
    if cfg.extra_subjects and cfg.extra_sessions and cfg.extra_duration_s > 0:
        parts.append(
            cohort_beats(
                cfg.extra_subjects,
                cfg.extra_sessions,
                duration_s=cfg.extra_duration_s,
                fs_hz=cfg.fs_hz,
            )
        )
    beats = np.concatenate([p.beats for p in parts])
    subjects = np.concatenate([p.subjects for p in parts])
    if model == "cnn":
        classes = np.asarray(ECG_SPECS["cnn"].extra["classes"])
        if set(np.unique(subjects)) - set(classes.tolist()):
            raise ValueError("the classifier trains on the cohort subjects only")
    else:
        classes = np.unique(subjects)
    lookup = {int(c): i for i, c in enumerate(classes)}
    labels = np.array([lookup[int(s)] for s in subjects], dtype=np.int64)
    data_s = time.perf_counter() - t_start
    if beats.shape[0] < cfg.batch_size:
        raise ValueError(f"only {beats.shape[0]} training beats for batch {cfg.batch_size}")

    torch.manual_seed(seed)
    net: EcgClassifier | EcgEmbedder = spec.build()  # type: ignore[assignment]
    trunk_init = _init_trunk(net, cfg.trunk_init, out)
    net.train()
    head: _CosFace | None = None
    rest = list(net.head.parameters())
    if model == "embedding":
        head = _CosFace(
            spec.output_shape[0], len(classes), scale=cfg.scale, margin=cfg.margin
        )
        rest += list(head.parameters())
    trunk_lr = cfg.lr if cfg.trunk_lr is None else cfg.trunk_lr
    groups: list[dict[str, Any]] = [
        {"params": list(net.trunk.parameters()), "lr": trunk_lr},
        {"params": rest},
    ]
    optimiser = torch.optim.Adam(
        groups,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=cfg.steps)
    loss_fn = nn.CrossEntropyLoss()
    draw = _balanced_sampler(labels, training.data_rng(seed, _STREAM_TAG["order"]))
    aug_rng = training.data_rng(seed, _STREAM_TAG["augment"])
    every = max(1, cfg.steps // max(1, cfg.history_points))

    history: list[dict[str, float]] = []
    running = float("nan")
    correct_ema = float("nan")
    t0 = time.perf_counter()
    bar = training.progress_bar(cfg.steps, f"ecg_{model}", enabled=progress)
    for step in bar:
        idx = draw(cfg.batch_size)
        xb = beats[idx]
        if cfg.augment:
            xb = _augment(xb, aug_rng)
        x = torch.from_numpy(np.ascontiguousarray(xb, np.float32))[:, None, :]
        y = torch.from_numpy(labels[idx])
        out_t = net(x)
        logits = head(out_t, y) if head is not None else out_t
        loss = loss_fn(logits, y)
        running = training.ema(running, training.optimiser_step(loss, optimiser, scheduler))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
        correct_ema = training.ema(correct_ema, accuracy)
        if step % every == 0 or step == cfg.steps:
            history.append(
                {
                    "step": step,
                    "train_loss_ema": running,
                    "train_accuracy_ema": correct_ema,
                    "lr": optimiser.param_groups[1]["lr"],
                    "elapsed_s": time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{running:.4f}", acc=f"{correct_ema:.3f}")
            if progress and not sys.stderr.isatty():
                training.log_line(bar, history[-1])
    train_s = time.perf_counter() - t0
    bar.close()
    net.eval()

    t_eval = time.perf_counter()
    figures = evaluate_cohort(net, model, cfg)
    calibration: dict[int, dict[str, float]] = {}
    if model == "embedding" and cfg.calib_subjects:
        ks = tuple(sorted({*FUSION_KS, cfg.fuse_beats}))
        calibration = calibrate(net, cfg, ks)
    eval_s = time.perf_counter() - t_eval

    weights_path = out / spec.weights
    training.save_weights(net, weights_path)

    command = f"sigstream train ecg --model {model} --seed {seed}"
    default = default_config(model)
    if cfg != default:
        changed = {
            k: v for k, v in asdict(cfg).items() if getattr(default, k) != v
        }
        command += f"  # config changed: {sorted(changed)}"
    cfg_json = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    for key in ("train_subjects", "extra_subjects", "eval_subjects", "calib_subjects",
                "calib_distractors"):
        ids = list(getattr(cfg, key))
        cfg_json[key] = f"{ids[0]}..{ids[-1]} ({len(ids)})" if len(ids) > 3 else ids
    card: dict[str, Any] = {
        "model": model,
        "name": spec.name,
        "seed": seed,
        "config": cfg_json,
        "loss": "cross-entropy" if model == "cnn" else (
            f"CosFace additive-margin softmax (s={cfg.scale}, m={cfg.margin})"
        ),
        "optimizer": "Adam",
        "lr_schedule": f"cosine from {cfg.lr} (trunk {trunk_lr}) to 0 over {cfg.steps} steps",
        "trunk_init": trunk_init,
        "classes": [int(c) for c in classes] if model == "cnn" else len(classes),
        "training_beats": int(beats.shape[0]),
        "training_beats_note": "simulated subjects through engines.ecg.frontend, quality ok only",
        "training_beats_seen": cfg.steps * cfg.batch_size,
        **figures,
    }
    if calibration:
        chosen = calibration[cfg.fuse_beats]
        card.update(
            {
                "fuse_beats": cfg.fuse_beats,
                "accept_threshold": chosen["accept_threshold"],
                "reject_threshold": chosen["reject_threshold"],
                "accept_far": ACCEPT_FAR,
                "reject_far": REJECT_FAR,
                "validation_eer": calibration[1]["eer"],
                f"validation_eer_k{cfg.fuse_beats}": chosen["eer"],
                "thresholds_by_k": {str(k): v for k, v in calibration.items()},
                "calibration": (
                    f"probes: session 1 of subjects {cfg.calib_subjects[0]}.."
                    f"{cfg.calib_subjects[-1]}; gallery: their templates + those of"
                    f" {len(cfg.calib_distractors)} distractors (first {ENROL_BEATS} good beats"
                    " of session 0 each); cosine; accept where the best non-own score exceeds"
                    f" it for <= {ACCEPT_FAR:.1%} of probes, reject below the {REJECT_FAR:.0%}"
                    " point"
                ),
                "calibration_gallery": len(cfg.calib_subjects) + len(cfg.calib_distractors),
            }
        )
    card.update(
        {
            "history": history,
            "data_s": data_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "wall_s": time.perf_counter() - t_start,
            "step_s": train_s / cfg.steps,
            **training.run_record(net, threads=threads, command=command),
        }
    )
    training.write_card(weights_path.with_suffix(".json"), card)
    return card
