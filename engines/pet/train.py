"""Self-supervised training of the PET denoisers (PAPERS.md §2): from 2-minute images alone.

Entry point: :func:`train_pet` (``sigstream train pet --model n2n --seed 0``; with
``--from INPUT...`` on a site's own scans instead of the simulation).

Protocol:

- Data: by default :func:`engines.pet.data.training_images` (256 slices): simulated 2-minute
  OSEM images of the NEMA IEC phantom (and, for ``n2n``, the OSEM images of two binomial halves
  of each one's counts). The 10-minute images are never trained on; a few validation pairs measure
  progress (recorded in the card, never used to pick weights). With ``images`` (``--from``):
  the transaxial slices of the user's volumes, no validation.
- Patches of ``patch_px``² (64) at random places, random flips and 90° turns, in the models'
  per-slice units (:data:`engines.pet.specs.PET_UNITS`: the slice's scale, then cropped).
- Loss: blind-spot models, MSE at the masked pixels only against their noisy values
  (:mod:`engines.pet.masking`); ``n2n``, MSE of one half's output against the other half.
- Adam at ``lr``; the learning rate halves at 50 %, 75 % and 90 % of the steps.
- Determinism: ``torch.manual_seed(seed)``, ``torch.use_deterministic_algorithms(True)``,
  numpy streams ``SeedSequence([seed, tag])``, ``threads`` torch threads: same seed, steps,
  batch and threads on the same machine and torch build give the same weights, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import training
from engines.pet.masking import mask_batch
from engines.pet.metrics import psnr_db
from engines.pet.specs import PET_METHODS, PET_SPECS, PET_UNITS, WEIGHTS_DIR

__all__ = ["DEFAULTS", "MODEL_STEPS", "TrainImages", "train_pet"]

_TRAIN_TAG = 61
_MASK_TAG = 62
_DECAY_AT = (0.5, 0.75, 0.9)


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """A run's defaults; ``steps`` per model (:data:`MODEL_STEPS`)."""

    batch_size: int = 16
    lr: float = 1e-3
    patch_px: int = 64
    n_train: int = 256
    n_val: int = 8


DEFAULTS = Defaults()
#: Steps per model, sized for ~15-20 min each on 2 idle cores (0.3-0.4 s a step of 16 patches):
#: the served Noise2Noise model longest; the blind-spot models, which lose to it and to the
#: Gaussian at any length measured here, half of that.
MODEL_STEPS = {"n2n": 3000, "n2v": 1500, "n2v2": 1500, "n2v2_struct": 1500}


@dataclass(frozen=True, kw_only=True)
class TrainImages:
    """What a model trains on: ``short`` float32 ``(n, H, W)`` noisy slices in activity units;
    ``halves`` float32 ``(n, 2, H, W)`` the two half-count images of each (``n2n`` only);
    ``validation``: ``(short, long)`` slice pairs whose PSNR is recorded; ``source``: where
    they came from, for the card."""

    short: np.ndarray
    halves: np.ndarray | None = None
    validation: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    source: dict[str, Any]


