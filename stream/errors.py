"""Errors raised by :mod:`stream`.

    SigstreamError
    ├── WireError (ValueError)          a message that breaks wire format v1; carries a `code`
    │                                   and, where they could be read, the `stream` and `seq`
    ├── InputError (ValueError)         a well-formed message whose content breaks the path's
    │                                   input contract (wrong kind, 2-D, empty, NaN); has a `code`
    ├── StageError (RuntimeError)       a pipeline stage that failed to start or died
    └── ServiceError (RuntimeError)     a service that cannot start (endpoint in use, bad config)

Errors from :mod:`engines` (``engines.errors``) are translated at the boundary: an input that
breaks a model's contract becomes an ``error`` result for its sender, never a crash.
"""

from __future__ import annotations

__all__ = ["InputError", "ServiceError", "SigstreamError", "StageError", "WireError"]


class SigstreamError(Exception):
    """Base of every error raised by :mod:`stream`."""


class WireError(SigstreamError, ValueError):
    """A message that breaks wire format v1.

    ``code`` is a short machine-readable slug (``bad_msgpack``, ``missing_field``, ``bad_field``,
    ``payload_length``, ``bad_dtype``, ``oversize``, ``frame_count``, ``version``, ``bad_topic``);
    ``stream`` and ``seq`` are set where the header could be read that far.
    """

    def __init__(
        self, code: str, reason: str, *, stream: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.stream = stream
        self.seq = seq


class InputError(SigstreamError, ValueError):
    """A well-formed message that a path cannot serve; answered with an ``error`` result.

    ``code`` is a short slug (``wrong_kind``, ``bad_shape``, ``empty``, ``too_long``,
    ``input_contract``); ``stream`` and ``seq`` are those of the message when known.
    """

    def __init__(
        self, code: str, reason: str, *, stream: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.stream = stream
        self.seq = seq


class StageError(SigstreamError, RuntimeError):
    """A pipeline stage failed to start, or died while running."""


class ServiceError(SigstreamError, RuntimeError):
    """A service cannot start: endpoint in use, unknown path, bad configuration."""
