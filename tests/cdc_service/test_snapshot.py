"""Snapshot records: the contract's shape, ids above every earlier attempt, keys cut from the bytes."""

from __future__ import annotations

import datetime as dt
import uuid

import bson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.raw_bson import RawBSONDocument

from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.snapshot import ORDINALS_PER_ATTEMPT, CopyTask, build_snapshot_events, document_key, document_key_bytes
from lakehouse_common.contract import ValueFormat, encode_events, snapshot_event_id


@pytest.mark.parametrize(
    "identifier",
    [
        ObjectId("65a1b2c3d4e5f60718293a4b"), 7, Int64(2**40), 2.5, "text-id", {"a": 1, "b": [1, 2]},
        Binary(uuid.uuid4().bytes, 4), Decimal128("1.5"), True, dt.datetime(2024, 1, 1), None,
    ],
)
def test_the_document_key_is_cut_from_the_bytes(identifier: object) -> None:
    document = bson.encode({"_id": identifier, "payload": "x" * 100})
    assert bson.decode(document_key_bytes(document)) == {"_id": identifier}


def test_unusual_layouts_fall_back_to_decoding() -> None:
    # bson.encode moves a top-level _id first, as MongoDB stores it; a nested document keeps its order.
    document = RawBSONDocument(bson.encode({"d": {"name": "first", "_id": 5}}), RAW_CODEC_OPTIONS)["d"]
    assert document_key_bytes(document.raw) is None
    assert document_key(document, None) == {"_id": 5}
    sharded = RawBSONDocument(bson.encode({"_id": 1, "region": {"code": "eu"}, "x": 2}), RAW_CODEC_OPTIONS)
    key = document_key(sharded, ["region.code", "_id"])
    assert list(key) == ["region.code", "_id"] and key["region.code"] == "eu"


def test_snapshot_records_have_the_insert_shape_and_ordered_ids() -> None:
    task = CopyTask("coll:shop.orders", "shop", "orders", "82AA01", attempt=2, cluster_time=(1_700_000_000, 3))
    documents = [RawBSONDocument(bson.encode({"_id": i, "total": i * 1.5}), RAW_CODEC_OPTIONS) for i in range(3)]
    first = task.attempt * ORDINALS_PER_ATTEMPT + 1
    events = build_snapshot_events(documents, task, first, None)
    encoded = encode_events(events, ValueFormat.JSON)

    assert [e.event_id for e in encoded] == [snapshot_event_id("82AA01", first + i) for i in range(3)]
    assert all(e.operation == "snapshot" for e in encoded)
    assert encoded[1].key == b'{"_id":1}'
    decoded = bson.decode(events[1])
    assert decoded["fullDocument"] == {"_id": 1, "total": 1.5}
    assert decoded["ns"] == {"db": "shop", "coll": "orders"}
    assert decoded["clusterTime"] == bson.Timestamp(1_700_000_000, 3)
    # A later attempt's records sort above every record of an earlier one, and before live events.
    earlier = snapshot_event_id("82AA01", 1 * ORDINALS_PER_ATTEMPT + 999_999)
    assert earlier < encoded[0].event_id < "82AA02"