class _Patches:
    """Random patches in the models' units (see the module docstring)."""

    def __init__(self, images: TrainImages, *, patch_px: int, halves: bool,
                 rng: np.random.Generator) -> None:
        self.rng, self.p = rng, patch_px
        short = images.short
        if min(short.shape[1:]) < patch_px:
            raise ValueError(f"slices {short.shape[1:]} are smaller than the {patch_px}² patches")
        scales = np.array([PET_UNITS.scale_for(s) for s in short], np.float32)[:, None, None]
        source = images.halves if halves else short[:, None]
        if source is None:
            raise ValueError("n2n trains on half-count images; these images have none")
        self.stack = (source / scales[:, None]).astype(np.float32)  # (n, k, H, W)

    def batch(self, n: int) -> np.ndarray:
        """``(n, k, p, p)``: k = 1 (the noisy patch) or 2 (the two halves)."""
        rng, p = self.rng, self.p
        count, _, h, w = self.stack.shape
        out = np.empty((n, self.stack.shape[1], p, p), np.float32)
        for b in range(n):
            i = int(rng.integers(count))
            r, c = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            patch = self.stack[i, :, r:r + p, c:c + p]
            patch = np.rot90(patch, int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                patch = patch[:, :, ::-1]
            if rng.random() < 0.5 and patch.shape[0] == 2:
                patch = patch[::-1]  # either half may be the input
            out[b] = patch
        return out


def _validate(net: torch.nn.Module, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean PSNR (dB) against the long images of ``net``'s output on the short ones."""
    if not pairs:
        return math.nan
    scores = []
    with training.evaluating(net):
        for short, long in pairs:
            scale = PET_UNITS.scale_for(short)
            x = torch.from_numpy(PET_UNITS.to_model(short, scale)[None, None])
            scores.append(psnr_db(PET_UNITS.from_model(net(x).numpy()[0, 0], scale), long))
    return float(np.mean(scores))


def train_pet(
    model: str,
    seed: int,
    out_dir: Path | None = None,
    *,
    images: TrainImages | None = None,
    steps: int | None = None,
    batch_size: int = DEFAULTS.batch_size,
    lr: float = DEFAULTS.lr,
    patch_px: int = DEFAULTS.patch_px,
    n_train: int = DEFAULTS.n_train,
    threads: int = 2,
    val_every: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train PET model ``model`` (a key of ``PET_SPECS``) from scratch; save weights and card.

    ``steps`` defaults to :data:`MODEL_STEPS`.
    Writes ``<out_dir>/pet_<model>.pt`` and ``pet_<model>.json``; ``out_dir`` defaults to the
    shipped weights folder. ``images``: what to train on (default: ``n_train`` simulated
    slices, :func:`engines.pet.data.training_images`). Returns the card. Blocking; runs on the
    calling thread with ``threads`` torch threads.
    """
    if model not in PET_SPECS:
        raise ValueError(f"unknown PET model {model!r}; choose from {sorted(PET_SPECS)}")
    method = PET_METHODS[model]
    steps = MODEL_STEPS[model] if steps is None else int(steps)
    if steps < 1 or batch_size < 1 or patch_px < 8 or patch_px % 4:
        raise ValueError("steps and batch_size must be positive, patch_px a multiple of 4 >= 8")
    t_data = time.perf_counter()
    if images is None:
        from engines.pet.data import training_images

        images = training_images(n_train, seed=seed, halves=method.target == "halves",
                                 n_val=DEFAULTS.n_val)
    data_s = time.perf_counter() - t_data
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    with training.deterministic_torch(threads):
        card, net = _train(model, seed, out, images, steps=steps, batch_size=batch_size,
                           lr=lr, patch_px=patch_px,
                           val_every=val_every or max(1, steps // 5), progress=progress)
    card["data"]["load_s"] = data_s
    card.update(training.run_record(
        net, threads=threads,
        command=command or _command(model, seed, steps, batch_size, lr, n_train, threads)))
    training.write_card(out / f"pet_{model}.json", card)
    return card


def _command(model: str, seed: int, steps: int, batch_size: int, lr: float, n_train: int,
             threads: int) -> str:
    """The command that retrains these weights: the non-default settings spelt out."""
    parts = [f"sigstream train pet --model {model} --seed {seed}"]
    for flag, value, default in (("--steps", steps, MODEL_STEPS[model]),
                                 ("--batch-size", batch_size, DEFAULTS.batch_size),
                                 ("--lr", lr, DEFAULTS.lr), ("--n-train", n_train,
                                                             DEFAULTS.n_train),
                                 ("--threads", threads, 2)):
        if value != default:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _train(model: str, seed: int, out: Path, images: TrainImages, *, steps: int,
           batch_size: int, lr: float, patch_px: int, val_every: int,
           progress: bool) -> tuple[dict[str, Any], torch.nn.Module]:
    spec, method = PET_SPECS[model], PET_METHODS[model]
    halves = method.target == "halves"
    patches = _Patches(images, patch_px=patch_px, halves=halves,
                       rng=training.data_rng(seed, _TRAIN_TAG))
    mask_rng = training.data_rng(seed, _MASK_TAG)
    torch.manual_seed(seed)
    net = spec.build()
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    milestones = sorted({max(1, math.floor(f * steps)) for f in _DECAY_AT})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.5)
    val_start = _validate(net, images.validation)
    val_input = (float(np.mean([psnr_db(s, lo) for s, lo in images.validation]))
                 if images.validation else math.nan)

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = training.progress_bar(steps, spec.name, enabled=progress)
    running = math.nan
    for step in bar:
        batch = patches.batch(batch_size)
        if halves:
            x, y = torch.from_numpy(batch[:, :1].copy()), torch.from_numpy(batch[:, 1:].copy())
            loss = torch.mean((net(x) - y) ** 2)
        else:
            assert method.masking is not None
            noisy = batch[:, 0]
            inputs, chosen = mask_batch(noisy, method.masking, mask_rng)
            pred = net(torch.from_numpy(inputs[:, None]))[:, 0]
            where = torch.from_numpy(chosen)
            loss = torch.mean((pred[where] - torch.from_numpy(noisy)[where]) ** 2)
        running = training.ema(running, training.optimiser_step(loss, optimiser, scheduler))
        if step % val_every == 0 or step == steps:
            history.append({"step": step, "train_loss_ema": running,
                            "val_psnr_db": _validate(net, images.validation),
                            "lr": optimiser.param_groups[0]["lr"],
                            "elapsed_s": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{running:.3e}", val=f"{history[-1]['val_psnr_db']:.2f}")
            if not progress or not sys.stderr.isatty():
                training.log_line(bar, history[-1])
    wall = time.perf_counter() - t0
    bar.close()
    net.eval()
    weights_path = out / spec.weights
    training.save_weights(net, weights_path)
    return {
        "model": model,
        "name": spec.name,
        "method": method.description,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "patch_px": patch_px,
        "lr": lr,
        "lr_schedule": f"x0.5 at steps {milestones}",
        "loss": ("MSE against the other half-count image" if halves
                 else "MSE at the masked pixels against their noisy values"),
        "masking": None if method.masking is None else vars(method.masking).copy(),
        "optimizer": "Adam",
        "data": {**images.source, "slices": int(images.short.shape[0]),
                 "shape": list(images.short.shape[1:]),
                 "sha256": hashlib.sha256(images.short.tobytes()).hexdigest()},
        "validation": {"pairs": len(images.validation),
                       "metric": "PSNR dB against the 10-minute image (whole slice)",
                       "short_psnr_db": val_input, "untrained_psnr_db": val_start,
                       "final_psnr_db": history[-1]["val_psnr_db"]},
        "history": history,
        "wall_s": wall,
        "step_s": wall / steps,
    }, net


def main(argv: list[str] | None = None) -> None:
    """Train one PET model on the simulation and print its card's headline figures."""
    parser = argparse.ArgumentParser(prog="python -m engines.pet.train", description=main.__doc__)
    parser.add_argument("--model", required=True, choices=sorted(PET_SPECS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr)
    parser.add_argument("--n-train", type=int, default=DEFAULTS.n_train)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    card = train_pet(args.model, args.seed, args.out_dir, steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, n_train=args.n_train,
                     threads=args.threads)
    v = card["validation"]
    print(f"{card['name']}: {card['steps']} steps in {card['wall_s']:.0f} s; validation PSNR "
          f"{v['final_psnr_db']:.2f} dB (2-minute input {v['short_psnr_db']:.2f} dB)")


if __name__ == "__main__":
    main()
