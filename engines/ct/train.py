"""Training of the CT denoisers on phantom pairs (paper §5): low-dose slice in, normal-dose out.

Entry point: :func:`train_ct` (``python -m engines.ct.train --model red_cnn --seed 0``).

Protocol:

- Data: :func:`engines.ct.data.load_pairs`: ``n_phantoms`` training phantoms at 512² (500 mm
  FOV, 0.98 mm pixels, 720 views), each with its reference at dose 1 and
  ``doses_per_phantom`` low-dose scans at doses uniform in [0.10, 0.50]; simulated once and
  cached under ``.data/ct/`` (the first run of a seed simulates its 160 phantoms: ~20 min on
  one core, about half with ``workers=2``). Patches of ``patch_px``² (default 64²) centred on
  body pixels, random left-right / up-down flips (:class:`~engines.ct.data.PatchSampler`).
- Loss MSE on normalised HU (``(HU + 1000) / 1000``); Adam; the learning rate halves at 50 %,
  75 % and 90 % of the steps (lr/8 for the last 10 %), as the other families do.
- Validation (recorded in the card, never used to pick weights): ``n_val`` validation
  phantoms (disjoint seeds, :func:`~engines.ct.data.phantom_seed`) at dose 0.25, whole slices,
  PSNR in the soft-tissue window inside the body against the reference; the low-dose input's
  PSNR beside it.
- Determinism: ``torch.manual_seed(seed)`` before the model is built,
  ``torch.use_deterministic_algorithms(True)``, numpy streams ``SeedSequence([seed, tag])``,
  ``threads`` torch threads (2 by default). Same seed, steps, batch and threads on the same
  machine and torch build give the same weights, byte for byte.

Per-model defaults (:data:`MODEL_DEFAULTS`), sized for ~35-40 min each on 2 idle cores
(measured: median step of 16 patches of 64², 2 threads): RED-CNN does ~10x the arithmetic per
pixel of the UNet (96 channels of 5 x 5 at full resolution), 2.3 s per step, so 1,000 steps;
the residual UNet (widths 16-128) 0.08 s per step, so 25,000 steps. With other work on the
machine both slow down up to 3x. Each run validates 5 times (RED-CNN: ~25 s each).

RED-CNN's learning rate and initialisation, measured (120 steps of 4 patches, validation PSNR
at dose 0.25, low-dose input 19.65 dB): with torch's default initialisation lr 1e-4 gave
20.57 dB, 3e-4 19.98 dB, 1e-3 19.73 dB (diverged); with the paper's N(0, 0.01) weights,
which start the network near the identity, lr 1e-4 gave 21.71 dB. So: the paper's
initialisation and learning rate.

Which UNet, measured (seed 0, the same 32 phantoms, batch 16, gains in PSNR over the low-dose
input at dose 0.25 on 4 validation phantoms / on the real ``693_UNCR`` and ``explicit_VR-UN``
slices): widths 32-256 (MONAI's default), 600 steps: +5.54 / +6.23 dB; widths 16-128, 600
steps: +5.18 / +5.92 dB; widths 16-128, 1600 steps (the same training time, each step 2.75x
cheaper): +5.62 / +6.31 dB. A tie for equal training time, and the narrow one serves 2-3x
faster: :data:`~engines.ct.specs.UNET_FEATURES` = 16-128.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines import training
from engines.ct.data import (
    CACHE_DIR,
    CtDataConfig,
    PatchSampler,
    cache_path,
    load_pairs,
    scanned_phantoms,
)
from engines.ct.metrics import SOFT_TISSUE_WINDOW_HU, psnr_db
from engines.ct.specs import CT_SPECS, CT_UNITS, WEIGHTS_DIR

__all__ = [
    "DEFAULT_N_PHANTOMS",
    "MODEL_DEFAULTS",
    "VALIDATION_DOSE",
    "ModelDefaults",
    "main",
    "train_ct",
]

DEFAULT_N_PHANTOMS = 96
VALIDATION_DOSE = 0.25
_TRAIN_TAG = 1
_DECAY_AT = (0.5, 0.75, 0.9)


@dataclass(frozen=True, kw_only=True)
class ModelDefaults:
    """A model's default run: ``steps`` of ``batch_size`` patches at learning rate ``lr``."""

    steps: int
    batch_size: int
    lr: float


MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    "red_cnn": ModelDefaults(steps=300, batch_size=16, lr=1e-4),
    "unet": ModelDefaults(steps=6_000, batch_size=16, lr=1e-3),
}


