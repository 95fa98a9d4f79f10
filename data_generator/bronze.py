"""Land change events straight into bronze Delta tables, in docs/bronze-schema.md's schema.

A stand-in for bronze_writer where Kafka is beside the point: dbt tests and benchmarks
build their bronze input with it. The schemas, the column metadata and the naming rule
are bronze_writer's own (lakehouse_common.bronze_schema), and it follows the contract as
bronze_writer implements it: the envelope, the lossless Extended JSON payloads, top-level
fields as typed columns whose BSON type family the first non-null value fixes (kept in the
column's ``lakehouse.bson_type`` metadata), values of another family rescued (never cast)
into ``__rescued_data``, fields whose name cannot be a column rescued in every row, and one
``_ingest_log`` row per commit. Kafka positions are synthesized (a stable hash of the key
picks the partition).
"""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.json_util import dumps
from deltalake import DeltaTable, write_deltalake

from lakehouse_common.bronze_schema import (
    ARROW_TYPE_OF_FAMILY,
    BRONZE_TABLE_CONFIGURATION,
    BSON_TYPE_METADATA,
    ENVELOPE,
    ENVELOPE_NAMES,
    FAMILY_OF_DELTA_TYPE,
    INGEST_LOG_SCHEMA,
    column_name_problem,
)
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, to_relaxed_json, topic_name
from lakehouse_common.lake import bronze_table_uri, ingest_log_uri

_MAX_EXACT_INTEGER = 2**53
_TYPE_ALIASES: dict[type, str] = {
    dict: "object",
    list: "array",
    bytes: "binData",
    Binary: "binData",
    uuid.UUID: "binData",
    Timestamp: "timestamp",
    Regex: "regex",
    re.Pattern: "regex",
    MinKey: "minKey",
    MaxKey: "maxKey",
    DBRef: "object",
}


def _extended_json(value: Any) -> str:
    """Relaxed Extended JSON of any value: the native codec for documents and arrays (fast)."""
    if isinstance(value, (dict, list)):
        wrapped = to_relaxed_json({"": value}).decode()
        return wrapped[4:-1]  # drop the wrapper's '{"":' and '}'
    return dumps(value, json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))


def classify(value: Any) -> tuple[str, str]:
    """(column family, MongoDB ``$type`` alias) of a non-null value: int and long share the long family."""
    if isinstance(value, bool):
        return "bool", "bool"
    if isinstance(value, int):
        return "long", "long" if isinstance(value, Int64) or not -(2**31) <= value < 2**31 else "int"
    if isinstance(value, float):
        return "double", "double"
    if isinstance(value, str):
        return "string", "string"
    if isinstance(value, (datetime, DatetimeMS)):
        return "date", "date"
    if isinstance(value, ObjectId):
        return "objectId", "objectId"
    if isinstance(value, (Decimal128, Decimal)):
        return "decimal", "decimal"
    if isinstance(value, Code):
        alias = "javascriptWithScope" if value.scope is not None else "javascript"
        return alias, alias
    alias = next((name for kind, name in _TYPE_ALIASES.items() if isinstance(value, kind)), "object")
    return alias, alias


def column_value(value: Any, family: str, value_family: str | None = None) -> Any:
    """The value as stored in a column of ``family``, or ``TypeError`` if it does not fit."""
    value_family = value_family or classify(value)[0]
    if value_family == family:
        if isinstance(value, DatetimeMS):
            raise TypeError("date outside Delta's timestamp range")
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if family in ("long", "double", "bool", "string"):
            return value
        if family in ("objectId", "decimal"):
            return str(value)
        return _extended_json(value)
    if family == "double" and value_family == "long" and abs(value) <= _MAX_EXACT_INTEGER:
        return float(value)
    raise TypeError(f"{value_family} does not fit a {family} column")


