"""Snapshot records: the contract's shape, ids above every earlier attempt, keys cut from the bytes;
one snapshot-complete marker per collection after its records."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.raw_bson import RawBSONDocument
from cdc_support import read_topic

from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.checkpoints import load_checkpoints
from cdc_service.snapshot import (
    CopyTask,
    SnapshotBatch,
    SnapshotCopied,
    build_snapshot_complete_event,
    build_snapshot_events,
    copy_collection,
    document_key,
    document_key_bytes,
)
from lakehouse_common.contract import (
    Operation,
    ValueFormat,
    absence_position,
    encode_events,
    parse_snapshot_event_id,
    snapshot_complete_event_id,
    snapshot_event_id,
)
from lakehouse_common.lifecycle import ExitCode


@pytest.mark.parametrize(
    "identifier",
    [
        ObjectId("65a1b2c3d4e5f60718293a4b"),
        7,
        Int64(2**40),
        2.5,
        "text-id",
        {"a": 1, "b": [1, 2]},
        Binary(uuid.UUID("6f1d3c2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f").bytes, 4),
        Decimal128("1.5"),
        True,
        dt.datetime(2024, 1, 1),
        None,
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


# MongoDB's documentKey on a sharded collection (the server's DocumentKey::getShardKeyAndId and the
# change-events reference: "For sharded collections, this field also displays the full shard key
# for the document. The _id field is not repeated if it is already a part of the shard key"): the
# shard key's fields in the shard key's order, dotted paths named as written, fields the document
# lacks left out, then _id unless the shard key holds it already.
SHARDED_KEYS = [
    (["region"], {"_id": 1001, "region": "eu", "total": 1}, {"region": "eu", "_id": 1001}),
    (["region.code", "_id"], {"_id": 1, "region": {"code": "eu"}, "x": 2}, {"region.code": "eu", "_id": 1}),
    (["_id", "region"], {"_id": 1, "region": "eu"}, {"_id": 1, "region": "eu"}),
    (["tenant", "_id", "day"], {"_id": 7, "day": 3, "tenant": "t1"}, {"tenant": "t1", "_id": 7, "day": 3}),
    (["region"], {"_id": 2, "total": 5}, {"_id": 2}),  # no region: MongoDB leaves it out
    (["region"], {"_id": 3, "region": None}, {"region": None, "_id": 3}),  # an explicit null is kept
    (["_id"], {"_id": 4, "v": 1}, {"_id": 4}),  # hashed _id
]


@pytest.mark.parametrize(("shard_key", "document", "mongodb_key"), SHARDED_KEYS)
def test_a_snapshot_record_and_a_change_event_of_one_document_share_the_kafka_key(
    shard_key: list[str], document: dict, mongodb_key: dict
) -> None:
    stored = RawBSONDocument(bson.encode(document), RAW_CODEC_OPTIONS)
    task = CopyTask("coll:shop.orders", "shop", "orders", "82AA01", attempt=1, cluster_time=(1_700_000_000, 3))
    (snapshot,) = encode_events(build_snapshot_events([stored], task, 1, shard_key), ValueFormat.JSON)
    change = {
        "_id": {"_data": "82AA0200"},
        "operationType": "update",
        "clusterTime": bson.Timestamp(1_700_000_001, 1),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": mongodb_key,
        "updateDescription": {"updatedFields": {"total": 2}, "removedFields": [], "truncatedArrays": []},
    }
    (event,) = encode_events([bson.encode(change)], ValueFormat.JSON)
    assert snapshot.key == event.key  # byte for byte: the same partition


def test_snapshot_records_have_the_insert_shape_and_ordered_ids() -> None:
    task = CopyTask("coll:shop.orders", "shop", "orders", "82AA01", attempt=2, cluster_time=(1_700_000_000, 3))
    documents = [RawBSONDocument(bson.encode({"_id": i, "total": i * 1.5}), RAW_CODEC_OPTIONS) for i in range(3)]
    events = build_snapshot_events(documents, task, 1, None)
    encoded = encode_events(events, ValueFormat.JSON)

    assert [e.event_id for e in encoded] == [snapshot_event_id("82AA01", 1 + i, attempt=2) for i in range(3)]
    assert all(e.operation == "snapshot" for e in encoded)
    assert encoded[1].key == b'{"_id":1}'
    decoded = bson.decode(events[1])
    assert decoded["fullDocument"] == {"_id": 1, "total": 1.5}
    assert decoded["ns"] == {"db": "shop", "coll": "orders"}
    assert decoded["clusterTime"] == bson.Timestamp(1_700_000_000, 3)
    # A later attempt's records sort above every record of an earlier one, and before live events.
    earlier = snapshot_event_id("82AA01", 999_999, attempt=1)
    assert earlier < encoded[0].event_id < "82AA02"


def test_every_later_attempt_sorts_above_the_earlier_ones_past_a_hundred_restarts() -> None:
    document = [RawBSONDocument(bson.encode({"_id": 1}), RAW_CODEC_OPTIONS)]
    ids = []
    for attempt in range(1, 260):
        task = CopyTask("coll:shop.orders", "shop", "orders", "82AA01", attempt=attempt, cluster_time=(1, 1))
        first, last = encode_events(build_snapshot_events(document * 2, task, 1, None), ValueFormat.JSON)
        ids.extend([first.event_id, last.event_id])
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_copy_in_its_hundredth_attempt_still_runs(mongo_database) -> None:
    mongo_database["orders"].insert_many([{"_id": i} for i in range(5)])
    client = mongo_database.client
    task = CopyTask("coll:x.orders", mongo_database.name, "orders", "82AA01", attempt=100, cluster_time=(1, 1))
    emitted: list[object] = []
    copy_collection(client, task, lambda item: emitted.append(item) or True, threading.Event(), 2, ValueFormat.JSON)
    batches = [item for item in emitted if isinstance(item, SnapshotBatch)]
    ids = [batch.events.events.event_id(index) for batch in batches for index in range(len(batch.events.events))]
    assert ids == [snapshot_event_id("82AA01", ordinal, attempt=100) for ordinal in range(1, 6)]
    assert isinstance(emitted[-1], SnapshotCopied) and emitted[-1].copied == 5


def test_a_snapshot_complete_marker_names_its_copy_and_has_no_key() -> None:
    task = CopyTask("coll:shop.orders", "shop", "orders", "82AA01", attempt=3, cluster_time=(1_700_000_000, 3))
    (marker,) = encode_events([build_snapshot_complete_event(task, 7)], ValueFormat.JSON)
    assert marker.event_id == snapshot_complete_event_id("82AA01", 3) and marker.operation == "snapshotComplete"
    assert marker.key is None and (marker.database, marker.collection) == ("shop", "orders")
    assert marker.cluster_time == (1_700_000_000, 3)
    decoded = bson.decode(build_snapshot_complete_event(task, 7))
    assert "documentKey" not in decoded
    assert decoded["snapshot"] == {"position": "82AA01", "attempt": 3, "documents": 7}
    # Below every record of the attempt, above every record of an earlier one.
    (first,) = encode_events(build_snapshot_events([RawBSONDocument(bson.encode({"_id": 1}))], task, 1, None), ValueFormat.JSON)
    position = absence_position(marker.event_id, marker.operation)
    assert position is not None and snapshot_event_id("82AA01", 10**6, attempt=2) < position < first.event_id


def _markers(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record["headers"].operation == Operation.SNAPSHOT_COMPLETE]


def _snapshot(env: dict[str, str], run_service: Any, **run_arguments: Any) -> Any:
    service = run_service(env, snapshot_only=True, **run_arguments)
    assert service.join(120) == ExitCode.OK
    return service


def _topic_records(kafka_broker: Any, env: dict[str, str], namespace: str, expect: int) -> list[dict[str, Any]]:
    topic = f"{env['CDC_TOPICS__PREFIX']}.{namespace}"
    return sorted(read_topic(kafka_broker.bootstrap_servers, topic, expect=expect, idle_s=1.0), key=lambda r: r["offset"])


def test_the_initial_snapshot_publishes_one_marker_per_collection_after_its_records(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    counts = {"orders": 25, "customers": 3, "empty": 0}
    for name, count in counts.items():
        mongo_database.create_collection(name)
        if count:
            mongo_database[name].insert_many([{"_id": number, "name": name} for number in range(count)])
    env = cdc_env(CDC_TOPICS__PARTITIONS="1", CDC_SNAPSHOT__BATCH_SIZE="4")  # one partition: offsets are publish order
    service = _snapshot(env, run_service)
    snapshots = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).snapshots

    for name, count in counts.items():
        namespace = f"{mongo_database.name}.{name}"
        records = _topic_records(kafka_broker, env, namespace, count + 1)
        assert [r["headers"].operation for r in records] == ["snapshot"] * count + ["snapshotComplete"], name
        marker = records[-1]
        event = marker["event"]
        assert marker["key"] is None and "documentKey" not in event
        copied = [parse_snapshot_event_id(r["headers"].event_id) for r in records[:-1]]
        state = snapshots[f"coll:{namespace}"]
        position, attempt = state.position.event_id, state.collections[namespace].attempt
        assert {(c.position, c.attempt) for c in copied} <= {(position, attempt)}  # the records' own position
        assert marker["headers"].event_id == snapshot_complete_event_id(position, attempt)
        assert event["snapshot"] == {"position": position, "attempt": attempt, "documents": count}
        assert (event["clusterTime"].time, event["clusterTime"].inc) == state.cluster_time
        assert event["ns"] == {"db": mongo_database.name, "coll": name}
        assert service.service.metrics.events_published.labels("snapshotComplete", namespace)._value.get() == 1  # noqa: SLF001


def test_a_snapshot_taken_again_publishes_its_marker_under_its_own_attempt(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    orders = mongo_database["orders"]
    orders.insert_many([{"_id": number} for number in range(5)])
    env = cdc_env(CDC_TOPICS__PARTITIONS="1")
    namespace = f"{mongo_database.name}.orders"
    _snapshot(env, run_service)
    orders.delete_one({"_id": 0})  # while nothing streams: only the copy's absence says it
    _snapshot(env, run_service, force_snapshot=[f"coll:{namespace}"])

    records = _topic_records(kafka_broker, env, namespace, 5 + 1 + 4 + 1)
    first, second = _markers(records)
    assert [m["event"]["snapshot"]["attempt"] for m in (first, second)] == [1, 2]
    assert second["event"]["snapshot"]["documents"] == 4
    again = [r for r in records if r["offset"] > first["offset"] and r["headers"].operation == "snapshot"]
    assert len(again) == 4 and all(r["offset"] < second["offset"] for r in again)
    assert {parse_snapshot_event_id(r["headers"].event_id).attempt for r in again} == {2}
    position = second["event"]["snapshot"]["position"]
    assert second["headers"].event_id == snapshot_complete_event_id(position, 2)
    # The deleted document's only record, of attempt 1, sorts below the new marker's absence position.
    gone = next(r for r in records if r["headers"].operation == "snapshot" and r["event"]["documentKey"]["_id"] == 0)
    assert gone["headers"].event_id < absence_position(second["headers"].event_id, "snapshotComplete")
