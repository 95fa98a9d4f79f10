"""Helpers shared by the cdc_service tests: documented change-event fixtures, and reading topics."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from confluent_kafka import Consumer, KafkaError, TopicPartition

from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.settings import CdcSettings
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, ValueFormat, decode_value, is_claim, parse_headers
from lakehouse_common.errors import ContractError
from lakehouse_common.settings import load_settings

FIXTURES = Path(__file__).parent / "fixtures"


def settings_env(mongo_uri: str, bootstrap: str, database: str, **extra: str) -> dict[str, str]:
    """Environment variables configuring one isolated service: its own name, topics and checkpoints."""
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {
        "CDC_NAME": name,
        "CDC_MONGO_URI": mongo_uri,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CDC_SCOPE__INCLUDE_DATABASES": f'["{database}"]',
        "CDC_TOPICS__PREFIX": name,
        "CDC_TOPICS__CHECKPOINT_TOPIC": f"{name}.checkpoints",
        "CDC_TOPICS__DEAD_LETTER_TOPIC": f"{name}.dead-letters",
        "CDC_HTTP__PORT": "0",
        "CDC_HTTP__HOST": "127.0.0.1",
        "CDC_CHECKPOINT_INTERVAL_S": "0.3",
        "CDC_HEARTBEAT_INTERVAL_S": "1",
        "CDC_STREAM__DISCOVERY_INTERVAL_S": "1",
        "CDC_STREAM__MAX_AWAIT_MS": "200",
        "CDC_STREAM__IDLE_POLL_INTERVAL_S": "0.05",
        "CDC_RETRY_INITIAL_BACKOFF_S": "0.2",
        "CDC_PROGRESS_BAR": "never",
        "CDC_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def settings_from(env: dict[str, str]) -> CdcSettings:
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return load_settings(CdcSettings)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fixture_events() -> dict[str, dict[str, Any]]:
    """Every documented change-event shape, by name (fixtures/change_events.json)."""
    text = (FIXTURES / "change_events.json").read_text()
    events = json_util.loads(text, json_options=EXTENDED_JSON_OPTIONS)
    events.pop("_comment")
    return events


def raw(event: dict[str, Any]) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(event), RAW_CODEC_OPTIONS)


def read_topic(
    bootstrap: str, topic: str, *, isolation: str = "read_committed", idle_s: float = 2.0, timeout_s: float = 60.0,
    expect: int | None = None,
) -> list[dict[str, Any]]:
    """Every record of a topic, decoded: partition, offset, key, headers, event."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
    })
    records: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                if time.monotonic() - last > idle_s and (expect is None or len(records) >= expect):
                    break
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(str(message.error()))
            last = time.monotonic()
            value = message.value()
            try:
                headers = parse_headers(message.headers())
            except ContractError:  # dead letters carry their own headers
                headers = None
            records.append({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key(),
                "headers": headers,
                "raw_headers": dict(message.headers() or []),
                # A claim record's value is a reference to the event (contract: Claim checks), not the event.
                "event": decode_value(value, headers.value_format)
                if value is not None and headers and not is_claim(message.headers()) else None,
                "value": value,
            })
    finally:
        consumer.close()
    return records


def event_ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["headers"].event_id for record in records]


def apply_events(records: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The final state of every document after applying the events in event-id order."""
    state: dict[Any, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["headers"].event_id):
        event = record["event"]
        operation = event["operationType"]
        if operation not in ("insert", "replace", "snapshot", "update", "delete"):
            continue
        key = json.dumps(json_util.loads(json_util.dumps(event["documentKey"])), sort_keys=True, default=str)
        if operation in ("insert", "replace", "snapshot"):
            state[key] = dict(event["fullDocument"])
        elif operation == "delete":
            state.pop(key, None)
        elif event.get("fullDocument") is not None:
            state[key] = dict(event["fullDocument"])
        else:
            document = state.setdefault(key, {})
            for path, value in event["updateDescription"]["updatedFields"].items():
                document[path] = value
            for path in event["updateDescription"]["removedFields"]:
                document.pop(path, None)
    return state


__all__ = [
    "FIXTURES", "ValueFormat", "apply_events", "event_ids", "fixture_events", "raw", "read_topic", "settings_env", "settings_from",
]
