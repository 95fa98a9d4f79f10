"""Shared by the bronze_writer tests: change events, Kafka records, writers in threads, reading bronze.

Events are BSON in MongoDB's documented change-event shape, encoded with the contract
(``lakehouse_common.contract.encode_events``) and produced with confluent-kafka directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import bson
import polars as pl
from confluent_kafka import Message, Producer
from deltalake import DeltaTable

from bronze_writer.app import BronzeWriter
from bronze_writer.decode import Records
from bronze_writer.lander import LandedBatch, Lander
from bronze_writer.settings import BronzeSettings
from lakehouse_common.claims import ClaimStore
from lakehouse_common.contract import EncodedEvent, ValueFormat, claim_headers, claim_record_value, encode_events, headers_for

BASE_SECONDS = 1_700_000_000

# Lake root -> its storage options, registered by the ``lake`` fixture, so the readers below
# open tables on the object store as well as on a local directory.
_LAKES: dict[str, dict[str, str]] = {}


def use_lake(root: str, storage_options: dict[str, str]) -> None:
    _LAKES[root.rstrip("/")] = storage_options


def storage_options(uri: str) -> dict[str, str]:
    """The options of the registered lake ``uri`` lies in ({} for a local one)."""
    roots = [root for root in _LAKES if uri == root or uri.startswith(root + "/")]
    return dict(_LAKES[max(roots, key=len)]) if roots else {}


def open_table(uri: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(uri, version=version, storage_options=storage_options(uri))


def event_id(sequence: int) -> str:
    """Ids ordered like resume tokens: fixed-width hex (the stand-in's format)."""
    return f"{sequence:016x}"


def change_event(
    sequence: int,
    document: dict[str, Any] | None = None,
    *,
    operation: str = "insert",
    database: str = "shop",
    collection: str = "orders",
    document_id: Any = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One change event as BSON; ``document`` is the fullDocument (omitted for deletes)."""
    key = document_id if document_id is not None else (document or {}).get("_id", sequence)
    event: dict[str, Any] = {
        "_id": {"_data": event_id(sequence)},
        "operationType": operation,
        "clusterTime": bson.Timestamp(BASE_SECONDS + sequence, 1),
        "wallTime": datetime.fromtimestamp(BASE_SECONDS + sequence, UTC),
        "ns": {"db": database, "coll": collection},
        "documentKey": {"_id": key},
    }
    if document is not None and operation != "delete":
        event["fullDocument"] = document
    event.update(extra or {})
    return bson.encode(event)


def records(
    events: Sequence[bytes],
    value_format: ValueFormat = ValueFormat.JSON,
    *,
    topic: str = "cdc.shop.orders",
    partition: int = 0,
    first_offset: int = 0,
) -> list[Message]:
    """Kafka records as confluent-kafka Messages, for the stages that do not need a broker."""
    return [
        Message(
            topic=topic,
            partition=partition,
            offset=first_offset + index,
            key=encoded.key,
            value=encoded.value,
            headers=headers_for(encoded, value_format),
            timestamp=(1, (BASE_SECONDS + index) * 1000),
        )
        for index, encoded in enumerate(encode_events(list(events), value_format))
    ]


def claim_records(
    events: Sequence[bytes],
    store: ClaimStore,
    value_format: ValueFormat = ValueFormat.JSON,
    *,
    topic: str = "cdc.shop.orders",
    partition: int = 0,
    first_offset: int = 0,
) -> list[Message]:
    """The records cdc_service publishes for events too large for their topic: claims kept in ``store``, references."""
    messages = []
    for index, encoded in enumerate(encode_events(list(events), value_format)):
        reference = store.put(encoded.value)
        messages.append(Message(
            topic=topic,
            partition=partition,
            offset=first_offset + index,
            key=encoded.key,
            value=claim_record_value(reference),
            headers=claim_headers(encoded, value_format),
            timestamp=(1, (BASE_SECONDS + first_offset + index) * 1000),
        ))
    return messages


def collect(messages: Sequence[Message]) -> Records:
    """Messages as the writer's batch holds them."""
    return Records.from_messages(messages)


def land(lander: Lander, messages: Sequence[Message], topic: str = "cdc.shop.orders") -> LandedBatch:
    """Both landing stages for one topic's messages, as the writer's threads run them."""
    return lander.land(lander.decode({topic: collect(messages)}), 10)


def produce(
    bootstrap_servers: str,
    topic: str,
    events: Sequence[bytes] | Sequence[EncodedEvent],
    value_format: ValueFormat = ValueFormat.JSON,
    partition: int | None = None,
) -> None:
    """Publish events as cdc_service does: key = document key, contract headers."""
    encoded = events if events and isinstance(events[0], EncodedEvent) else encode_events(list(events), value_format)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5, "enable.idempotence": True})
    for item in encoded:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=item.value, key=item.key, headers=headers_for(item, value_format), **extra)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_bronze(uri: str) -> pl.DataFrame:
    """A table's rows (Polars reader; pyarrow's dataset reader can abort the process at exit)."""
    return pl.read_delta(uri, storage_options=storage_options(uri))


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def landed_offsets(uri: str, topic: str, partitions: int) -> dict[int, int | None]:
    try:
        table = open_table(uri)
    except Exception:  # not created yet
        return {}
    return {partition: table.transaction_version(f"{topic}-{partition}") for partition in range(partitions)}


class WriterThread:
    """A BronzeWriter running in a background thread of the test process."""

    def __init__(self, settings: BronzeSettings) -> None:
        self.writer = BronzeWriter(settings)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bronze-writer-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.writer.run()
        except BaseException as error:  # surfaced by stop()
            self.error = error

    def __enter__(self) -> WriterThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> None:
        self.writer.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "writer did not stop"
        if self.error is not None:
            raise self.error
