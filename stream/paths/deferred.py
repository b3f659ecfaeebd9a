"""Engine hooks of a path declaration, imported only when called.

Listing the paths (``sigstream --help``, the service's start) must not import the engines
(torch); a :class:`~stream.paths.spec.PathSpec` names its engine models and task gate by module
and attribute, and these wrappers import them the first time ``sigstream engines`` asks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["deferred_gate", "specs_at_service_batch"]


def deferred_gate(module: str, name: str) -> Callable[[ModelSpec, Any], Any]:
    """The task gate ``module.name(spec, engine)``, imported on its first call."""

    def gate(spec: ModelSpec, engine: Any) -> Any:
        return getattr(importlib.import_module(module), name)(spec, engine)

    return gate


def specs_at_service_batch(
    module: str, name: str
) -> Callable[[int], Mapping[str, tuple[ModelSpec, int]]]:
    """Engine models: every :class:`ModelSpec` of the mapping ``module.name``, each built for
    the service's batch bound (given when called)."""

    def engine_models(service_max_batch: int) -> Mapping[str, tuple[ModelSpec, int]]:
        specs: Mapping[str, ModelSpec] = getattr(importlib.import_module(module), name)
        return {spec.name: (spec, service_max_batch) for spec in specs.values()}

    return engine_models
