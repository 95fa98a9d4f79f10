"""Typing against a table's established schema: never cast, rescue with the BSON type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from bronze_support import change_event, collect, records
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from confluent_kafka import Message

from bronze_writer.decode import DATE_COLUMN, WALL_TIME_MICROS, decode_topic
from bronze_writer.schema import BSON_TYPE_METADATA, ENVELOPE, resolve
from lakehouse_common import contract
from lakehouse_common.bronze_schema import ColumnType

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _resolve(documents: list[dict], columns: dict[str, ColumnType] | None = None):
    events = [change_event(index + 1, document) for index, document in enumerate(documents)]
    decoded = decode_topic("cdc.shop.orders", collect(records(events)))
    return resolve(
        decoded.frame,
        decoded.field_names,
        columns or {},
        topic="cdc.shop.orders",
        database="shop",
        collection="orders",
        ingested_at=NOW,
    )


def _rescued(row: dict) -> dict:
    return json.loads(row["__rescued_data"]) if row["__rescued_data"] else {}


def test_first_value_fixes_the_type_and_conflicts_are_rescued_not_cast() -> None:
    resolved = _resolve(
        [
            {"_id": 1, "qty": 5, "price": 2.5, "code": "A1", "when": datetime(2024, 1, 2, tzinfo=UTC)},
            {"_id": 2, "qty": 2.7, "price": 3, "code": 8, "when": "yesterday"},
            {"_id": 3, "qty": "8", "price": 2**53 + 1, "code": None},
        ]
    )
    rows = resolved.data.to_pylist()
    assert {name: column.family for name, column in resolved.new_columns.items()} == {
        "_id": "long", "qty": "long", "price": "double", "code": "string", "when": "date"
    }  # fmt: skip
    assert [row["qty"] for row in rows] == [5, None, None]  # 2.7 is not truncated to 2, "8" is not parsed
    assert [row["price"] for row in rows] == [2.5, 3.0, None]  # an exact integer widens; 2**53+1 would not be exact
    assert [row["code"] for row in rows] == ["A1", None, None]
    assert rows[1]["when"] is None
    assert _rescued(rows[0]) == {}
    assert _rescued(rows[1]) == {
        "qty": {"type": "double", "value": 2.7},
        "code": {"type": "int", "value": 8},
        "when": {"type": "string", "value": "yesterday"},
    }
    assert _rescued(rows[2]) == {"qty": {"type": "string", "value": "8"}, "price": {"type": "long", "value": 2**53 + 1}}
    assert resolved.rescued == {"qty": 2, "code": 1, "when": 1, "price": 1}
    # Nothing is lost either way: the raw payload keeps every value as it came.
    assert '"qty":2.7' in rows[1]["__full_document"]


def test_the_established_bson_type_is_kept_in_column_metadata_and_enforced() -> None:
    columns = {"ref": ColumnType("objectId"), "amount": ColumnType("decimal"), "tags": ColumnType("array")}
    resolved = _resolve(
        [
            {"_id": 1, "ref": ObjectId("65a1b2c3d4e5f60718293a4b"), "amount": Decimal128("1.10"), "tags": ["a"]},
            {"_id": 2, "ref": "65a1b2c3d4e5f60718293a4b", "amount": "1.10", "tags": {"a": 1}},
        ],
        columns,
    )
    rows = resolved.data.to_pylist()
    assert rows[0]["ref"] == "65a1b2c3d4e5f60718293a4b" and rows[0]["amount"] == "1.10" and rows[0]["tags"] == '["a"]'
    assert (rows[1]["ref"], rows[1]["amount"], rows[1]["tags"]) == (None, None, None)
    assert _rescued(rows[1]) == {
        "ref": {"type": "string", "value": "65a1b2c3d4e5f60718293a4b"},
        "amount": {"type": "string", "value": "1.10"},
        "tags": {"type": "object", "value": {"a": 1}},
    }
    schema = resolved.data.schema
    assert schema.field("ref").metadata == {BSON_TYPE_METADATA.encode(): b"objectId"}
    assert schema.field("_id").type == pa.int64()


def test_rescued_values_keep_their_extended_json() -> None:
    resolved = _resolve(
        [
            {"_id": 1, "v": 1},
            {"_id": 2, "v": ObjectId("65a1b2c3d4e5f60718293a4b")},
            {"_id": 3, "v": Decimal128("2.50")},
            {"_id": 4, "v": datetime(2024, 1, 1, tzinfo=UTC)},
            {"_id": 5, "v": float("nan")},
            {"_id": 6, "v": 'quote " and \\ backslash'},
        ]
    )
    rescued = [_rescued(row).get("v") for row in resolved.data.to_pylist()]
    assert rescued == [
        None,
        {"type": "objectId", "value": {"$oid": "65a1b2c3d4e5f60718293a4b"}},
        {"type": "decimal", "value": {"$numberDecimal": "2.50"}},
        {"type": "date", "value": {"$date": "2024-01-01T00:00:00.000Z"}},
        {"type": "double", "value": {"$numberDouble": "NaN"}},
        {"type": "string", "value": 'quote " and \\ backslash'},
    ]


def test_dates_outside_deltas_range_are_rescued_and_pre_1970_dates_are_kept() -> None:
    resolved = _resolve(
        [
            {"_id": 1, "at": datetime(2024, 1, 1, tzinfo=UTC)},
            {"_id": 2, "at": datetime(1950, 6, 1, tzinfo=UTC)},
            {"_id": 3, "at": DatetimeMS(2**62)},
        ]
    )
    rows = resolved.data.to_pylist()
    assert rows[1]["at"] == datetime(1950, 6, 1, tzinfo=UTC)
    assert rows[2]["at"] is None
    assert _rescued(rows[2]) == {"at": {"type": "date", "value": {"$date": {"$numberLong": str(2**62)}}}}


def test_names_that_cannot_be_columns_are_rescued() -> None:
    resolved = _resolve([{"_id": 1, "__event_id": "x", "bad name": 1, "Qty": 1, "__v": 0}], {"qty": ColumnType("long")})
    row = resolved.data.to_pylist()[0]
    assert set(_rescued(row)) == {"__event_id", "bad name", "Qty"}
    assert row["__event_id"] == "0000000000000001"  # the envelope is never overwritten
    assert row["__v"] == 0  # mongoose's version key is an ordinary field
    assert "Qty" not in resolved.data.column_names


def test_absent_fields_are_null_columns_and_all_null_fields_wait_for_a_type() -> None:
    resolved = _resolve([{"_id": 1, "later": None}], {"gone": ColumnType("date")})
    assert resolved.data.column_names[: len(ENVELOPE)] == ENVELOPE.names
    assert resolved.data.schema.field("gone").type == pa.timestamp("us", tz="UTC")
    assert resolved.data.to_pylist()[0]["gone"] is None
    assert "later" not in resolved.data.column_names and "later" not in resolved.new_columns


def test_int64_width_is_one_long_family() -> None:
    resolved = _resolve([{"_id": 1, "n": 1}, {"_id": 2, "n": Int64(2**40)}])
    assert [row["n"] for row in resolved.data.to_pylist()] == [1, 2**40]
    assert resolved.rescued == {}


def _land_documents(tmp_path: Path, documents: list[dict], messages: list | None = None) -> tuple[list[str], list[dict]]:
    from bronze_support import land, read_bronze
    from deltalake import DeltaTable

    from bronze_writer.lander import Lander
    from bronze_writer.metrics import BronzeMetrics
    from bronze_writer.settings import BronzeSettings
    from lakehouse_common import lake
    from lakehouse_common.settings import load_settings

    settings = load_settings(BronzeSettings, lake={"root": str(tmp_path / "lake")})
    events = [change_event(index + 1, document) for index, document in enumerate(documents)]
    land(Lander(settings, BronzeMetrics()), messages or records(events))
    uri = lake.bronze_table_uri(settings.lake.root, "shop", "orders")
    columns = [field.name for field in DeltaTable(uri).schema().fields if not field.name.startswith("__")]
    return columns, read_bronze(uri).sort("__kafka_offset").to_dicts()


def test_new_names_differing_only_in_case_in_one_document_are_rescued(tmp_path: Path) -> None:
    """deltalake refused the batch ("duplicate field name") and the writer crash-looped on it."""
    columns, rows = _land_documents(tmp_path, [{"_id": 1, "qty": 2, "Qty": 1}])
    assert columns == ["_id", "Qty"]  # the smallest in code-point order gets the column, wherever it comes from
    assert rows[0]["Qty"] == 1
    assert _rescued(rows[0]) == {"qty": {"type": "int", "value": 2}}


def test_new_names_differing_only_in_case_across_documents_are_rescued(tmp_path: Path) -> None:
    columns, rows = _land_documents(tmp_path, [{"_id": 1, "status": "a"}, {"_id": 2, "Status": "b", "STATUS": None}])
    assert columns == ["_id", "Status"]
    assert [row["Status"] for row in rows] == [None, "b"]
    assert _rescued(rows[0]) == {"status": {"type": "string", "value": "a"}}
    assert _rescued(rows[1]) == {}


def test_a_field_name_with_a_nul_character_is_rescued_not_a_panic(tmp_path: Path) -> None:
    """A third-party producer's record: Arrow's C interface panicked on the NUL (polars PanicException)."""
    from confluent_kafka import Message

    from lakehouse_common import contract

    value = (
        b'{"_id":{"_data":"0001"},"operationType":"insert","ns":{"db":"shop","coll":"orders"},'
        b'"documentKey":{"_id":1},"fullDocument":{"_id":1,"a\\u0000b":1,"ok":true}}'
    )
    headers = [(contract.HEADER_CONTRACT_VERSION, b"1"), (contract.HEADER_VALUE_FORMAT, b"json")]
    message = Message(topic="cdc.shop.orders", partition=0, offset=0, key=b'{"_id":1}', value=value, headers=headers,
                      timestamp=(1, 0))  # fmt: skip
    columns, rows = _land_documents(tmp_path, [], [message])
    assert columns == ["_id", "ok"]
    assert _rescued(rows[0]) == {"a\x00b": {"type": "int", "value": 1}}


# $date values in every form the scanner parses itself (ISO 8601 with Z or an offset, any
# fraction up to nanoseconds, no such day; millisecond counts at and beyond Delta's range).
_CANONICAL_DATES = [
    '"2024-01-01T00:00:00Z"',
    '"2024-02-29T23:59:59.999Z"',
    '"1970-01-01T00:00:00.000001Z"',
    '"2023-06-15T12:30:45.123456789Z"',
    '"2023-06-15T12:30:45+02:00"',
    '"2023-06-15T12:30:45.5-05:30"',
    '"9999-12-31T23:59:59.999Z"',
    '"2023-02-29T00:00:00Z"',
    '{"$numberLong":"-62135596800000"}',
    '{"$numberLong":"253402300799999"}',
    '{"$numberLong":"-62135596800001"}',
    '{"$numberLong":"253402300800000"}',
    '{"$numberLong":"0"}',
    '{"$numberLong":"-1"}',
]
# Forms the scanner leaves to typing's parser (so the whole column is parsed there).
_OTHER_DATES = [
    '"2023-06-15 12:30:45Z"',
    '"2023-06-15T12:30:60Z"',
    '"2023-06-15T24:00:00Z"',
    '"2023-13-01T00:00:00Z"',
    '"2023-06-15T12:30:45.1234567891Z"',
    '"2023-06-15T12:30:45z"',
    '"2023-06-15T12:30:45+0200"',
    '{"$numberLong":"+5"}',
]


def _json_date_records(dates: list[str]) -> list[Message]:
    """Hand-written relaxed Extended JSON events whose wallTime and fullDocument.when are these $date values."""
    messages = []
    for row, date in enumerate(dates):
        value = (
            f'{{"_id":{{"_data":"{row:016x}"}},"operationType":"insert","clusterTime":{{"$timestamp":{{"t":1700000000,'
            f'"i":{row + 1}}}}},"wallTime":{{"$date":{date}}},"ns":{{"db":"shop","coll":"orders"}},'
            f'"documentKey":{{"_id":{row}}},"fullDocument":{{"_id":{row},"when":{{"$date":{date}}}}}}}'
        ).encode()
        headers = [
            (contract.HEADER_CONTRACT_VERSION, b"%d" % contract.CONTRACT_VERSION),
            (contract.HEADER_VALUE_FORMAT, b"json"),
            (contract.HEADER_EVENT_ID, b"%016x" % row),
            (contract.HEADER_OPERATION, b"insert"),
        ]
        messages.append(Message(topic="cdc.shop.orders", partition=0, offset=row, key=b'{"_id":%d}' % row,
                                value=value, headers=headers, timestamp=(1, 1_700_000_000_000)))  # fmt: skip
    return messages


def _typed(frame: pl.DataFrame, field_names: list[str]) -> pa.Table:
    return resolve(frame, field_names, {}, topic="cdc.shop.orders", database="shop", collection="orders",
                   ingested_at=NOW).data  # fmt: skip


@pytest.mark.parametrize("other", [None, *_OTHER_DATES])
def test_dates_typed_the_same_whether_the_scanner_or_typing_parses_them(other: str | None) -> None:
    dates = _CANONICAL_DATES + ([other] if other else [])
    decoded = decode_topic("cdc.shop.orders", collect(_json_date_records(dates)))
    assert decoded.dead_letters == []
    when = DATE_COLUMN.format(decoded.field_names.index("when"))
    parsed_here = [name for name in decoded.frame.columns if name == when or name == WALL_TIME_MICROS]
    # The scanner gives its dates only when it parsed every one of the column.
    assert set(parsed_here) == ({when, WALL_TIME_MICROS} if other is None else set())

    by_scanner = _typed(decoded.frame, decoded.field_names)
    by_typing = _typed(decoded.frame.drop(parsed_here), decoded.field_names)

    assert by_scanner.equals(by_typing)
    rows = by_scanner.to_pylist()
    assert rows[0]["when"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert rows[4]["when"] == datetime(2023, 6, 15, 10, 30, 45, tzinfo=UTC)
    assert rows[7]["when"] is None  # no 29 February in 2023: rescued, not guessed
    assert [rows[row]["when"] is None for row in (8, 9, 10, 11)] == [False, False, True, True]  # Delta's range