class BronzeFixtureWriter:
    """Appends change events to ``<lake root>/bronze/<db>/<collection>`` and logs each commit."""

    def __init__(
        self,
        lake_root: str | Path,
        *,
        topic_prefix: str = "cdc",
        partitions: int = 3,
        writer_id: str = "data_generator.bronze",
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.lake_root = str(lake_root)
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.writer_id = writer_id
        self.storage_options = dict(storage_options or {})
        self._families: dict[str, dict[str, str]] = {}
        self._offsets: dict[tuple[str, int], int] = {}

    def write(self, events: Iterable[Mapping[str, Any]], ingested_at: datetime | None = None) -> dict[str, int]:
        """Land events, one commit per collection, in order; returns rows per ``db.collection``."""
        ingested_at = ingested_at or datetime.now(UTC)
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for event in events:
            namespace = event["ns"]
            groups.setdefault((namespace["db"], namespace["coll"]), []).append(event)
        landed = {}
        for (database, collection), group in groups.items():
            self._append(database, collection, group, ingested_at)
            landed[f"{database}.{collection}"] = len(group)
        return landed

    def _established_families(self, uri: str) -> dict[str, str]:
        """Column -> BSON family, from the table's field metadata (or its Delta type without one)."""
        if uri not in self._families:
            families: dict[str, str] = {}
            if DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
                for field in DeltaTable(uri, storage_options=self.storage_options).schema().fields:
                    if field.name in ENVELOPE_NAMES:
                        continue
                    family = (field.metadata or {}).get(BSON_TYPE_METADATA)
                    if family is None:
                        family = FAMILY_OF_DELTA_TYPE.get(str(getattr(field.type, "type", "")), "string")
                    families[field.name] = str(family).strip('"')
            self._families[uri] = families
        return self._families[uri]

    def _next_offset(self, topic: str, partition: int, uri: str) -> int:
        key = (topic, partition)
        if key not in self._offsets:
            self._offsets[key] = -1
            if DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
                positions = DeltaTable(uri, storage_options=self.storage_options).to_pyarrow_table(
                    columns=["__kafka_topic", "__kafka_partition", "__kafka_offset"]
                )
                for row_topic, row_partition, offset in zip(
                    *(positions[name].to_pylist() for name in positions.column_names), strict=True
                ):
                    if (row_topic, row_partition) == key:
                        self._offsets[key] = max(self._offsets[key], offset)
        self._offsets[key] += 1
        return self._offsets[key]

    def _append(self, database: str, collection: str, events: list[Mapping[str, Any]], ingested_at: datetime) -> None:
        started = time.monotonic()
        uri = bronze_table_uri(self.lake_root, database, collection)
        topic = topic_name(self.topic_prefix, database, collection)
        families = self._established_families(uri)
        new_columns: dict[str, str] = {}
        rescued_values = 0
        envelope: dict[str, list[Any]] = {name: [] for name in ENVELOPE.names}
        fields: dict[str, list[Any]] = {}
        offset_ranges: dict[str, list[int]] = {}
        max_lag = 0.0
        for row, event in enumerate(events):
            key = to_relaxed_json(event["documentKey"]) if "documentKey" in event else None
            partition = zlib.crc32(key) % self.partitions if key is not None else 0
            offset = self._next_offset(topic, partition, uri)
            offset_ranges.setdefault(f"{topic}/{partition}", [offset, offset])[1] = offset
            cluster_time = event["clusterTime"]
            cluster_at = datetime.fromtimestamp(cluster_time.time, UTC)
            wall_time = event.get("wallTime")
            max_lag = max(max_lag, (ingested_at - cluster_at).total_seconds())
            document = event.get("fullDocument")
            values = {
                "__event_id": event["_id"]["_data"],
                "__resume_token": to_relaxed_json(event["_id"]).decode(),
                "__operation": event["operationType"],
                "__db": event["ns"]["db"],
                "__collection": event["ns"].get("coll"),
                "__document_key": key.decode() if key is not None else None,
                "__document_id": _extended_json(event["documentKey"]["_id"]) if key is not None else None,
                "__cluster_time": cluster_at,
                "__cluster_time_increment": cluster_time.inc,
                "__wall_time": wall_time if wall_time is None or wall_time.tzinfo else wall_time.replace(tzinfo=UTC),
                "__lsid": _extended_json(event["lsid"]) if "lsid" in event else None,
                "__txn_number": event.get("txnNumber"),
                "__kafka_topic": topic,
                "__kafka_partition": partition,
                "__kafka_offset": offset,
                "__kafka_timestamp": wall_time or cluster_at,
                "__ingested_at": ingested_at,
                "__full_document": to_relaxed_json(document).decode() if document is not None else None,
                "__update_description": (
                    to_relaxed_json(event["updateDescription"]).decode() if "updateDescription" in event else None
                ),
                "__full_document_before_change": (
                    to_relaxed_json(event["fullDocumentBeforeChange"]).decode()
                    if event.get("fullDocumentBeforeChange") is not None
                    else None
                ),
                "__rescued_data": None,
            }
            rescued: dict[str, Any] = {}
            for name, value in (document or {}).items():
                if value is None:
                    continue
                value_family, alias = classify(value)
                family = families.get(name)
                if family is None and column_name_problem(name, families) is None and not isinstance(value, DatetimeMS):
                    family = families[name] = new_columns[name] = value_family
                try:
                    if family is None:
                        raise TypeError(f"field {name!r} has no column")
                    stored = column_value(value, family, value_family)
                except TypeError:
                    stored = None
                    rescued[name] = {"type": alias, "value": json.loads(_extended_json(value))}
                    rescued_values += 1
                    if family is None:
                        continue
                column = fields.get(name)
                if column is None:
                    column = fields[name] = [None] * row
                column.append(stored)
            if rescued:
                values["__rescued_data"] = json.dumps(rescued, separators=(",", ":"))
            for name, value in values.items():
                envelope[name].append(value)
            for column in fields.values():
                if len(column) == row:
                    column.append(None)
        arrays = [pa.array(envelope[name], type=ENVELOPE.field(name).type) for name in ENVELOPE.names]
        schema_fields = list(ENVELOPE)
        for name, column in fields.items():
            arrow_type = ARROW_TYPE_OF_FAMILY.get(families[name], pa.large_utf8())
            arrays.append(pa.array(column, type=arrow_type))
            schema_fields.append(pa.field(name, arrow_type, metadata={BSON_TYPE_METADATA: families[name]}))
        table = pa.Table.from_arrays(arrays, schema=pa.schema(schema_fields))
        write_deltalake(
            uri,
            table,
            mode="append",
            schema_mode="merge",
            configuration=BRONZE_TABLE_CONFIGURATION,  # used when this write creates the table
            storage_options=self.storage_options,
        )
        version = DeltaTable(uri, storage_options=self.storage_options).version()
        log_row = {
            "table_uri": uri,
            "database": database,
            "collection": collection,
            "table_version": version,
            "rows": table.num_rows,
            "bytes": table.nbytes,
            "committed_at": datetime.now(UTC),
            "duration_ms": (time.monotonic() - started) * 1000,
            "offset_ranges": json.dumps(offset_ranges, separators=(",", ":"), sort_keys=True),
            "first_event_id": min(envelope["__event_id"]),
            "last_event_id": max(envelope["__event_id"]),
            "max_lag_seconds": max_lag,
            "writer_id": self.writer_id,
            "duplicates_dropped": 0,
            "rescued_values": rescued_values,
            "new_columns": json.dumps(new_columns, separators=(",", ":")),
            "already_landed": 0,
            "ids_looked_up": 0,
        }
        write_deltalake(
            ingest_log_uri(self.lake_root),
            pa.Table.from_pylist([log_row], schema=INGEST_LOG_SCHEMA),
            mode="append",
            storage_options=self.storage_options,
        )


__all__ = [
    "BronzeFixtureWriter",
    "classify",
    "column_value",
]
