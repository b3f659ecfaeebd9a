"""Errors raised by :mod:`stream`: its branch of the project's one tree, which is drawn in
:mod:`devices.errors` (the root, :class:`SigstreamError`, lives there because every layer may
import :mod:`devices`; it and :class:`ConfigError` are re-exported here).

Errors from :mod:`engines` and :mod:`devices` are already :class:`SigstreamError`; at the
service boundary an input that breaks a model's contract becomes an ``error`` result for its
sender, never a crash. ``stream.queues.QueueClosed`` lives beside its queue.
"""

from __future__ import annotations

from devices.errors import ConfigError, SigstreamError

__all__ = [
    "ConfigError",
    "InputError",
    "MessageError",
    "SecurityError",
    "ServiceError",
    "SigstreamError",
    "StageError",
    "WireError",
]


class MessageError(SigstreamError, ValueError):
    """A message the service answers with an ``error`` result instead of serving it.

    ``code`` is a short machine-readable slug; ``stream`` and ``seq`` are those of the message
    where they could be read.
    """

    def __init__(
        self, code: str, reason: str, *, stream: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.stream = stream
        self.seq = seq


class WireError(MessageError):
    """A message that breaks wire format v1 (codes ``bad_msgpack``, ``missing_field``,
    ``bad_field``, ``payload_length``, ``bad_dtype``, ``oversize``, ``frame_count``, ``version``,
    ``bad_topic``)."""


class InputError(MessageError):
    """A well-formed message that a path cannot serve (codes ``wrong_kind``, ``bad_shape``,
    ``empty``, ``too_long``, ``input_contract``)."""


class SecurityError(SigstreamError, ValueError):
    """Keys that cannot be used (missing, malformed, a secret file others can read), or an
    endpoint that would be reachable from the network without keys."""


class StageError(SigstreamError, RuntimeError):
    """A pipeline stage failed to start, or died while running."""


class ServiceError(SigstreamError, RuntimeError):
    """A service cannot start: endpoint in use, unknown path, bad configuration."""
