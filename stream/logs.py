"""How sigstream logs: one line per event, as text for a terminal or as JSON for a log collector
(``sigstream --log-format json``), the same in every process of a service (a stage process
takes its level and format from the supervisor: :func:`current_settings`).

A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``process``, ``logger``, ``message`` and,
for an exception, ``exception`` (its traceback).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging", "current_settings"]

LOG_FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": record.processName,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: int, log_format: str = "text") -> None:
    """Log records of ``level`` and above to stderr in ``log_format`` (``text`` or ``json``);
    nothing changes where the process has already configured its logging."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level, handlers=[handler])


def current_settings() -> tuple[int, str]:
    """This process's log level and format, for a process it starts."""
    root = logging.getLogger()
    json_handler = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return root.getEffectiveLevel(), "json" if json_handler else "text"
