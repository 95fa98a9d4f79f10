"""The event contract: serialization round trips over every BSON type, keys, topics, headers, ordering."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid

import bson
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument

from lakehouse_common import contract
from lakehouse_common.contract import EncodedEvent, Operation, ValueFormat
from lakehouse_common.errors import (
    MissingEventFieldError,
    UndecodableEventError,
    UnsupportedContractVersionError,
)

EVERY_BSON_TYPE = {
    "object_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
    "decimal": Decimal128("1234567890.123456789012345678901234"),
    "decimal_negative_zero": Decimal128("-0.00"),
    "decimal_nan": Decimal128("NaN"),
    "decimal_infinity": Decimal128("-Infinity"),
    "before_1970": DatetimeMS(-2_208_988_800_000),  # 1900-01-01
    "year_one": DatetimeMS(-62_135_596_800_000),
    "before_year_one": DatetimeMS(-70_000_000_000_000),
    "beyond_9999": DatetimeMS(253_402_300_800_000),  # 10000-01-01, outside Python's datetime
    "far_future": DatetimeMS(2**62),
    "last_iso_millisecond": DatetimeMS(253_402_300_799_999),
    "epoch": DatetimeMS(0),
    "ordinary_date": DatetimeMS(1_700_000_000_123),
    "int32": 2_147_483_647,
    "int32_min": -2_147_483_648,
    "int64": Int64(9_223_372_036_854_775_807),
    "int64_min": Int64(-9_223_372_036_854_775_808),
    "double": 3.141592653589793,
    "double_integral": 2.0,
    "double_tiny": 5e-324,
    "double_huge": 1.7976931348623157e308,
    "nan": math.nan,
    "infinity": math.inf,
    "negative_infinity": -math.inf,
    "negative_zero": -0.0,
    "binary_generic": Binary(b"\x00\x01\xff", 0),
    "binary_function": Binary(b"fn", 1),
    "binary_old": Binary(b"old binary", 2),
    "binary_uuid_legacy": Binary(uuid.UUID(int=1).bytes, 3),
    "binary_uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
    "binary_md5": Binary(bytes(16), 5),
    "binary_encrypted": Binary(b"\x01cipher", 6),
    "binary_compressed_column": Binary(b"\x02col", 7),
    "binary_sensitive": Binary(b"\x03", 8),
    "binary_vector": Binary(b"\x03\x00\x01\x02", 9),
    "binary_user_defined": Binary(b"custom", 128),
    "binary_empty": Binary(b"", 0),
    "timestamp": Timestamp(1_700_000_000, 42),
    "regex": Regex(r'^a"\\b.*$', "xsmi"),
    "min_key": MinKey(),
    "max_key": MaxKey(),
    "dbref": DBRef("customers", ObjectId("65a1b2c3d4e5f60718293a4c"), "shop", extra="field"),
    "code": Code("function () { return 1; }"),
    "code_with_scope": Code("function () { return x; }", {"x": 1}),
    "boolean_true": True,
    "boolean_false": False,
    "null": None,
    "string_with_escapes": 'quote " backslash \\ newline \n tab \t nul \x00 bell \x07 unicode é 漢字 🎉',
    "nested_arrays": [[1, [2, [3, []]]], [], [{"a": [None]}]],
    "nested_documents": {"level1": {"level2": {"level3": {"empty": {}}}}},
    "ключ_юникод": "значение",
    "emoji_🔑": 1,
    "dotted.key": "dots",
    "$dollar_key": "dollars",
    "mixed.$key": "both",
    "": "empty key",
}


def _normalize_relaxed_widths(value):
    """Relaxed Extended JSON keeps values but not integer width: small int64s come back as int32."""
    if isinstance(value, dict):
        return {key: _normalize_relaxed_widths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize_relaxed_widths(item) for item in value]
    if isinstance(value, Int64) and -(2**31) <= value < 2**31:
        return int(value)
    return value


def _change_event(full_document: dict, **fields) -> bytes:
    event = {
        "_id": {"_data": "8265A1B2C3000000012B022C0100296E5A1004"},
        "operationType": "insert",
        "clusterTime": Timestamp(1_700_000_000, 1),
        "wallTime": DatetimeMS(1_700_000_000_000),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": full_document.get("_id", 1)},
        "fullDocument": full_document,
    }
    event.update(fields)
    return bson.encode(event)


@pytest.mark.parametrize("value_format", list(ValueFormat))
def test_every_bson_type_survives_a_round_trip(value_format: ValueFormat) -> None:
    document = {"_id": ObjectId("65a1b2c3d4e5f60718293a4d"), **EVERY_BSON_TYPE}
    raw = _change_event(document)

    (encoded,) = contract.encode_events([raw], value_format)
    decoded = contract.decode_value(encoded.value, value_format)

    if value_format is ValueFormat.BSON:
        assert encoded.value == raw
        assert bson.encode(decoded) == raw
    else:
        keep_every_date = bson.CodecOptions(datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO)
        expected = _normalize_relaxed_widths(bson.decode(raw, codec_options=keep_every_date))
        assert bson.encode(decoded) == bson.encode(expected)


def test_relaxed_json_follows_the_extended_json_specification() -> None:
    text = contract.to_relaxed_json(
        {
            "date": DatetimeMS(1_700_000_000_123),
            "old": DatetimeMS(-1),
            "future": DatetimeMS(253_402_300_800_000),
            "nan": math.nan,
            "negative_zero": -0.0,
            "whole": 2.0,
            "int64": Int64(2**40),
            "oid": ObjectId("65a1b2c3d4e5f60718293a4b"),
            "uuid": Binary(uuid.UUID(int=5).bytes, 4),
        }
    ).decode()
    parsed = json.loads(text)
    assert parsed["date"] == {"$date": "2023-11-14T22:13:20.123Z"}
    assert parsed["old"] == {"$date": {"$numberLong": "-1"}}
    assert parsed["future"] == {"$date": {"$numberLong": "253402300800000"}}
    assert parsed["nan"] == {"$numberDouble": "NaN"}
    assert '"negative_zero":-0.0' in text and '"whole":2.0' in text
    assert parsed["int64"] == 2**40
    assert parsed["oid"] == {"$oid": "65a1b2c3d4e5f60718293a4b"}
    assert parsed["uuid"] == {"$binary": {"base64": "AAAAAAAAAAAAAAAAAAAABQ==", "subType": "04"}}


def test_every_finite_double_keeps_its_exact_value() -> None:
    import random
    import struct

    generator = random.Random(7)
    for _ in range(20_000):
        value = struct.unpack("<d", struct.pack("<Q", generator.getrandbits(64)))[0]
        if math.isnan(value):
            continue
        decoded = contract.decode_value(contract.to_relaxed_json({"v": value}), ValueFormat.JSON)["v"]
        assert struct.pack("<d", decoded) == struct.pack("<d", value)


def test_encoding_extracts_key_id_operation_namespace_and_cluster_time() -> None:
    raw = _change_event({"_id": ObjectId("65a1b2c3d4e5f60718293a4b"), "total": 12.5})
    (event,) = contract.encode_events(raw, ValueFormat.JSON)  # a raw batch: concatenated documents

    assert isinstance(event, EncodedEvent)
    assert event.key == b'{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}'
    assert event.event_id == "8265A1B2C3000000012B022C0100296E5A1004"
    assert event.operation == "insert"
    assert (event.database, event.collection) == ("shop", "orders")
    assert event.cluster_time == (1_700_000_000, 1)


def test_the_same_document_key_always_gives_the_same_kafka_key() -> None:
    first = _change_event({"_id": 7, "a": 1})
    second = _change_event({"_id": 7, "b": "x"}, operationType="replace")
    deletion = bson.encode(
        {"_id": {"_data": "82AA"}, "operationType": "delete", "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": 7}}
    )
    keys = {event.key for event in contract.encode_events([first, second, deletion], ValueFormat.JSON)}
    assert keys == {b'{"_id":7}'}


def test_events_without_a_document_have_no_key() -> None:
    drop_database = bson.encode({"_id": {"_data": "82BB"}, "operationType": "dropDatabase", "ns": {"db": "shop"}})
    (event,) = contract.encode_events([drop_database], ValueFormat.JSON)
    assert event.key is None
    assert (event.database, event.collection) == ("shop", None)


def test_raw_documents_from_pymongo_are_accepted() -> None:
    raw = RawBSONDocument(_change_event({"_id": 1}))
    (event,) = contract.encode_events([raw], ValueFormat.BSON)
    assert event.value == raw.raw


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (bson.encode({"operationType": "insert"}), "_id"),
        (bson.encode({"_id": {"token": 1}, "operationType": "insert"}), "_id._data"),
        (bson.encode({"_id": {"_data": "82"}}), "operationType"),
    ],
)
def test_events_missing_contract_fields_are_rejected_with_the_reason(event: bytes, message: str) -> None:
    with pytest.raises(UndecodableEventError, match=message):
        contract.encode_events([event], ValueFormat.JSON)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x05\x00\x00", b"\xff\xff\xff\x7f\x00", bson.encode({"a": 1})[:-3], b"\x0c\x00\x00\x00\x99a\x00\x00\x00\x00\x00\x00"],
)
def test_malformed_bson_is_an_undecodable_event_not_a_crash(garbage: bytes) -> None:
    with pytest.raises(UndecodableEventError):
        contract.encode_events([garbage], ValueFormat.JSON)


def test_invalid_utf8_is_rejected() -> None:
    valid = bson.encode({"_id": {"_data": "82"}, "operationType": "insert", "s": "ab"})
    broken = valid.replace(b"ab\x00", b"a\xff\x00")
    with pytest.raises(UndecodableEventError, match="UTF-8"):
        contract.encode_events([broken], ValueFormat.JSON)


def test_undecodable_values_raise_a_contract_error() -> None:
    with pytest.raises(UndecodableEventError):
        contract.decode_value(b"{not json", ValueFormat.JSON)
    with pytest.raises(UndecodableEventError):
        contract.decode_value(b"\x01\x02", ValueFormat.BSON)


def test_headers_round_trip_and_wrong_versions_are_rejected() -> None:
    (event,) = contract.encode_events([_change_event({"_id": 1})], ValueFormat.JSON)
    headers = contract.headers_for(event, ValueFormat.JSON)
    parsed = contract.parse_headers(headers)
    assert parsed == contract.EventHeaders(1, ValueFormat.JSON, event.event_id, "insert")

    with pytest.raises(UnsupportedContractVersionError, match="contract version 2"):
        contract.parse_headers([(contract.HEADER_CONTRACT_VERSION, b"2")])
    with pytest.raises(MissingEventFieldError):
        contract.parse_headers([])
    with pytest.raises(UndecodableEventError):
        contract.parse_headers([(contract.HEADER_CONTRACT_VERSION, b"1"), (contract.HEADER_VALUE_FORMAT, b"avro")])


def test_topic_names_follow_the_convention_and_stay_valid() -> None:
    assert contract.topic_name("cdc", "shop", "orders") == "cdc.shop.orders"
    assert contract.topic_name("cdc", "shop", "order.items-2024_v2") == "cdc.shop.order.items-2024_v2"  # plain: unchanged
    escaped = contract.topic_name("cdc", "shop", "order items/2024")
    assert re.fullmatch(r"cdc\.shop\.order_items_2024-[0-9a-f]{8}", escaped)
    assert contract.topic_name("cdc", "shop", "orders", {"shop.orders": "sales-orders"}) == "sales-orders"
    assert contract.topic_name("", "shop", "orders") == "shop.orders"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("shop", "заказы"), ("shop", "товары")),  # both were cdc.shop.______
        (("shop", "order items"), ("shop", "order_items")),  # sanitised onto a plain name
        (("shop", "a/b"), ("shop", "a b")),
        (("магазин", "orders"), ("склад", "orders")),  # databases are escaped the same way
        (("shop", "x.y"), ("shop.x", "y")),  # a dot cannot move between database and collection (MongoDB forbids it anyway)
    ],
)
def test_distinct_namespaces_never_share_a_topic(first: tuple[str, str], second: tuple[str, str]) -> None:
    one, other = contract.topic_name("cdc", *first), contract.topic_name("cdc", *second)
    assert one != other
    assert contract.topic_collision_key(one) != contract.topic_collision_key(other)
    for topic in (one, other):
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic)
    assert contract.topic_name("cdc", *first) == one  # stable across runs and hosts


def test_escaped_names_are_valid_path_segments_and_plain_names_stay_as_they_are() -> None:
    assert contract.safe_name("orders") == "orders"
    assert contract.safe_name("order items") != contract.safe_name("order_items") == "order_items"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", contract.safe_name("заказы\x00/.."))


def test_a_mapping_may_not_merge_collections_into_one_topic() -> None:
    contract.check_topic_mapping({"shop.orders": "orders", "shop.customers": "customers"})
    with pytest.raises(ValueError, match="one topic per collection"):
        contract.check_topic_mapping({"shop.orders": "everything", "shop.customers": "everything"})
    with pytest.raises(ValueError, match="not a valid Kafka topic"):
        contract.check_topic_mapping({"shop.orders": "bad topic"})


def test_a_mapping_may_not_create_topics_kafka_considers_colliding() -> None:
    with pytest.raises(ValueError, match="collide"):
        contract.check_topic_mapping({"shop.orders": "sales.orders", "shop.customers": "sales_orders"})


def test_snapshot_ids_order_attempts_and_ordinals_for_any_number_of_restarts() -> None:
    position = "8265A1B2C3000000012B042C0100"
    after = position + "296E5A1004"
    pairs = [
        (attempt, ordinal)
        for attempt in (*range(0, 130), 999, 10**6, 10**25, 10**40)
        for ordinal in (1, 2, 9, 10, 99_999, 10**12, 10**13)
    ]
    ids = [contract.snapshot_event_id(position, ordinal, attempt=attempt) for attempt, ordinal in pairs]
    assert sorted(ids) == ids  # (attempt, ordinal) order is string order: later attempts above earlier ones
    assert len(set(ids)) == len(ids)
    assert all(position < event_id < after for event_id in ids)
    # Ids of the former fixed-width scheme (attempt * 10**10 + ordinal, twelve digits) sort below every new one.
    legacy = f"{position}.{99 * 10**10 + 12345:012d}"
    assert legacy < min(ids)
    for (attempt, ordinal), event_id in zip(pairs, ids, strict=True):
        assert contract.parse_snapshot_event_id(event_id) == (position, attempt, ordinal)
    assert contract.parse_snapshot_event_id(legacy) == (position, 99, 12345)
    assert contract.parse_snapshot_event_id(position) is None


def test_snapshot_ids_sort_between_the_events_before_and_after_the_snapshot() -> None:
    position = "8265A1B2C3000000012B042C0100"
    before = "8265A1B2C3000000012B022C0100296E5A1004"
    after_same_time = position + "296E5A1004"
    after_later = "8265A1B2C4000000012B022C0100296E5A1004"
    first = contract.snapshot_event_id(position, 0)
    second = contract.snapshot_event_id(position, 1)
    assert before < position < first < second < after_same_time < after_later
    # The MongoDB stand-in's tokens are fixed-width hex timestamps; the same order holds.
    assert "6b058c0600000004" < contract.snapshot_event_id("6b058c0600000005", 0) < "6b058c0600000006"


def test_chunk_ids_sort_between_the_changes_before_and_after_the_high_watermark_of_another_collection() -> None:
    """A chunk's position is the high watermark's event id, from the signal collection: tokens of
    other collections order by cluster time first (real KeyStrings; the stand-in's hex timestamps)."""
    data, signals = "296E5A1004" + "11" * 16 + "46645F69640029", "296E5A1004" + "EE" * 16 + "46645F69640029"
    for token in (
        lambda seconds, inc, uuid: f"82{seconds:08X}{inc:08X}2B022C0100{uuid}",
        lambda seconds, inc, uuid: f"{seconds:08x}{inc:08x}",
    ):
        high = token(1_700_000_000, 7, signals)
        before = [token(1_700_000_000, 6, data), token(1_699_999_999, 900, data)]
        after = [token(1_700_000_000, 8, data), token(1_700_000_001, 0, data)]
        records = [
            contract.snapshot_event_id(high, ordinal, attempt=attempt) for attempt in (1, 12) for ordinal in (1, 4096, 10**9)
        ]
        assert max(before) < high < min(records) and max(records) < min(after)
        assert all(contract.parse_snapshot_event_id(record).position == high for record in records)


def test_snapshot_events_have_the_shape_of_an_insert() -> None:
    document = RawBSONDocument(bson.encode({"_id": 5, "name": "Ada"}))
    raw = contract.snapshot_event(
        document,
        database="shop",
        collection="customers",
        document_key={"_id": 5},
        position="6b058c0600000005",
        ordinal=3,
        cluster_time=Timestamp(1_795_525_638, 5),
        wall_time=dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
    )
    (event,) = contract.encode_events([raw], ValueFormat.JSON)
    assert event.operation == Operation.SNAPSHOT
    assert event.event_id == "6b058c0600000005.a0.a3"  # attempt 0, ordinal 3
    assert event.key == b'{"_id":5}'
    decoded = contract.decode_value(event.value, ValueFormat.JSON)
    assert decoded["fullDocument"] == {"_id": 5, "name": "Ada"}
    assert decoded["ns"] == {"db": "shop", "coll": "customers"}


def test_ndjson_conversion_of_bson_values() -> None:
    values = [bson.encode({"a": 1}), bson.encode({"b": DatetimeMS(0)})]
    assert contract.values_to_ndjson(values) == b'{"a":1}\n{"b":{"$date":"1970-01-01T00:00:00.000Z"}}\n'


def _event_in(database: str, collection: str | None, number: int, operation: str = "insert") -> bytes:
    event = {
        "_id": {"_data": f"82{number:04d}"},
        "operationType": operation,
        "clusterTime": Timestamp(1_700_000_000, number),
        "ns": {"db": database} if collection is None else {"db": database, "coll": collection},
    }
    if collection is not None:
        event.update(documentKey={"_id": number}, fullDocument={"_id": number, "pad": "x" * number})
    return bson.encode(event)


@pytest.mark.parametrize("value_format", list(ValueFormat))
@pytest.mark.parametrize("as_concatenated_batch", [False, True])
def test_columns_hold_the_records_of_encode_events_and_headers_for(
    value_format: ValueFormat, as_concatenated_batch: bool
) -> None:
    raws = [
        _event_in("shop", "orders", 1),
        _event_in("shop", "orders", 2, "update"),
        _event_in("crm", "people", 3),
        _event_in("shop", None, 4, "dropDatabase"),
        _event_in("shop", "orders", 5, "delete"),
    ]
    events = b"".join(raws) if as_concatenated_batch else [RawBSONDocument(raw) for raw in raws]

    columns = contract.encode_event_columns(events, value_format)
    expected = contract.encode_events(events, value_format)

    assert len(columns) == len(expected)
    assert columns.keys == [event.key for event in expected]
    assert columns.values == [event.value for event in expected]
    assert columns.headers == [contract.headers_for(event, value_format) for event in expected]
    assert columns.namespaces == [("shop", "orders"), ("crm", "people"), ("shop", None)]
    assert columns.namespace_of == [0, 0, 1, 2, 0]
    assert [columns.namespace(index) for index in range(5)] == [(e.database, e.collection) for e in expected]
    assert columns.counts == [("insert", 0, 1), ("update", 0, 1), ("insert", 1, 1), ("dropDatabase", 2, 1), ("delete", 0, 1)]
    assert columns.largest == max(len(e.value) + len(e.key or b"") for e in expected)
    assert [columns.event(index) for index in range(5)] == expected
    assert [columns.event_id(index) for index in range(5)] == [e.event_id for e in expected]
    assert [columns.operation(index) for index in range(5)] == [e.operation for e in expected]


def test_columns_of_one_namespace_need_no_index_and_share_the_constant_headers() -> None:
    columns = contract.encode_event_columns([_event_in("shop", "orders", n) for n in range(1, 4)], ValueFormat.JSON)
    assert columns.namespace_of is None and columns.namespaces == [("shop", "orders")]
    assert columns.counts == [("insert", 0, 3)]
    first, second = columns.headers[0], columns.headers[1]
    assert all(a is b for a, b in zip(first[:2], second[:2], strict=True)) and first[3] is second[3]
    assert contract.encode_event_columns([], ValueFormat.JSON).largest == 0


def test_columns_refuse_an_undecodable_batch_naming_the_event() -> None:
    with pytest.raises(UndecodableEventError, match="change event 1"):
        contract.encode_event_columns([_event_in("shop", "orders", 1), bson.encode({"_id": {"_data": "82"}})], ValueFormat.JSON)