def _validate(net: nn.Module, sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Mean PSNR (dB, soft-tissue window, inside the body) of ``net`` on whole slices."""
    scores = []
    with training.evaluating(net):
        for low, ref, body in sets:
            x = torch.from_numpy(CT_UNITS.to_model(low)[None, None])
            out = CT_UNITS.from_model(net(x).numpy()[0, 0])
            scores.append(psnr_db(out, ref, mask=body))
    return float(np.mean(scores))


def train_ct(
    model: str,
    seed: int,
    out_dir: Path | None = None,
    steps: int | None = None,
    *,
    batch_size: int | None = None,
    lr: float | None = None,
    patch_px: int = 64,
    n_phantoms: int = DEFAULT_N_PHANTOMS,
    data_config: CtDataConfig | None = None,
    cache_dir: Path | None = CACHE_DIR,
    workers: int = 1,
    threads: int = 2,
    n_val: int = 4,
    val_every: int | None = None,
    budget_s: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train CT model ``model`` (a key of ``CT_SPECS``) from scratch; save weights and card.

    Writes ``<out_dir>/ct_<model>.pt`` (state_dict) and ``ct_<model>.json`` (the card);
    ``out_dir`` defaults to the shipped weights folder. ``steps``, ``batch_size``, ``lr``
    default to :data:`MODEL_DEFAULTS`. ``budget_s``: stop after the step that passes this wall
    time (the card records the steps run; a rerun with those steps reproduces the weights).
    ``workers``: processes simulating the training set when it is not cached. Returns the
    card. Blocking; runs on the calling thread with ``threads`` torch threads.
    """
    if model not in CT_SPECS:
        raise ValueError(f"unknown CT model {model!r}; choose from {sorted(CT_SPECS)}")
    defaults = MODEL_DEFAULTS[model]
    steps = defaults.steps if steps is None else int(steps)
    batch_size = defaults.batch_size if batch_size is None else int(batch_size)
    lr = defaults.lr if lr is None else float(lr)
    if steps < 1 or batch_size < 1 or n_phantoms < 1 or n_val < 1:
        raise ValueError("steps, batch_size, n_phantoms and n_val must be positive")
    config = data_config or CtDataConfig()
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    run = _Run(model=model, seed=seed, out=out, steps=steps, batch_size=batch_size, lr=lr,
               patch_px=patch_px, n_phantoms=n_phantoms, config=config, cache_dir=cache_dir,
               workers=workers, threads=threads, n_val=n_val,
               val_every=val_every or max(1, steps // 5), budget_s=budget_s)
    with training.deterministic_torch(threads):
        return _train(run, log, progress)


@dataclass(frozen=True, kw_only=True)
class _Run:
    """The settings of one training run (the arguments of :func:`train_ct`, resolved)."""

    model: str
    seed: int
    out: Path
    steps: int
    batch_size: int
    lr: float
    patch_px: int
    n_phantoms: int
    config: CtDataConfig
    cache_dir: Path | None
    workers: int
    threads: int
    n_val: int
    val_every: int
    budget_s: float | None


def _command(run: _Run, done: int) -> str:
    """The command that retrains these weights: the non-default settings spelt out."""
    defaults = MODEL_DEFAULTS[run.model]
    parts = [f"python -m engines.ct.train --model {run.model} --seed {run.seed}"]
    if done != defaults.steps:
        parts.append(f"--steps {done}")
    if run.batch_size != defaults.batch_size:
        parts.append(f"--batch-size {run.batch_size}")
    if run.lr != defaults.lr:
        parts.append(f"--lr {run.lr}")
    if run.n_phantoms != DEFAULT_N_PHANTOMS:
        parts.append(f"--n-phantoms {run.n_phantoms}")
    if run.config != CtDataConfig(size_px=run.config.size_px):
        parts.append("(data config: see the card)")
    if run.config.size_px != CtDataConfig().size_px:
        parts.append(f"--size {run.config.size_px}")
    if run.threads != 2:
        parts.append(f"--threads {run.threads}")
    return " ".join(parts)


def _train(run: _Run, log: Callable[[str], None], progress: bool) -> dict[str, Any]:
    spec = CT_SPECS[run.model]
    config = run.config
    t_data = time.perf_counter()
    pairs = load_pairs(run.n_phantoms, config=config, seed=run.seed, cache_dir=run.cache_dir,
                       workers=run.workers, log=log)
    val_sets = [(s.low[VALIDATION_DOSE], s.reference, s.phantom.body)
                for s in scanned_phantoms("validation", run.n_val, config=config,
                                          doses=(VALIDATION_DOSE,))]
    data_s = time.perf_counter() - t_data
    val_low = float(np.mean([psnr_db(low, ref, mask=body) for low, ref, body in val_sets]))

    torch.manual_seed(run.seed)
    net = spec.build()
    net.train()
    sampler = PatchSampler(pairs, patch_px=run.patch_px,
                           rng=training.data_rng(run.seed, _TRAIN_TAG))
    optimiser = torch.optim.Adam(net.parameters(), lr=run.lr)
    milestones = sorted({max(1, math.floor(f * run.steps)) for f in _DECAY_AT})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.5)
    loss_fn = nn.MSELoss()

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = training.progress_bar(run.steps, f"ct_{run.model}", enabled=progress)
    running = float("nan")
    done = 0
    for step in bar:
        x, y = sampler.batch(run.batch_size)
        loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
        running = training.ema(running, training.optimiser_step(loss, optimiser, scheduler))
        done = step
        out_of_time = run.budget_s is not None and time.perf_counter() - t0 >= run.budget_s
        if step % run.val_every == 0 or step == run.steps or out_of_time:
            history.append({
                "step": step,
                "train_mse_ema": running,
                "val_psnr_db": _validate(net, val_sets),
                "lr": optimiser.param_groups[0]["lr"],
                "elapsed_s": time.perf_counter() - t0,
            })
            bar.set_postfix(loss=f"{running:.2e}", val=f"{history[-1]['val_psnr_db']:.2f}")
            if not progress or not sys.stderr.isatty():
                training.log_line(bar, history[-1])
        if out_of_time:
            break
    wall = time.perf_counter() - t0
    bar.close()

    net.eval()
    weights_path = run.out / spec.weights
    training.save_weights(net, weights_path)
    card: dict[str, Any] = {
        "model": run.model,
        "name": spec.name,
        "seed": run.seed,
        "steps": done,
        "steps_planned": run.steps,
        "batch_size": run.batch_size,
        "patch_px": run.patch_px,
        "lr": run.lr,
        "lr_schedule": f"x0.5 at steps {milestones} (lr/8 at the end)",
        "loss": "MSE on (HU + 1000) / 1000",
        "optimizer": "Adam",
        "data": {
            "n_phantoms": run.n_phantoms,
            "config": asdict(config),
            "views": config.n_views,
            "pixel_mm": pairs.pixel_mm,
            "regions": {r: pairs.regions.count(r) for r in sorted(set(pairs.regions))},
            "cache": None if run.cache_dir is None
            else cache_path(config, run.n_phantoms, run.seed, Path(run.cache_dir)).name,
            "phantom_seeds": "3 * ((2 * seed + region) * 10**6 + k) + 0 (training)",
            "patches": f"{run.patch_px}² centred on body pixels, random flips",
            "sha256": hashlib.sha256(pairs.reference.tobytes() + pairs.low.tobytes())
            .hexdigest(),
            "simulate_or_load_s": data_s,
        },
        "validation": {
            "n_phantoms": run.n_val,
            "dose": VALIDATION_DOSE,
            "metric": f"PSNR dB, window {list(SOFT_TISSUE_WINDOW_HU)} HU, inside the body",
            "low_dose_psnr_db": val_low,
            "final_psnr_db": history[-1]["val_psnr_db"],
        },
        "history": history,
        "wall_s": wall,
        "step_s": wall / max(done, 1),
        **training.run_record(net, threads=run.threads, command=_command(run, done)),
    }
    training.write_card(weights_path.with_suffix(".json"), card)
    return card


def main(argv: list[str] | None = None) -> None:
    """Train one CT model and print its card's headline figures."""
    parser = argparse.ArgumentParser(prog="python -m engines.ct.train", description=main.__doc__)
    parser.add_argument("--model", required=True, choices=sorted(CT_SPECS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--n-phantoms", type=int, default=DEFAULT_N_PHANTOMS)
    parser.add_argument("--size", type=int, default=CtDataConfig().size_px,
                        help="training slice grid (px) over the 500 mm FOV")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes simulating the training set if it is not cached")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--budget-s", type=float, default=None)
    args = parser.parse_args(argv)
    card = train_ct(args.model, args.seed, args.out_dir, args.steps, batch_size=args.batch_size,
                    lr=args.lr, n_phantoms=args.n_phantoms, workers=args.workers,
                    data_config=CtDataConfig(size_px=args.size), threads=args.threads,
                    budget_s=args.budget_s)
    print(f"{card['name']}: {card['steps']} steps in {card['wall_s']:.0f} s; validation PSNR "
          f"{card['validation']['final_psnr_db']:.2f} dB (low dose "
          f"{card['validation']['low_dose_psnr_db']:.2f} dB)")


if __name__ == "__main__":
    main()
