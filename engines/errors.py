"""Errors raised by engines.

    EngineError
    ├── WeightsError (FileNotFoundError)     shipped weights missing or not matching the spec
    ├── InputContractError (ValueError)      an array that breaks a model's input contract
    ├── BackendUnavailableError (RuntimeError)  a backend whose library or device is absent
    └── AccuracyGateError (RuntimeError)     a compiled engine that disagrees with eager
"""

from __future__ import annotations

__all__ = [
    "AccuracyGateError",
    "BackendUnavailableError",
    "EngineError",
    "InputContractError",
    "WeightsError",
]


class EngineError(Exception):
    """Base of every error raised by :mod:`engines`."""


class WeightsError(EngineError, FileNotFoundError):
    """Shipped weights are missing, unreadable or do not fit the model spec."""


class InputContractError(EngineError, ValueError):
    """An input array breaks the model's contract (shape, dtype, finite values)."""


class BackendUnavailableError(EngineError, RuntimeError):
    """The requested backend cannot run here (library not installed, no CUDA device)."""


class AccuracyGateError(EngineError, RuntimeError):
    """A compiled engine's outputs differ from eager beyond the stated tolerance."""
