"""What every training run shares: seeded data streams, the progress bar, the running loss,
and the weights and card it writes.

A path's ``train.py`` (``engines/<path>/train.py``) owns its data, model, loss and card fields;
the pieces here are those that must behave the same for every path, so that a shipped model
retrains bit-identically (same seed, steps and threads on the same machine and torch build).

Blocking and single-threaded: called from the thread that runs the training.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

__all__ = [
    "data_rng",
    "deterministic_torch",
    "ema",
    "evaluating",
    "log_line",
    "optimiser_step",
    "progress_bar",
    "run_record",
    "save_weights",
    "write_card",
]

def data_rng(seed: int, tag: int) -> np.random.Generator:
    """The random stream ``SeedSequence([seed, tag])``: one ``tag`` per purpose (batch order,
    augmentation, validation set...), so the streams of one seed never coincide."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """torch on ``threads`` threads with deterministic algorithms for the block, the
    process-wide settings put back afterwards (tests train inside a larger process)."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def progress_bar(steps: int, desc: str, *, enabled: bool) -> tqdm[int]:
    """A bar over steps ``1..steps`` on stderr; redrawn at most every 5 s on a terminal and
    every 30 s in a log, where a redraw is a line of its own."""
    return tqdm(
        range(1, steps + 1),
        desc=desc,
        disable=not enabled,
        mininterval=5.0 if sys.stderr.isatty() else 30.0,
        file=sys.stderr,
    )


def log_line(bar: tqdm[int], record: dict[str, Any]) -> None:
    """Write one history record as a JSON line under the bar (stderr)."""
    bar.write(json.dumps(record), file=sys.stderr)


def ema(running: float, value: float) -> float:
    """The running mean after ``value``: ``value`` itself when ``running`` is NaN (the first
    step), else ``0.98 * running + 0.02 * value``."""
    # spelt out: 1 - 0.98 is not 0.02 in floating point, and the cards record these values
    return value if math.isnan(running) else 0.98 * running + 0.02 * value


@contextlib.contextmanager
def evaluating(net: nn.Module) -> Iterator[None]:
    """``net`` in eval mode without autograd for the block (a validation pass in the middle
    of training), back in training mode afterwards."""
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        net.train()


def optimiser_step(
    loss: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    """One training step on the scalar ``loss``: clear the gradients, backpropagate, step the
    optimiser, then the learning-rate schedule (per step, not per epoch). Returns the loss as a
    float, for :func:`ema`."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    scheduler.step()
    return float(loss.item())


def save_weights(net: nn.Module, path: Path) -> None:
    """Write ``net``'s state dict to ``path`` atomically (through ``<stem>.pt.tmp``).

    torch names the archive inside a ``.pt`` file after the file it writes, so the temporary
    name is part of the file's bytes: changing it changes the sha256 of every shipped model.
    """
    tmp = path.with_suffix(".pt.tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)


def run_record(net: nn.Module, *, threads: int, command: str) -> dict[str, Any]:
    """The card's closing fields: torch threads, trainable parameters, library versions and
    the command that retrains the model."""
    return {
        "threads": threads,
        "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "command": command,
    }


def write_card(path: Path, card: dict[str, Any]) -> None:
    """Write a model card: indented JSON and a final newline, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(path)
