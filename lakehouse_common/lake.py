"""The lake's layout and what each bronze Delta commit records, shared by every stage.

bronze_writer writes these, cdc_service reads them (replay from bronze) and dbt reads the
tables. Layout under the lake root (a local path or an object-store URI such as
``s3://bucket/lake``):

    <root>/bronze/<db>/<collection>   one Delta table per source collection
    <root>/bronze/_ingest_log         one row per bronze commit
    <root>/bronze/_dead_letters       messages that could not be landed, with the reason
    <root>/claims/sha256/...          events too large for their topic (lakehouse_common.claims)

Each bronze commit carries, in its commit info (deltalake ``custom_metadata``):

    lakehouse.batch             JSON: this commit's offset and event-id ranges per partition
    lakehouse.high_water_marks  JSON: for every partition the table has ever landed, the last
                                offset, the highest event id with its full resume token, and
                                the Kafka cluster and topic ids it was read from (cumulative)
    lakehouse.offset_reset      JSON, on commits that only move offsets (``bronze-writer
                                reset-offsets``, or the ``accept`` discontinuity policy)

plus one app transaction per (topic, partition) whose version is the last landed offset,
which is what the writer seeks to on start. A mark's event id is an upper bound, not a
filter: which events count as duplicates is the Ordering rule of lakehouse_common.contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lakehouse_common.contract import safe_name

BATCH_KEY = "lakehouse.batch"
HIGH_WATER_MARKS_KEY = "lakehouse.high_water_marks"
OFFSET_RESET_KEY = "lakehouse.offset_reset"
INGEST_LOG_TABLE = "_ingest_log"
DEAD_LETTER_TABLE = "_dead_letters"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def path_segment(name: str) -> str:
    """A database or collection name as one path segment: the topic's escaping (``contract.safe_name``).

    Plain names stay as they are; any other name is sanitised and gets a hash suffix, so two
    namespaces never share a table (``order items`` and ``order_items`` stay apart). Escaped
    names are plain, so a name taken from a topic maps to the same segment again.
    """
    return safe_name(name)


def bronze_table_uri(root: str, database: str, collection: str) -> str:
    return _join(root, "bronze", path_segment(database), path_segment(collection))


def ingest_log_uri(root: str) -> str:
    return _join(root, "bronze", INGEST_LOG_TABLE)


def dead_letter_uri(root: str) -> str:
    return _join(root, "bronze", DEAD_LETTER_TABLE)


def app_id(topic: str, partition: int) -> str:
    """The Delta app-transaction id of one Kafka partition."""
    return f"{topic}-{partition}"


@dataclass(frozen=True)
class HighWaterMark:
    """How far one Kafka partition has been landed in a bronze table."""

    topic: str
    partition: int
    offset: int
    event_id: str  # the highest event id landed from this partition
    resume_token: str  # that event's full ``_id`` as relaxed Extended JSON, usable as resumeAfter
    cluster_id: str | None = None  # the Kafka cluster the offsets belong to (None: not recorded)
    topic_id: str | None = None  # the topic's id on that cluster: a recreated topic gets a new one

    @property
    def partition_key(self) -> str:
        return f"{self.topic}/{self.partition}"


def encode_high_water_marks(marks: Mapping[str, HighWaterMark]) -> str:
    return json.dumps({key: asdict(mark) for key, mark in sorted(marks.items())}, separators=(",", ":"))


def decode_high_water_marks(text: str | None) -> dict[str, HighWaterMark]:
    if not text:
        return {}
    return {key: HighWaterMark(**value) for key, value in json.loads(text).items()}


def read_high_water_marks(table_uri: str, storage_options: Mapping[str, str] | None = None) -> dict[str, HighWaterMark]:
    """The high-water marks recorded by the table's latest bronze commit ({} for none)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(table_uri, storage_options=dict(storage_options or {}))
    except TableNotFoundError:
        return {}
    for commit in table.history():
        marks = commit.get(HIGH_WATER_MARKS_KEY)
        if marks:
            return decode_high_water_marks(marks)
    return {}


def earliest_resume_token(marks: Mapping[str, HighWaterMark]) -> str | None:
    """The resume token every partition has landed past: where a replay from bronze starts.

    Replaying from the lowest partition mark re-reads events some partitions already hold;
    the writer drops exactly those it holds (contract Ordering rule), so nothing is lost and
    nothing is duplicated.
    """
    if not marks:
        return None
    return min(marks.values(), key=lambda mark: mark.event_id).resume_token


def batch_metadata(offsets: Mapping[str, tuple[int, int]], event_ids: Mapping[str, tuple[str, str]]) -> str:
    """``lakehouse.batch``: first and last offset and event id per partition key."""
    batch: dict[str, Any] = {"offsets": dict(sorted(offsets.items())), "event_ids": dict(sorted(event_ids.items()))}
    return json.dumps(batch, separators=(",", ":"))


__all__ = [
    "BATCH_KEY",
    "DEAD_LETTER_TABLE",
    "HIGH_WATER_MARKS_KEY",
    "INGEST_LOG_TABLE",
    "OFFSET_RESET_KEY",
    "HighWaterMark",
    "app_id",
    "batch_metadata",
    "bronze_table_uri",
    "dead_letter_uri",
    "decode_high_water_marks",
    "earliest_resume_token",
    "encode_high_water_marks",
    "ingest_log_uri",
    "path_segment",
    "read_high_water_marks",
]
