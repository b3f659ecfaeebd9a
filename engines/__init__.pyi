# The names `engines` exports; `__init__.py` loads each from its module on first use.
from .batcher import BatcherConfig, DynamicBatcher
from .cache import EngineCache
from .engine import Engine, load_engine, resolve_backend
from .errors import (
    AccuracyGateError,
    BackendUnavailableError,
    EngineError,
    InputContractError,
    WeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .spec import ModelSpec

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
