"""Stage 2: the bronze schema (docs/bronze-schema.md) and typing against a table's own schema.

Each top-level field of ``fullDocument`` becomes a column whose type is fixed by the first
non-null value the table sees; the BSON type behind it is kept in the column's Delta
metadata (``lakehouse.bson_type``) so an ObjectId column never silently takes plain
strings. A value of another type is never cast: its column is null for that row and the
value goes to ``__rescued_data`` with its field name and BSON type. deltalake would cast
on append (2.7 into a long column lands as 2), so the frame handed to it has exactly the
table's types. Everything here is Polars expressions over whole columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import pyarrow as pa

from bronze_writer.decode import DATE_COLUMN, KIND_COLUMN, TEXT_COLUMN, WALL_TIME_MICROS
from lakehouse_common.bronze_schema import (
    ARROW_TYPE_OF_FAMILY,
    BSON_TYPE_METADATA,
    ENVELOPE,
    ENVELOPE_NAMES,
    MAX_MILLIS,
    MIN_MILLIS,
    ColumnType,
    column_name_problem,
)


class Kind:
    """BSON kinds as the native scanner reports them (native/lakehouse_codec/src/scan.rs)."""

    ABSENT = 0
    NULL = 1
    BOOL = 2
    INT32 = 3
    INT64 = 4
    DOUBLE = 5
    STRING = 6
    OBJECT_ID = 7
    DATE_ISO = 8
    DATE_MILLIS = 9
    DECIMAL = 10
    DOCUMENT = 11
    ARRAY = 12
    BINARY = 13
    TIMESTAMP = 14
    REGEX = 15
    JAVASCRIPT = 16
    JAVASCRIPT_WITH_SCOPE = 17
    SYMBOL = 18
    MIN_KEY = 19
    MAX_KEY = 20
    UNDEFINED = 21
    DB_POINTER = 22


# MongoDB's $type aliases, which is what __rescued_data reports and column metadata records.
TYPE_NAMES = {
    Kind.BOOL: "bool",
    Kind.INT32: "int",
    Kind.INT64: "long",
    Kind.DOUBLE: "double",
    Kind.STRING: "string",
    Kind.OBJECT_ID: "objectId",
    Kind.DATE_ISO: "date",
    Kind.DATE_MILLIS: "date",
    Kind.DECIMAL: "decimal",
    Kind.DOCUMENT: "object",
    Kind.ARRAY: "array",
    Kind.BINARY: "binData",
    Kind.TIMESTAMP: "timestamp",
    Kind.REGEX: "regex",
    Kind.JAVASCRIPT: "javascript",
    Kind.JAVASCRIPT_WITH_SCOPE: "javascriptWithScope",
    Kind.SYMBOL: "symbol",
    Kind.MIN_KEY: "minKey",
    Kind.MAX_KEY: "maxKey",
    Kind.UNDEFINED: "undefined",
    Kind.DB_POINTER: "dbPointer",
}
# The column family a first value establishes: int and long share one (long) column.
_FAMILY_OF_KIND = {kind: ("long" if name == "int" else name) for kind, name in TYPE_NAMES.items()}
_KINDS_OF_FAMILY: dict[str, list[int]] = {}
for _kind, _family in _FAMILY_OF_KIND.items():
    _KINDS_OF_FAMILY.setdefault(_family, []).append(_kind)

_POLARS_TYPE_OF_FAMILY: dict[str, pl.DataType] = {
    "long": pl.Int64(),
    "double": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Datetime("us", "UTC"),
}

# Unique per row and read whole, never filtered on: dictionaries and statistics would be wasted work.
PAYLOAD_COLUMNS = (
    "__resume_token",
    "__lsid",
    "__full_document",
    "__update_description",
    "__full_document_before_change",
    "__rescued_data",
)
_MAX_EXACT_INTEGER = 2**53
_SPECIAL_DOUBLES = ["NaN", "Infinity", "-Infinity"]


def _case_losers(names: list[str]) -> set[str]:
    """New names that differ only in case from another new name of the batch.

    Delta column names are case-insensitive, so only one of them can become a column: the
    smallest in code-point order (``Qty`` before ``qty``), whichever document or batch
    position they come from, so a replay decides the same way. The others are rescued.
    """
    by_lower: dict[str, list[str]] = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
    return {name for group in by_lower.values() if len(group) > 1 for name in sorted(group)[1:]}


def _from_millis(millis: pl.Expr) -> pl.Expr:
    in_range = millis.is_between(MIN_MILLIS, MAX_MILLIS)
    return (
        pl.when(in_range)
        .then(pl.from_epoch(millis, time_unit="ms").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        .otherwise(None)
    )


def date_value(kind: pl.Expr, text: pl.Expr, parsed: pl.Expr | None = None) -> pl.Expr:
    """A relaxed Extended JSON date as a UTC timestamp, null when not a date or out of Delta's range.

    ``parsed``: the scanner's microseconds for every date of the column (null for other
    kinds), which it gives only when it parsed them all; else the text is parsed here.
    """
    if parsed is not None:
        return pl.from_epoch(parsed, time_unit="us").dt.replace_time_zone("UTC")
    iso = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False)
    millis = _from_millis(text.cast(pl.Int64, strict=False))
    return pl.when(kind == Kind.DATE_ISO).then(iso).when(kind == Kind.DATE_MILLIS).then(millis).otherwise(None)


def _converted(family: str | None, kind: pl.Expr, text: pl.Expr, dates: pl.Expr | None = None) -> tuple[pl.Expr, pl.Expr]:
    """(value in the column's type, whether the value fits) for one field."""
    if family is None:
        return pl.lit(None, pl.String), pl.lit(False)
    if family == "long":
        value = text.cast(pl.Int64, strict=False)
        return value, kind.is_in(_KINDS_OF_FAMILY["long"]) & value.is_not_null()
    if family == "double":
        integer = text.cast(pl.Int64, strict=False)
        value = (
            pl.when(kind == Kind.DOUBLE)
            .then(text.cast(pl.Float64, strict=False))
            .when(kind.is_in([Kind.INT32, Kind.INT64]) & (integer.abs() <= _MAX_EXACT_INTEGER))
            .then(integer.cast(pl.Float64))
            .otherwise(None)
        )
        return value, value.is_not_null()
    if family == "bool":
        return text == "true", kind == Kind.BOOL
    if family == "date":
        value = date_value(kind, text, dates)
        return value, value.is_not_null()
    return text, kind.is_in(_KINDS_OF_FAMILY.get(family, [])) & text.is_not_null()


def _relaxed_json(kind: pl.Expr, text: pl.Expr) -> pl.Expr:
    """A value's relaxed Extended JSON, rebuilt from the scanner's kind and text."""
    quoted = pl.struct(text.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    return (
        pl.when(kind == Kind.STRING)
        .then(quoted)
        .when(kind == Kind.OBJECT_ID)
        .then(pl.concat_str([pl.lit('{"$oid":'), quoted, pl.lit("}")]))
        .when(kind == Kind.DATE_ISO)
        .then(pl.concat_str([pl.lit('{"$date":'), quoted, pl.lit("}")]))
        .when(kind == Kind.DATE_MILLIS)
        .then(pl.concat_str([pl.lit('{"$date":{"$numberLong":'), quoted, pl.lit("}}")]))
        .when(kind == Kind.DECIMAL)
        .then(pl.concat_str([pl.lit('{"$numberDecimal":'), quoted, pl.lit("}")]))
        .when((kind == Kind.DOUBLE) & text.is_in(_SPECIAL_DOUBLES))
        .then(pl.concat_str([pl.lit('{"$numberDouble":'), quoted, pl.lit("}")]))
        .otherwise(text)
    )


@dataclass
class ResolvedBatch:
    """A batch typed for one table: the Arrow data, new columns, rescued counts per field."""

    data: pa.Table
    new_columns: dict[str, ColumnType]
    rescued: dict[str, int]
    needs_schema_merge: bool


def resolve(
    frame: pl.DataFrame,
    field_names: list[str],
    columns: Mapping[str, ColumnType],
    *,
    topic: str,
    database: str,
    collection: str,
    ingested_at: datetime,
) -> ResolvedBatch:
    """Type a decoded, de-duplicated frame against the table's columns (vectorized)."""
    new_columns: dict[str, ColumnType] = {}
    families: dict[str, str | None] = {}
    first_kinds = (
        frame.select(
            [
                pl.col(KIND_COLUMN.format(index)).filter(pl.col(KIND_COLUMN.format(index)) > Kind.NULL).first().alias(name)
                for index, name in enumerate(field_names)
                if name not in columns
            ]
        ).row(0)
        if frame.height and any(name not in columns for name in field_names)
        else ()
    )
    first_kind_of = dict(zip([name for name in field_names if name not in columns], first_kinds, strict=False))
    losers = _case_losers(
        [name for name in field_names if first_kind_of.get(name) is not None and column_name_problem(name, columns) is None]
    )
    for name in field_names:
        if column_name_problem(name, columns) is not None or name in losers:
            families[name] = None
        elif name in columns:
            families[name] = columns[name].family
        elif first_kind_of.get(name) is not None:
            first_family = _FAMILY_OF_KIND[first_kind_of[name]]
            families[name] = first_family
            new_columns[name] = ColumnType(first_family)
        # else: only nulls so far, so no type to establish; the raw payload keeps them.

    value_exprs: list[pl.Expr] = []
    rescue_entries: list[pl.Expr] = []
    rescue_counts: list[pl.Expr] = []
    for index, name in enumerate(field_names):
        if name not in families:
            continue
        kind = pl.col(KIND_COLUMN.format(index))
        text = pl.col(TEXT_COLUMN.format(index))
        dates = pl.col(DATE_COLUMN.format(index)) if DATE_COLUMN.format(index) in frame.columns else None
        family = families[name]
        value, fits = _converted(family, kind, text, dates)
        rescue = (kind > Kind.NULL) & ~fits
        if family is not None:
            target = _POLARS_TYPE_OF_FAMILY.get(family, pl.String())
            value_exprs.append(pl.when(fits).then(value).otherwise(None).cast(target).alias(name))
        type_name = kind.replace_strict(TYPE_NAMES, default=None, return_dtype=pl.String)
        entry = pl.concat_str(
            [pl.lit(json.dumps(name) + ':{"type":"'), type_name, pl.lit('","value":'), _relaxed_json(kind, text), pl.lit("}")]
        )
        rescue_entries.append(pl.when(rescue).then(entry).otherwise(None))
        rescue_counts.append(rescue.sum().alias(name))

    rescued: dict[str, int] = {}
    if rescue_counts and frame.height:
        rescued = {name: count for name, count in frame.select(rescue_counts).row(0, named=True).items() if count}
    rescued_data = pl.concat_str(rescue_entries, separator=",", ignore_nulls=True) if rescue_entries else pl.lit(None, pl.String)
    rescued_data = pl.when(rescued_data.is_not_null() & (rescued_data != "")).then(
        pl.concat_str([pl.lit("{"), rescued_data, pl.lit("}")])
    )
    if not rescued:
        rescued_data = pl.lit(None, pl.String)

    envelope = [
        pl.col("__event_id"),
        pl.col("__resume_token"),
        pl.col("__operation"),
        pl.col("__db").fill_null(database),
        pl.col("__collection").fill_null(collection),
        pl.col("__document_key"),
        pl.col("__document_id"),
        pl.from_epoch(pl.col("__cluster_time_seconds"), time_unit="s")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .alias("__cluster_time"),
        pl.col("__cluster_time_increment"),
        date_value(
            pl.col("__wall_time_kind"),
            pl.col("__wall_time_text"),
            pl.col(WALL_TIME_MICROS) if WALL_TIME_MICROS in frame.columns else None,
        ).alias("__wall_time"),
        pl.col("__lsid"),
        pl.col("__txn_number"),
        pl.lit(topic, pl.String).alias("__kafka_topic"),
        pl.col("__kafka_partition"),
        pl.col("__kafka_offset"),
        pl.when(pl.col("__kafka_timestamp_ms") >= 0)
        .then(_from_millis(pl.col("__kafka_timestamp_ms")))
        .alias("__kafka_timestamp"),
        pl.lit(ingested_at, pl.Datetime("us", "UTC")).alias("__ingested_at"),
        pl.col("__full_document"),
        pl.col("__update_description"),
        pl.col("__full_document_before_change"),
        rescued_data.alias("__rescued_data"),
    ]
    typed = frame.select(envelope + value_exprs)
    # Columns the table has but this batch lacks are written as nulls of their own type.
    present = set(typed.columns)
    missing = [
        pl.lit(None, _POLARS_TYPE_OF_FAMILY.get(column.family, pl.String())).alias(name)
        for name, column in columns.items()
        if name not in present
    ]
    if missing:
        typed = typed.with_columns(missing)
    ordered = [*ENVELOPE.names, *columns, *(name for name in new_columns if name not in columns)]
    # String views, as Polars holds them: no text is copied on its way to the Parquet writer.
    data = typed.select(ordered).to_arrow(compat_level=pl.CompatLevel.newest())
    return ResolvedBatch(_with_schema(data, {**columns, **new_columns}), new_columns, rescued, bool(new_columns))


def _with_schema(data: pa.Table, columns: Mapping[str, ColumnType]) -> pa.Table:
    """Exact envelope types and the BSON family of each document column in its metadata.

    Text stays as string views (views into the scanned events): pyarrow's Parquet writer
    and deltalake's take them as they are.
    """
    fields = []
    for field in data.schema:
        if field.name in ENVELOPE_NAMES:
            envelope = ENVELOPE.field(field.name)
            fields.append(envelope.with_type(pa.string_view()) if envelope.type == pa.large_utf8() else envelope)
        else:
            column = columns[field.name]
            arrow_type = ARROW_TYPE_OF_FAMILY.get(column.family, pa.string_view())
            fields.append(pa.field(field.name, arrow_type, metadata={BSON_TYPE_METADATA: column.family}))
    return data.cast(pa.schema(fields))


__all__ = [
    "BSON_TYPE_METADATA",
    "ENVELOPE",
    "ENVELOPE_NAMES",
    "PAYLOAD_COLUMNS",
    "TYPE_NAMES",
    "Kind",
    "ResolvedBatch",
    "date_value",
    "resolve",
]
