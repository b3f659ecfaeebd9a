"""sigstream's moving parts: wire format, pipeline service, sources, sinks and the CLI.

Importing :mod:`stream` never loads torch: only engine worker processes do.
"""

from stream.errors import InputError, ServiceError, SigstreamError, StageError, WireError
from stream.results import ResultsClient
from stream.service import Service, ServiceConfig, serve
from stream.wire import Message, WireLimits, data_message, decode, encode, error_message

__all__ = [
    "InputError",
    "Message",
    "ResultsClient",
    "Service",
    "ServiceConfig",
    "ServiceError",
    "SigstreamError",
    "StageError",
    "WireError",
    "WireLimits",
    "data_message",
    "decode",
    "encode",
    "error_message",
    "serve",
]
