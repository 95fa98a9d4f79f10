"""The bronze contract's schemas and naming rules (docs/bronze-schema.md), in one place.

bronze_writer writes these tables and data_generator builds the same ones for dbt's tests
and benchmarks without Kafka; both import this module, so the two cannot drift apart: the
envelope every bronze table starts with, the ingest-log and dead-letter companion tables,
the field metadata that keeps a column's BSON type, the BSON families with a typed column,
the rule for which field names can be columns, and Delta's timestamp range.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
"""Every time column: UTC microseconds (Delta's ``timestamp``)."""

BSON_TYPE_METADATA = "lakehouse.bson_type"
"""The field metadata key holding a document column's BSON family (``long``, ``objectId``, ...)."""

ENVELOPE = pa.schema(
    [
        ("__event_id", pa.large_utf8()),
        ("__resume_token", pa.large_utf8()),
        ("__operation", pa.large_utf8()),
        ("__db", pa.large_utf8()),
        ("__collection", pa.large_utf8()),
        ("__document_key", pa.large_utf8()),
        ("__document_id", pa.large_utf8()),
        ("__cluster_time", TIMESTAMP),
        ("__cluster_time_increment", pa.int64()),
        ("__wall_time", TIMESTAMP),
        ("__lsid", pa.large_utf8()),
        ("__txn_number", pa.int64()),
        ("__kafka_topic", pa.large_utf8()),
        ("__kafka_partition", pa.int32()),
        ("__kafka_offset", pa.int64()),
        ("__kafka_timestamp", TIMESTAMP),
        ("__ingested_at", TIMESTAMP),
        ("__full_document", pa.large_utf8()),
        ("__update_description", pa.large_utf8()),
        ("__full_document_before_change", pa.large_utf8()),
        ("__rescued_data", pa.large_utf8()),
    ]
)
"""The envelope columns every bronze table starts with, in this order."""

ENVELOPE_NAMES = frozenset(ENVELOPE.names)

# Table properties of every bronze table, set when it is created. The change data feed lets
# silver read exactly the commits it has not processed (table_changes by version).
BRONZE_TABLE_CONFIGURATION = {"delta.enableChangeDataFeed": "true"}

INGEST_LOG_SCHEMA = pa.schema(
    [
        ("table_uri", pa.large_utf8()),
        ("database", pa.large_utf8()),
        ("collection", pa.large_utf8()),
        ("table_version", pa.int64()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("committed_at", TIMESTAMP),
        ("duration_ms", pa.float64()),
        ("offset_ranges", pa.large_utf8()),
        ("first_event_id", pa.large_utf8()),
        ("last_event_id", pa.large_utf8()),
        ("max_lag_seconds", pa.float64()),
        ("writer_id", pa.large_utf8()),
        ("duplicates_dropped", pa.int64()),
        ("rescued_values", pa.int64()),
        ("new_columns", pa.large_utf8()),
        ("already_landed", pa.int64()),
        ("ids_looked_up", pa.int64()),
    ]
)
"""``<root>/bronze/_ingest_log``: one row per bronze commit."""

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("topic", pa.large_utf8()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", TIMESTAMP),
        ("key", pa.large_binary()),
        ("value", pa.large_binary()),
        ("headers", pa.large_utf8()),
        ("error_type", pa.large_utf8()),
        ("error", pa.large_utf8()),
        ("dead_lettered_at", TIMESTAMP),
    ]
)
"""``<root>/bronze/_dead_letters``: records that could not be landed, with the reason."""

DELTA_TYPE_OF_FAMILY = {"long": "long", "double": "double", "bool": "boolean", "date": "timestamp"}
"""The BSON families with a typed column; every other family is a string column."""
FAMILY_OF_DELTA_TYPE = {"long": "long", "double": "double", "boolean": "bool", "timestamp": "date", "string": "string"}
"""A column's family from its Delta type, for columns without the metadata."""
ARROW_TYPE_OF_FAMILY = {"long": pa.int64(), "double": pa.float64(), "bool": pa.bool_(), "date": TIMESTAMP}

# Delta's timestamp range: 0001-01-01 to 9999-12-31, in milliseconds since the epoch.
MIN_MILLIS = -62_135_596_800_000
MAX_MILLIS = 253_402_300_799_999

# Delta without column mapping (what Spark and dbt read) refuses these characters in names;
# control characters (NUL makes Arrow's C interface panic) are refused too.
_INVALID_COLUMN_NAME = re.compile(r"[ ,;{}()\n\t=\x00-\x1f\x7f]")
_ENVELOPE_LOWER = frozenset(name.lower() for name in ENVELOPE.names)


def column_name_problem(name: str, columns: Collection[str]) -> str | None:
    """Why a document field cannot be a column of its own beside ``columns`` (its values are rescued), or None."""
    if not name or _INVALID_COLUMN_NAME.search(name):
        return "name not allowed as a Delta column"
    if name.lower() in _ENVELOPE_LOWER:
        return "name of an envelope column"
    if name not in columns and any(name.lower() == existing.lower() for existing in columns):
        return "differs only in case from an existing column"
    return None


@dataclass(frozen=True)
class ColumnType:
    """A document column's established type: the BSON family and the Delta type holding it."""

    family: str

    @property
    def delta_type(self) -> str:
        return DELTA_TYPE_OF_FAMILY.get(self.family, "string")


def table_columns(delta_schema: object | None) -> dict[str, ColumnType]:
    """The document columns of a table (envelope excluded), from its Delta schema."""
    if delta_schema is None:
        return {}
    columns: dict[str, ColumnType] = {}
    for field in delta_schema.fields:  # type: ignore[attr-defined]
        if field.name in ENVELOPE_NAMES:
            continue
        family = (field.metadata or {}).get(BSON_TYPE_METADATA)
        if family is None:
            family = FAMILY_OF_DELTA_TYPE.get(getattr(field.type, "type", ""), "string")
        columns[field.name] = ColumnType(str(family).strip('"'))
    return columns


__all__ = [
    "BRONZE_TABLE_CONFIGURATION",
    "ARROW_TYPE_OF_FAMILY",
    "BSON_TYPE_METADATA",
    "DEAD_LETTER_SCHEMA",
    "DELTA_TYPE_OF_FAMILY",
    "ENVELOPE",
    "ENVELOPE_NAMES",
    "FAMILY_OF_DELTA_TYPE",
    "INGEST_LOG_SCHEMA",
    "MAX_MILLIS",
    "MIN_MILLIS",
    "TIMESTAMP",
    "ColumnType",
    "column_name_problem",
    "table_columns",
]
