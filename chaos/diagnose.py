"""Where a lost or duplicated write went wrong: in Kafka, or between Kafka and bronze.

Only run when the verification found something. For each lost write it says whether its
change event is in the lane's topics (read_committed, what bronze reads): present means
bronze dropped it, absent means cdc-service never published it (or it was aborted). For a
duplicated event id it lists the Kafka positions of the bronze rows: one position landed
twice is the writer's doing; two positions are a republished event the dedupe let through.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition

from chaos.bronze import WriteKey
from chaos.verify import DeliveryCheck, expected_key
from lakehouse_common.contract import decode_value, parse_headers
from lakehouse_common.errors import ContractError
from spark_jobs.verify import id_of

Position = tuple[str, int, int]


def _event_key(collection: str, event: dict[str, Any]) -> WriteKey | None:
    operation = event.get("operationType")
    if operation in ("insert", "replace"):
        seq = (event.get("fullDocument") or {}).get("seq")
    elif operation == "update":
        seq = ((event.get("updateDescription") or {}).get("updatedFields") or {}).get("seq")
    elif operation == "delete":
        return ("delete", collection, id_of((event.get("documentKey") or {}).get("_id")))
    else:
        return None
    return None if seq is None else (operation, collection, int(seq))


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def kafka_positions(bootstrap: str, topics: dict[str, str], timeout: float = 120.0) -> dict[WriteKey, list[Position]]:
    """Every write's positions in the committed records of ``topics`` (topic -> collection)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-diagnose-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    positions: dict[WriteKey, list[Position]] = defaultdict(list)
    try:
        metadata = consumer.list_topics(timeout=30)
        assignment = [
            TopicPartition(topic, partition, 0)
            for topic in topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]
        consumer.assign(assignment)
        remaining = {(part.topic, part.partition) for part in assignment}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(
                        (cast(str, message.topic()), cast(int, message.partition()))
                    )  # an end-of-partition event names both
                continue
            value, topic = message.value(), str(message.topic())
            headers = message.headers()
            if value is None or not isinstance(headers, list):
                continue
            try:
                event = decode_value(value, parse_headers([(name, _bytes(raw)) for name, raw in headers]).value_format)
            except ContractError:
                continue
            key = _event_key(topics[topic], event)
            if key is not None:
                positions[key].append((topic, int(message.partition() or 0), int(message.offset() or 0)))
    finally:
        consumer.close()
    return positions


def diagnose(
    check: DeliveryCheck, positions: dict[WriteKey, list[Position]], events: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per lost write its Kafka positions; per duplicated event id the positions of its bronze rows."""
    lost = []
    for write in check.lost:
        found = positions.get(expected_key(write), [])
        lost.append(
            {
                "seq": write.seq,
                "collection": write.collection,
                "operation": write.kind.value,
                "document_id": write.document_id,
                "kafka_positions": [list(position) for position in found],
                "verdict": "in Kafka, not in bronze" if found else "never in Kafka (committed)",
            }
        )
    rows_by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    wanted = set(check.duplicate_rows) | {event_id for ids in check.repeated_writes.values() for event_id in ids}
    for rows in events.values():
        for row in rows:
            if row["__event_id"] in wanted:
                rows_by_id[row["__event_id"]].append(row)
    duplicates = []
    for event_id in sorted(wanted):
        rows = rows_by_id[event_id]
        duplicates.append(
            {
                "event_id": event_id,
                "rows": [
                    {
                        "position": [row["__kafka_topic"], row["__kafka_partition"], row["__kafka_offset"]],
                        "ingested_at": row["__ingested_at"].isoformat(),
                        "operation": row["__operation"],
                    }
                    for row in rows
                ],
            }
        )
    return {"lost": lost, "duplicates": duplicates}


def summarize_verdicts(lost: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in lost:
        counts[item["verdict"]] += 1
    return dict(counts)


__all__ = ["diagnose", "kafka_positions", "summarize_verdicts"]
