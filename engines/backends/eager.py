"""The eager backend: the model as torch runs it, the reference for every other backend.

:class:`EagerEngine` serves a model under the engine contract; :func:`eager_infer` and
:func:`run_batched` are the same eager call for offline code (training, evaluation, task
gates), which runs a module on any number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from engines.engine import Engine
from engines.errors import BackendUnavailableError

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["EagerEngine", "Infer", "eager_infer", "run_batched"]

#: A model as a function: float32 batch ``(B, *input)`` -> float32 ``(B, *output)``.
Infer = Callable[[np.ndarray], np.ndarray]


def eager_infer(module: torch.nn.Module) -> Infer:
    """``module`` as an :data:`Infer` under ``torch.inference_mode`` (the caller sets train or
    eval mode). Runs on the calling thread."""

    def infer(batch: np.ndarray) -> np.ndarray:
        # torch.from_numpy shares memory and warns on read-only buffers (arrays decoded from
        # wire frames are read-only), so those are copied once.
        if not batch.flags.writeable:
            batch = batch.copy()
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).to(torch.float32).numpy()

    return infer


def run_batched(infer: Infer, rows: np.ndarray, *, batch: int) -> np.ndarray:
    """``infer`` over ``rows`` ``(n, ...)``, ``batch`` rows at a time (``n >= 1``): the
    outputs in order, ``(n, ...)``. The batch size may change a result's last bits, so
    an offline figure records the batch it was computed with."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return np.concatenate([infer(rows[i : i + batch]) for i in range(0, rows.shape[0], batch)])


class EagerEngine(Engine):
    """torch eager on CPU under ``torch.inference_mode``, float32.

    ``threads`` sets torch's intra-op thread count, which is process-wide
    (``torch.set_num_threads``): it also changes every other eager engine in the process.
    """

    backend: ClassVar[str] = "eager"

    def __init__(
        self,
        spec: ModelSpec,
        module: torch.nn.Module,
        *,
        max_batch: int = 64,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision != "fp32":
            raise BackendUnavailableError(
                f"eager runs fp32 only (asked for {precision}); fp16 needs the tensorrt backend"
            )
        super().__init__(spec, max_batch=max_batch, precision=precision)
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        self._module: torch.nn.Module | None = module.eval()
        self._infer: Infer | None = eager_infer(module)

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, *, max_batch: int = 64, threads: int | None = None
    ) -> EagerEngine:
        """Load ``spec``'s weights and wrap the module."""
        return cls(spec, spec.load(), max_batch=max_batch, threads=threads)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self._infer is not None
        return self._infer(batch)

    def _release(self) -> None:
        self._module = None
        self._infer = None
