"""JSON log lines on stderr, one object per line, secrets masked.

Every record carries ``ts``, ``level``, ``logger``, ``service`` and ``message``, plus
whatever the caller passes in ``extra=`` (``logger.info("flushed", extra={"rows": 10})``).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from lakehouse_common.redaction import redact

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON with secrets redacted."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter below WARNING adds noise, not information.
    for noisy in ("py4j", "kafka", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


__all__ = ["JsonFormatter", "configure_logging"]
