"""Model specs: a model travels with its input contract and the weights that fit it."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.errors import WeightsError, WeightsMismatchError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

__all__ = ["ModelSpec", "deferred_build"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A frozen description of one model: how to build it, what it eats, where its weights are.

    ``input_shape`` and ``output_shape`` describe one item, without the batch axis; engines take
    and return ``(batch, *shape)`` float32 arrays. ``weights``: the file in ``weights_dir`` (the
    ``weights/`` folder beside the model's family, with the training cards), or an absolute
    path.
    """

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weights: str
    weights_dir: Path
    dtype: str = "float32"
    sample_rate_hz: float | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return self.weights_dir / self.weights

    @property
    def card_path(self) -> Path:
        """JSON sidecar written by training: seed, steps, budget, validation figures."""
        return self.weights_path.with_suffix(".json")

    def weights_sha256(self) -> str:
        try:
            return hashlib.sha256(self.weights_path.read_bytes()).hexdigest()
        except FileNotFoundError as exc:
            raise WeightsNotFoundError(
                f"{self.name}: no weights at {self.weights_path}; train them with `sigstream train`"
            ) from exc
        except OSError as exc:
            raise WeightsError(f"{self.name}: cannot read weights {self.weights_path}") from exc

    def card(self) -> dict[str, Any]:
        try:
            return json.loads(self.card_path.read_text())
        except (OSError, ValueError):
            return {}

    def load(self, path: Path | None = None) -> torch.nn.Module:
        """Build the module, load its weights (safe, tensors only) and put it in eval mode."""
        import torch  # deferred: processes that only move bytes never load torch

        path = path or self.weights_path
        module = self.build()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise WeightsNotFoundError(
                f"{self.name}: no weights at {path}; train them with `sigstream train`"
            ) from exc
        except OSError as exc:  # there, but not readable (permissions, a directory)
            raise WeightsError(f"{self.name}: cannot read weights {path}: {exc}") from exc
        except Exception as exc:  # torch raises many types for a corrupt file
            raise WeightsMismatchError(f"{self.name}: unreadable weights {path}: {exc}") from exc
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsMismatchError(
                f"{self.name}: weights {path} do not fit the model: {exc}"
            ) from exc
        return module.eval()


def deferred_build(target: str, *args: Any, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    """A :attr:`ModelSpec.build` that imports its class on call: ``target`` is
    ``"module:Class"``, called with ``args`` and ``kwargs``. Listing specs, hashing weights and
    loading a compiled engine need no torch; the result pickles (process pools, Ray)."""
    return functools.partial(_build, target, *args, **kwargs)


def _build(target: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
    module, _, name = target.partition(":")
    model: torch.nn.Module = getattr(importlib.import_module(module), name)(*args, **kwargs)
    return model
