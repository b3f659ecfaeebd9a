"""The eager backend: the model as torch runs it, the reference for every other backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from engines.engine import Engine
from engines.errors import BackendUnavailableError

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["EagerEngine"]


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

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, *, max_batch: int = 64, threads: int | None = None
    ) -> EagerEngine:
        """Load ``spec``'s weights and wrap the module."""
        return cls(spec, spec.load(), max_batch=max_batch, threads=threads)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self._module is not None
        # torch.from_numpy shares memory and warns on read-only buffers (arrays decoded from
        # wire frames are read-only), so those are copied once.
        if not batch.flags.writeable:
            batch = batch.copy()
        with torch.inference_mode():
            out = self._module(torch.from_numpy(batch))
        return out.to(torch.float32).numpy()

    def _release(self) -> None:
        self._module = None
