"""Remove secrets from text before it is logged or shown.

Connection strings carry passwords (``mongodb://user:secret@host``), and client
configuration dumps carry SASL passwords. Both are masked; the rest stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# scheme://user:password@host  ->  scheme://user:***@host
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<password>[^@\s]+)@")
# password=..., sasl.password: ..., "password": "..." (query strings, configs, JSON)
_KEY_VALUE_SECRET = re.compile(
    r"(?P<key>[\w.\-]*(?:password|passwd|secret|token|api[_-]?key)[\w.\-]*)"
    r"(?P<separator>[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s&\"',;}]+)",
    re.IGNORECASE,
)
_SECRET_KEYS = re.compile(r"password|passwd|secret|token|api[_-]?key", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask credentials in connection strings and ``key=value`` secrets."""
    text = _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KEY_VALUE_SECRET.sub(lambda m: f"{m['key']}{m['separator']}{MASK}", text)


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a configuration mapping with secret values masked, for logging."""
    return {
        key: MASK if _SECRET_KEYS.search(key) else (redact(value) if isinstance(value, str) else value)
        for key, value in values.items()
    }


__all__ = ["MASK", "redact", "redact_mapping"]
