"""Secrets never reach logs: connection strings and SASL passwords are masked."""

from __future__ import annotations

import io
import json
import logging

from lakehouse_common.json_logging import JsonFormatter
from lakehouse_common.redaction import redact, redact_mapping


def test_connection_string_passwords_are_masked() -> None:
    text = "connecting to mongodb+srv://app:p%40ss@cluster0.example.net/?retryWrites=true"
    assert redact(text) == "connecting to mongodb+srv://app:***@cluster0.example.net/?retryWrites=true"


def test_key_value_secrets_are_masked() -> None:
    text = 'sasl.password=hunter2 {"password": "s3cr3t"} token: abc123 user=bob'
    redacted = redact(text)
    assert "hunter2" not in redacted and "s3cr3t" not in redacted and "abc123" not in redacted
    assert "user=bob" in redacted


def test_configuration_mappings_are_masked_by_key() -> None:
    masked = redact_mapping({"sasl.password": "hunter2", "bootstrap.servers": "b:9092", "uri": "mongodb://u:pw@h"})
    assert masked == {"sasl.password": "***", "bootstrap.servers": "b:9092", "uri": "mongodb://u:***@h"}


def test_json_log_lines_carry_extra_fields_and_no_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("example"))
    logger = logging.getLogger("test_redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("connected to %s", "mongodb://admin:topsecret@db:27017", extra={"uri": "mongodb://a:b@c", "rows": 3})
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["service"] == "example" and entry["level"] == "INFO" and entry["rows"] == 3
    assert "topsecret" not in stream.getvalue() and ":b@" not in stream.getvalue()
    assert entry["message"] == "connected to mongodb://admin:***@db:27017"
