# The names `stream` exports; `__init__.py` loads each from its module on first use.
from .errors import InputError, ServiceError, SigstreamError, StageError, WireError
from .results import ResultsClient
from .service import Service, ServiceConfig
from .serving import serve
from .wire import Message, WireLimits, data_message, decode, encode, error_message

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
