"""Engine hooks of a path declaration, imported only when called.

Listing the paths (``sigstream --help``, the service's start) must not import the engines
(torch); a :class:`~stream.paths.spec.PathSpec` names its engine models and task gate as
``"module:NAME"`` (as :func:`engines.spec.deferred_build` names a model), and these wrappers
import them the first time they are called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["deferred_gate", "load_attribute", "specs_at_service_batch"]


def load_attribute(ref: str) -> Any:
    """The object ``ref`` (``"module:NAME"``) names, its module imported now."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def deferred_gate(ref: str) -> Callable[[ModelSpec, Any], Any]:
    """The task gate ``ref(spec, engine)``, imported on its first call."""

    def gate(spec: ModelSpec, engine: Any) -> Any:
        return load_attribute(ref)(spec, engine)

    return gate


def specs_at_service_batch(ref: str) -> Callable[[int], Mapping[str, tuple[ModelSpec, int]]]:
    """Engine models: every :class:`ModelSpec` of the mapping ``ref``, each built for the
    service's batch bound (given when called)."""

    def engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
        specs: Mapping[str, ModelSpec] = load_attribute(ref)
        return {spec.name: (spec, service_max_batch) for spec in specs.values()}

    return engine_models
