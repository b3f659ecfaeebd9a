"""Training of the 1D ROI segmenters on simulated spectra (paper §1).

Entry point: :func:`train_roi` — what ``sigstream train roi --model X --seed N`` calls.

Protocol and where it departs from the paper:

- Data: the paper draws 120k/30k/30k train/validation/test spectra once. We simulate training
  spectra on the fly with :func:`devices.spectra_sim.simulate` (default config = paper's
  protocol), a fresh batch every step, so every training spectrum is distinct
  (``steps * batch_size`` of them) and there is nothing to overfit.
- Seeds and split. Each purpose has its own random stream, derived with
  ``numpy.random.SeedSequence`` from distinct entropy, so the streams never coincide:
  training ``[seed, 1]``, validation ``[seed, 2]`` (a fixed set of ``val_size`` spectra),
  test ``[ROI_TEST_SEED, 3]`` — the test stream does not depend on the training seed and is
  never drawn by training; evaluation takes it from :func:`roi_data_rng` ("test").
- Loss BCEWithLogits; Adam, lr 5e-4 (paper); batch 64 (paper: 500), 5000 steps by default:
  a CPU budget of ~20-45 min per model at 1 thread (0.15-0.6 s/step depending on model and on
  how busy the two cores are). 320k distinct spectra, vs the paper's 120k x up to 1300 epochs.
- Stop rule. The paper stops when the learning rate has decayed to 1/8 of its start. With
  on-the-fly data the validation loss barely plateaus within a CPU budget, so a
  ReduceLROnPlateau would rarely fire and the run length would be unpredictable; instead a fixed
  step decay halves the lr at 50 %, 75 % and 90 % of the steps (the three halvings a plateau
  scheduler would make), reaching lr/8 for the last 10 % and stopping at the end. Deterministic
  and with a known wall time.
- Determinism: ``torch.manual_seed(seed)``, numpy generators seeded as above, 1 torch thread by
  default (also lets two runs share two cores). Same seed, steps, batch and threads ->
  the same weights on the same machine and torch build.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from devices.spectra_sim import SpectrumSimConfig, simulate
from engines import training
from engines.roi.specs import ROI_LENGTH, ROI_SPECS, WEIGHTS_DIR

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STEPS",
    "ROI_TEST_SEED",
    "roi_data_rng",
    "train_roi",
]

DEFAULT_STEPS = 5000
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 5e-4
ROI_TEST_SEED = 20_260_001  # fixed: the evaluation test set; never drawn by training
_STREAM_TAG = {"train": 1, "validation": 2, "test": 3}
_DECAY_AT = (0.5, 0.75, 0.9)  # fractions of the run where the lr halves (-> lr/8)


def roi_data_rng(
    purpose: Literal["train", "validation", "test"], seed: int = 0
) -> np.random.Generator:
    """Random generator for one data purpose. ``seed`` is ignored for ``"test"``."""
    if purpose not in _STREAM_TAG:
        raise ValueError(f"unknown purpose {purpose!r}")
    return training.data_rng(ROI_TEST_SEED if purpose == "test" else seed, _STREAM_TAG[purpose])


def _batch(
    n: int, config: SpectrumSimConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    b = simulate(n, config=config, rng=rng)
    x = torch.from_numpy(b.spectra).unsqueeze(1)
    y = torch.from_numpy(b.roi.astype(np.float32)).unsqueeze(1)
    return x, y


@torch.no_grad()
def _validate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256
) -> dict[str, float]:
    """Mean BCE and mask error (fraction of samples where sigmoid>0.5 disagrees with truth)."""
    model.eval()
    bce = 0.0
    wrong = 0.0
    for i in range(0, x.shape[0], chunk):
        logits = model(x[i : i + chunk])
        t = y[i : i + chunk]
        bce += float(nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="sum"))
        wrong += float(((logits > 0).float() != t).sum())
    model.train()
    n = y.numel()
    return {"bce": bce / n, "mask_error": wrong / n}


def train_roi(
    *,
    model: str,
    seed: int,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    out_dir: Path | None = None,
    progress: bool = True,
    threads: int = 1,
    val_size: int = 2048,
    val_every: int | None = None,
    lr: float = DEFAULT_LR,
) -> dict[str, Any]:
    """Train ROI model ``model`` (a key of ``ROI_SPECS``) from scratch; save weights and card.

    Writes ``<out_dir>/roi_<model>.pt`` (state_dict) and ``roi_<model>.json`` (card);
    ``out_dir`` defaults to the shipped weights folder. Returns the card (a dict).
    Blocking; runs on the calling thread with ``threads`` torch threads.
    """
    if model not in ROI_SPECS:
        raise ValueError(f"unknown ROI model {model!r}; choose from {sorted(ROI_SPECS)}")
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    spec = ROI_SPECS[model]
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = SpectrumSimConfig(length=ROI_LENGTH)
    train_rng = roi_data_rng("train", seed)
    x_val, y_val = _batch(val_size, config, roi_data_rng("validation", seed))

    net = spec.build()
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    milestones = sorted({max(1, math.floor(f * steps)) for f in _DECAY_AT})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.5)
    loss_fn = nn.BCEWithLogitsLoss()
    val_every = val_every or max(1, steps // 10)

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = training.progress_bar(steps, f"roi_{model}", enabled=progress)
    running = float("nan")
    for step in bar:
        x, y = _batch(batch_size, config, train_rng)
        loss = loss_fn(net(x), y)
        running = training.ema(running, training.optimiser_step(loss, optimiser, scheduler))
        if step % val_every == 0 or step == steps:
            metrics = _validate(net, x_val, y_val)
            history.append(
                {
                    "step": step,
                    "train_bce_ema": running,
                    "val_bce": metrics["bce"],
                    "val_mask_error": metrics["mask_error"],
                    "lr": optimiser.param_groups[0]["lr"],
                    "elapsed_s": time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{running:.4f}", val=f"{metrics['bce']:.4f}")
            if not progress or not sys.stderr.isatty():
                training.log_line(bar, history[-1])
        elif progress and step % 50 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
    wall = time.perf_counter() - t0
    bar.close()

    net.eval()
    weights_path = out / spec.weights
    training.save_weights(net, weights_path)

    final = history[-1]
    command = f"sigstream train roi --model {model} --seed {seed}"
    if steps != DEFAULT_STEPS:
        command += f" --steps {steps}"
    card: dict[str, Any] = {
        "model": model,
        "name": spec.name,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "lr_schedule": f"x0.5 at steps {milestones} (lr/8 at the end)",
        "loss": "BCEWithLogits",
        "optimizer": "Adam",
        "training_spectra_seen": steps * batch_size,
        "training_spectra_note": "simulated on the fly, all distinct (paper: 120k fixed)",
        "data_streams": {
            "train": [seed, _STREAM_TAG["train"]],
            "validation": [seed, _STREAM_TAG["validation"]],
            "test": [ROI_TEST_SEED, _STREAM_TAG["test"]],
        },
        "simulator": "devices.spectra_sim.SpectrumSimConfig() defaults (length 512)",
        "val_size": val_size,
        "final_val_bce": final["val_bce"],
        "final_val_mask_error": final["val_mask_error"],
        "history": history,
        "wall_s": wall,
        "step_s": wall / steps,
        **training.run_record(net, threads=threads, command=command),
    }
    training.write_card(weights_path.with_suffix(".json"), card)
    return card
