"""Turning arrays into answers: model specs, backends, the engine cache and the batcher.

Importing :mod:`engines` does not load torch; building or loading a model does.
"""

from engines.batcher import BatcherConfig, DynamicBatcher
from engines.cache import EngineCache
from engines.engine import Engine, load_engine, resolve_backend
from engines.errors import (
    AccuracyGateError,
    BackendUnavailableError,
    EngineError,
    InputContractError,
    WeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from engines.spec import ModelSpec

__all__ = [
    "AccuracyGateError",
    "BackendUnavailableError",
    "BatcherConfig",
    "DynamicBatcher",
    "Engine",
    "EngineCache",
    "EngineError",
    "InputContractError",
    "ModelSpec",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "load_engine",
    "resolve_backend",
]
