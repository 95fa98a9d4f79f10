"""Offline change events: MongoDB's documented shapes, ordered ids, snapshot records per the contract."""

from __future__ import annotations

from datetime import UTC, datetime

import bson
from bson import Timestamp

from data_generator import ChangeEventEncoder, Delete, GeneratorConfig, Insert, Replace, SalesMarketingGenerator, Update
from lakehouse_common.contract import ValueFormat, decode_value, encode_events

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_each_operation_becomes_its_documented_event() -> None:
    encoder = ChangeEventEncoder("shop")
    document = {"_id": "SKU-1", "price": 10.0, "tags": ["a"]}
    after = {"_id": "SKU-1", "price": 12.5, "tags": ["a", "b"]}
    insert, update, replace, delete = encoder.events(
        [
            Insert("products", document, AT),
            Update("products", "SKU-1", after, AT, {"price": 12.5}, ("discontinued",), {"tags": "b"}),
            Replace("products", after, AT),
            Delete("products", "SKU-1", AT),
        ]
    )
    for event, operation_type in ((insert, "insert"), (update, "update"), (replace, "replace"), (delete, "delete")):
        assert event["operationType"] == operation_type
        assert event["ns"] == {"db": "shop", "coll": "products"}
        assert event["documentKey"] == {"_id": "SKU-1"}
        assert isinstance(event["clusterTime"], Timestamp) and event["wallTime"] == AT
    assert insert["fullDocument"] == document and replace["fullDocument"] == after
    assert update["updateDescription"] == {
        "updatedFields": {"price": 12.5, "tags.1": "b"},
        "removedFields": ["discontinued"],
        "truncatedArrays": [],
    }
    assert update["fullDocument"] == after
    assert "fullDocument" not in delete and "updateDescription" not in delete
    ids = [event["_id"]["_data"] for event in (insert, update, replace, delete)]
    assert ids == sorted(ids) and len(set(ids)) == 4, "events in one second still get increasing ids"
    assert [event["clusterTime"].time for event in (insert, delete)] == [int(AT.timestamp())] * 2


def test_without_update_lookup_updates_carry_only_the_description() -> None:
    encoder = ChangeEventEncoder("shop", update_lookup=False)
    (event,) = encoder.events([Update("products", "SKU-1", {"_id": "SKU-1", "price": 1.0}, AT, {"price": 1.0})])
    assert "fullDocument" not in event and event["updateDescription"]["updatedFields"] == {"price": 1.0}


def test_snapshot_records_sort_between_the_events_around_them_and_encode_per_the_contract() -> None:
    generator = SalesMarketingGenerator(GeneratorConfig(seed=3, scale=0.05, history_days=5))
    encoder = ChangeEventEncoder("shop")
    before = list(encoder.events([Insert("products", {"_id": "early"}, AT)]))
    snapshot = list(encoder.snapshot(generator.initial_load()))
    after = list(encoder.events(generator.changes(50)))
    ids = [event["_id"]["_data"] for event in [*before, *snapshot, *after]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(event["operationType"] == "snapshot" for event in snapshot)
    assert snapshot[0]["_id"]["_data"].endswith(".a0.a0")  # attempt 0, ordinal 0 (lakehouse_common.contract)
    encoded = encode_events([bson.encode(event) for event in snapshot[:5] + after[:5]], ValueFormat.JSON)
    assert [item.event_id for item in encoded] == ids[1:6] + ids[1 + len(snapshot) : 6 + len(snapshot)]
    assert decode_value(encoded[0].value, ValueFormat.JSON)["fullDocument"] == snapshot[0]["fullDocument"]
