"""Decoding Kafka records to a frame: envelope, payload, field kinds, dead letters."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime

import pytest
from bronze_support import change_event, claim_records, collect, event_id, records
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from confluent_kafka import Message

from bronze_writer.decode import KIND_COLUMN, TEXT_COLUMN, Records, decode_guarded, decode_topic
from bronze_writer.schema import TYPE_NAMES, Kind
from lakehouse_common import contract
from lakehouse_common.claims import ClaimStore, claim_path
from lakehouse_common.contract import ClaimReference, ValueFormat

EVERY_TYPE = {
    "_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
    "int32": 7,
    "int64": Int64(2**40),
    "double": 2.5,
    "whole_double": 3.0,
    "nan": math.nan,
    "string": 'say "hi"\n',
    "bool": True,
    "null": None,
    "date": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    "old_date": datetime(1950, 1, 1, tzinfo=UTC),
    "far_date": DatetimeMS(2**62),
    "decimal": Decimal128("12.340"),
    "document": {"b": 1, "a": [1, 2]},
    "array": [1, "x"],
    "binary": Binary(b"\x00\x01", 0),
    "uuid": Binary(uuid.UUID(int=1).bytes, 4),
    "timestamp": Timestamp(5, 6),
    "regex": Regex("^a", "i"),
    "code": Code("f()"),
    "min": MinKey(),
    "max": MaxKey(),
}
EXPECTED_KINDS = {
    "_id": Kind.OBJECT_ID,
    "int32": Kind.INT32,
    "int64": Kind.INT64,
    "double": Kind.DOUBLE,
    "whole_double": Kind.DOUBLE,
    "nan": Kind.DOUBLE,
    "string": Kind.STRING,
    "bool": Kind.BOOL,
    "null": Kind.NULL,
    "date": Kind.DATE_ISO,
    "old_date": Kind.DATE_MILLIS,
    "far_date": Kind.DATE_MILLIS,
    "decimal": Kind.DECIMAL,
    "document": Kind.DOCUMENT,
    "array": Kind.ARRAY,
    "binary": Kind.BINARY,
    "uuid": Kind.BINARY,
    "timestamp": Kind.TIMESTAMP,
    "regex": Kind.REGEX,
    "code": Kind.JAVASCRIPT,
    "min": Kind.MIN_KEY,
    "max": Kind.MAX_KEY,
}


@pytest.mark.parametrize("value_format", [ValueFormat.JSON, ValueFormat.BSON])
def test_every_bson_type_gets_its_kind_and_text(value_format: ValueFormat) -> None:
    decoded = decode_topic("cdc.shop.orders", collect(records([change_event(1, EVERY_TYPE)], value_format)))
    assert decoded.dead_letters == []
    row = decoded.frame.row(0, named=True)
    kinds = {name: row[KIND_COLUMN.format(index)] for index, name in enumerate(decoded.field_names)}
    texts = {name: row[TEXT_COLUMN.format(index)] for index, name in enumerate(decoded.field_names)}
    assert decoded.field_names == list(EVERY_TYPE)
    assert kinds == EXPECTED_KINDS
    assert texts["_id"] == "65a1b2c3d4e5f60718293a4b"
    assert texts["string"] == 'say "hi"\n'
    assert texts["int64"] == str(2**40)
    assert texts["whole_double"] == "3.0"
    assert texts["nan"] == "NaN"
    assert texts["decimal"] == "12.340"
    assert texts["date"] == "2024-05-01T12:30:00.000Z"
    assert texts["old_date"] == str(int(datetime(1950, 1, 1, tzinfo=UTC).timestamp() * 1000))
    assert texts["document"] == '{"b":1,"a":[1,2]}'  # document order kept
    assert texts["null"] is None
    # The payload is the whole document as relaxed Extended JSON, decodable back to the same values.
    full = contract.decode_value(row["__full_document"].encode(), ValueFormat.JSON)
    assert full["decimal"] == Decimal128("12.340") and full["timestamp"] == Timestamp(5, 6)
    assert list(full) == list(EVERY_TYPE)


def test_envelope_fields() -> None:
    lsid = {"id": Binary(uuid.UUID(int=7).bytes, 4), "uid": Binary(b"\x01" * 32, 0)}
    event = change_event(
        9,
        None,
        operation="update",
        document_id=ObjectId("65a1b2c3d4e5f60718293a4b"),
        extra={
            "updateDescription": {"updatedFields": {"qty": 3}, "removedFields": ["old"], "truncatedArrays": []},
            "lsid": lsid,
            "txnNumber": Int64(12),
        },
    )
    decoded = decode_topic("cdc.shop.orders", collect(records([event], partition=2, first_offset=40)))
    row = decoded.frame.row(0, named=True)
    assert row["__event_id"] == event_id(9)
    assert row["__resume_token"] == f'{{"_data":"{event_id(9)}"}}'
    assert row["__operation"] == "update"
    assert (row["__db"], row["__collection"]) == ("shop", "orders")
    assert row["__document_key"] == '{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}'
    assert row["__document_id"] == '{"$oid":"65a1b2c3d4e5f60718293a4b"}'
    assert row["__cluster_time_seconds"] == 1_700_000_009 and row["__cluster_time_increment"] == 1
    assert row["__txn_number"] == 12
    assert '"uid":{"$binary"' in row["__lsid"]
    assert row["__update_description"] == '{"updatedFields":{"qty":3},"removedFields":["old"],"truncatedArrays":[]}'
    assert row["__full_document"] is None
    assert (row["__kafka_partition"], row["__kafka_offset"]) == (2, 40)
    assert decoded.last_offsets == {2: 40} and decoded.first_offsets == {2: 40}


def test_snapshot_records_decode_like_inserts() -> None:
    value = contract.snapshot_event(
        {"_id": 1, "name": "a"},
        database="shop",
        collection="orders",
        document_key={"_id": 1},
        position="0000018bcfe56800",
        ordinal=3,
        cluster_time=Timestamp(1_700_000_000, 1),
        wall_time=datetime(2024, 1, 1, tzinfo=UTC),
    )
    row = decode_topic("cdc.shop.orders", collect(records([value]))).frame.row(0, named=True)
    assert row["__operation"] == "snapshot"
    assert row["__event_id"] == contract.snapshot_event_id("0000018bcfe56800", 3)


def _snapshot_complete_marker() -> bytes:
    return contract.snapshot_complete_event(
        database="shop",
        collection="orders",
        position="0000018bcfe56800",
        attempt=2,
        documents=95,
        cluster_time=Timestamp(1_700_000_000, 4),
        wall_time=datetime(2024, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("value_format", [ValueFormat.JSON, ValueFormat.BSON])
def test_a_snapshot_complete_marker_decodes_as_an_event_about_no_document(value_format: ValueFormat) -> None:
    messages = records([change_event(1, {"_id": 1}), _snapshot_complete_marker()], value_format)
    assert messages[1].key() is None
    decoded = decode_topic("cdc.shop.orders", collect(messages))
    assert decoded.dead_letters == []
    row = decoded.frame.row(1, named=True)
    assert row["__operation"] == "snapshotComplete"
    assert row["__event_id"] == contract.snapshot_complete_event_id("0000018bcfe56800", 2) == "0000018bcfe56800.a2.~"
    assert row["__document_key"] is None and row["__document_id"] is None and row["__full_document"] is None
    assert (row["__cluster_time_seconds"], row["__cluster_time_increment"]) == (1_700_000_000, 4)
    assert (row["__db"], row["__collection"]) == ("shop", "orders")


def _message(offset: int, value: bytes | None, headers: list[tuple[str, bytes]] | None, key: bytes | None = None) -> Message:
    return Message(topic="cdc.shop.orders", partition=0, offset=offset, key=key, value=value, headers=headers, timestamp=(1, 0))


def test_poison_records_become_dead_letters_and_the_rest_decodes() -> None:
    good = records([change_event(1, {"_id": 1}), change_event(2, {"_id": 2})])
    version_two = [(contract.HEADER_CONTRACT_VERSION, b"2"), (contract.HEADER_VALUE_FORMAT, b"json")]
    json_headers = [(contract.HEADER_CONTRACT_VERSION, b"1"), (contract.HEADER_VALUE_FORMAT, b"json")]
    bson_headers = [(contract.HEADER_CONTRACT_VERSION, b"1"), (contract.HEADER_VALUE_FORMAT, b"bson")]
    poison = [
        _message(10, b'{"_id":{"_data":"01"},"operationType":"insert"}', version_two),
        _message(11, b'{"_id":{"_data":"02"},"operationType":"insert"}', None),
        _message(12, b"{not json", json_headers),
        _message(13, b'{"operationType":"insert"}', json_headers),
        _message(14, b"\x05\x00\x00\x00", bson_headers),  # truncated BSON
        _message(15, None, json_headers, key=b'{"_id":1}'),  # tombstone without an event id
    ]
    decoded = decode_topic("cdc.shop.orders", collect([good[0], *poison, good[1]]))
    assert decoded.frame["__event_id"].to_list() == [event_id(1), event_id(2)]
    letters = {letter.offset: letter for letter in decoded.dead_letters}
    assert sorted(letters) == [10, 11, 12, 13, 14, 15]
    assert letters[10].error_type == "UnsupportedContractVersionError"
    assert letters[11].error_type == "MissingEventFieldError"
    assert letters[12].error_type == "UndecodableEventError"
    assert letters[13].error_type == "MissingEventFieldError" and "_id" in letters[13].error
    assert letters[14].error_type == "UndecodableEventError"
    assert letters[15].error_type == "MissingEventFieldError" and "tombstone" in letters[15].error
    assert letters[12].value == b"{not json" and letters[12].partition == 0
    assert decoded.last_offsets == {0: 1}  # the records helper numbers good ones 0 and 1


def test_a_tombstone_lands_as_a_delete_of_its_key() -> None:
    headers = [
        (contract.HEADER_CONTRACT_VERSION, b"1"),
        (contract.HEADER_VALUE_FORMAT, b"json"),
        (contract.HEADER_EVENT_ID, b"00000000000000ff"),
    ]
    decoded = decode_topic(
        "cdc.shop.orders", collect([_message(3, None, headers, key=b'{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}')])
    )
    row = decoded.frame.row(0, named=True)
    assert decoded.dead_letters == []
    assert (row["__operation"], row["__event_id"]) == ("delete", "00000000000000ff")
    assert row["__document_id"] == '{"$oid":"65a1b2c3d4e5f60718293a4b"}'


def test_mixed_formats_in_one_batch() -> None:
    json_records = records([change_event(1, {"_id": 1, "a": 1})], ValueFormat.JSON)
    bson_records = records([change_event(2, {"_id": 2, "a": 2})], ValueFormat.BSON, first_offset=1)
    decoded = decode_topic("cdc.shop.orders", collect([*json_records, *bson_records]))
    assert decoded.frame["__event_id"].to_list() == [event_id(1), event_id(2)]
    assert decoded.frame[TEXT_COLUMN.format(decoded.field_names.index("a"))].to_list() == ["1", "2"]


def test_type_names_are_mongodb_aliases() -> None:
    aliases = {"double", "string", "object", "array", "binData", "undefined", "objectId", "bool", "date", "null",
               "regex", "dbPointer", "javascript", "symbol", "javascriptWithScope", "int", "timestamp", "long",
               "decimal", "minKey", "maxKey"}  # fmt: skip
    assert set(TYPE_NAMES.values()) <= aliases
    assert all(re.fullmatch(r"[a-zA-Z]+", name) for name in TYPE_NAMES.values())


def test_unusual_keys_survive_in_the_payload_and_columns() -> None:
    document = {"_id": 1, 'say "hi"': 1, "é\n": "x", "a.b": 2, "$weird": 3, "": 4}
    for value_format in ValueFormat:
        decoded = decode_topic("cdc.shop.orders", collect(records([change_event(1, document)], value_format)))
        row = decoded.frame.row(0, named=True)
        assert decoded.field_names == list(document)
        full = contract.decode_value(row["__full_document"].encode(), ValueFormat.JSON)
        assert full == document and list(full) == list(document)


# -- claim checks ------------------------------------------------------------------------------

LARGE = {"_id": 7, "name": "large", "blob": "x" * 300_000, "nested": {"a": [1, 2, {"b": Decimal128("1.5")}]}}


@pytest.mark.parametrize("value_format", [ValueFormat.JSON, ValueFormat.BSON])
def test_a_claim_record_decodes_exactly_as_the_event_it_references(value_format: ValueFormat, tmp_path) -> None:
    store = ClaimStore(str(tmp_path / "lake"))
    events = [change_event(1, {"_id": 1}), change_event(2, LARGE), change_event(3, {"_id": 3})]
    inline = records(events, value_format)
    claimed = [inline[0], claim_records([events[1]], store, value_format, first_offset=1)[0], inline[2]]
    assert len(claimed[1].value()) < 200 and claimed[1].headers()[0] == (contract.HEADER_CLAIM, b"sha256")

    expected = decode_guarded("cdc.shop.orders", collect(inline), store)
    decoded = decode_guarded("cdc.shop.orders", collect(claimed), store)
    assert decoded.dead_letters == []
    assert decoded.frame.equals(expected.frame)  # same event id, payload, columns, kinds and value bytes
    assert decoded.field_names == expected.field_names
    assert decoded.claims == [ClaimReference.of(records([events[1]], value_format)[0].value()).digest]
    assert decoded.frame["__value_bytes"][1] > 300_000


def test_claims_count_at_their_full_size_in_the_batch_limits(tmp_path) -> None:
    store = ClaimStore(str(tmp_path / "lake"))
    claimed = collect(claim_records([change_event(2, LARGE)], store))
    assert claimed.bytes > 300_000  # the batch closes on the bytes it will hold once resolved
    assert collect(records([change_event(1, {"_id": 1})])).bytes < 1000


def test_a_missing_or_corrupt_claim_is_dead_lettered_with_its_reason_and_the_batch_goes_on(tmp_path) -> None:
    store = ClaimStore(str(tmp_path / "lake"))
    good = records([change_event(1, {"_id": 1}), change_event(5, {"_id": 5})])
    missing, corrupt, garbled = claim_records(
        [change_event(2, LARGE), change_event(3, dict(LARGE, _id=8)), change_event(4, dict(LARGE, _id=9))], store, first_offset=2
    )
    lake_dir = tmp_path / "lake"
    missing_ref = contract.parse_claim_reference(missing.value())
    (lake_dir / claim_path(missing_ref.digest)).unlink()
    corrupt_file = lake_dir / claim_path(contract.parse_claim_reference(corrupt.value()).digest)
    corrupt_file.write_bytes(corrupt_file.read_bytes().replace(b"large", b"LARGE"))
    garbled = Message(
        topic="cdc.shop.orders",
        partition=0,
        offset=4,
        key=garbled.key(),
        value=b'{"lakehouse.claim":{}}',
        headers=garbled.headers(),
        timestamp=(1, 0),
    )
    batch = [
        good[0],
        missing,
        corrupt,
        garbled,
        Message(
            topic="cdc.shop.orders",
            partition=0,
            offset=5,
            key=good[1].key(),
            value=good[1].value(),
            headers=good[1].headers(),
            timestamp=(1, 0),
        ),
    ]
    decoded = decode_guarded("cdc.shop.orders", collect(batch), store)
    assert decoded.frame["__event_id"].to_list() == [event_id(1), event_id(5)]
    letters = {letter.offset: letter for letter in decoded.dead_letters}
    assert {offset: letter.error_type for offset, letter in letters.items()} == {
        2: "ClaimNotFoundError",
        3: "ClaimCorruptError",
        4: "UndecodableEventError",
    }
    assert missing_ref.digest in letters[2].error
    assert letters[2].value == missing.value()  # the reference is kept: it names the event and the claim
    assert decoded.last_offsets == {0: 5} and decoded.claims == []


@pytest.mark.parametrize("value_format", [ValueFormat.JSON, ValueFormat.BSON])
def test_a_reader_that_predates_claims_dead_letters_them_instead_of_landing_garbage(value_format, tmp_path) -> None:
    """The decoding such a reader runs is ``decode_topic`` alone: the claim record is no event to it."""
    store = ClaimStore(str(tmp_path / "lake"))
    batch = [
        *records([change_event(1, {"_id": 1})], value_format),
        *claim_records([change_event(2, LARGE)], store, value_format, first_offset=1),
    ]
    decoded = decode_topic("cdc.shop.orders", collect(batch))
    assert decoded.frame["__event_id"].to_list() == [event_id(1)]
    (letter,) = decoded.dead_letters
    assert letter.offset == 1 and letter.error_type in ("MissingEventFieldError", "UndecodableEventError")


def test_claims_over_the_batch_limit_wait_for_the_next_batch_with_the_rest_of_their_partition(tmp_path) -> None:
    store = ClaimStore(str(tmp_path / "lake"))
    large = [change_event(n, dict(LARGE, _id=n)) for n in range(2, 6)]  # four claims of ~300 KB
    first = records([change_event(1, {"_id": 1})])[0]
    claims = claim_records(large, store, first_offset=1)
    after = records([change_event(9, {"_id": 9})], first_offset=5)[0]
    other = records([change_event(10, {"_id": 10})], partition=1, first_offset=0)[0]
    batch = Records()
    again = batch.extend(collect([first, claims[0], claims[1], other, claims[2], after, claims[3]]), 700_000)
    assert again == {0: 3}  # the third claim would pass 700 KB: it and everything after it on partition 0 wait
    assert list(zip(batch.partitions, batch.offsets, strict=True)) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert 600_000 < batch.bytes <= 700_000

    alone = Records()
    assert alone.extend(collect(claims[2:]), 1000) == {0: 4}  # an empty batch takes one claim, however large
    assert list(alone.offsets) == [3] and alone.bytes > 300_000
    assert Records().extend(collect(claims), None) == {}  # without a limit, everything is taken
