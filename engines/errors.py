"""Errors raised by :mod:`engines`: the ``EngineError`` branch of the project's one tree, which
is drawn in :mod:`devices.errors` (its root, :class:`SigstreamError`, and :class:`ConfigError`
are re-exported here so that engine code imports its errors from one place).

A path's own errors live beside the path and derive from :class:`EngineError`
(``engines.ecg.templates.TemplateStoreError``, ``engines.codec.bitstream.BitstreamError``,
``engines.codec.container.ContainerError``).
"""

from __future__ import annotations

from devices.errors import ConfigError, SigstreamError

__all__ = [
    "AccuracyGateError",
    "BackendUnavailableError",
    "ConfigError",
    "EngineError",
    "InputContractError",
    "SigstreamError",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
]


class EngineError(SigstreamError):
    """Base of every error raised by :mod:`engines`."""


class WeightsError(EngineError):
    """Weights that cannot be used. Raised as such only for a file that exists but cannot be
    read (permissions); catch it to handle both of its subclasses."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weights (or no training card) where the model expects them: train them first."""


class WeightsMismatchError(WeightsError, ValueError):
    """Weights that exist but do not fit the model: a corrupt file, another model's weights,
    tensors of the wrong shape, an unreadable card."""


class InputContractError(EngineError, ValueError):
    """An input array breaks the model's contract (shape, dtype, finite values). ``code``: the
    wire error code a service answers it with (``bad_dtype``, ``bad_shape``, ``empty``,
    ``too_long``, or ``input_contract`` for anything else)."""

    def __init__(self, message: str, *, code: str = "input_contract") -> None:
        super().__init__(message)
        self.code = code


class BackendUnavailableError(EngineError, RuntimeError):
    """The requested backend cannot run here (library not installed, no CUDA device)."""


class AccuracyGateError(EngineError, RuntimeError):
    """A compiled engine's outputs differ from eager beyond the stated tolerance."""
