"""Checkpoint records: every one fits the checkpoint topic, whatever the snapshot's size, and reads back whole."""

from __future__ import annotations

import json
import uuid

from cdc_service.checkpoints import (
    CollectionProgress,
    SnapshotState,
    fold_records,
    load_checkpoints,
    snapshot_key,
)
from cdc_service.positions import Position
from cdc_service.publisher import EventPublisher
from cdc_service.settings import CdcSettings

CHECKPOINT_TOPIC_LIMIT = 1024 * 1024  # max.message.bytes the service gives the checkpoint topic


def _state(collections: int, **changes: object) -> SnapshotState:
    position = Position.from_token({"_data": "8265A1B2C3000000012B042C0100"})
    progress = {
        f"tenant_{number // 500:04d}.{'c' * 60}_{number:06d}": CollectionProgress(number % 3 == 0, 1 + number % 7, number)
        for number in range(collections)
    }
    return SnapshotState("deployment", position, progress, cluster_time=(1_700_000_000, 1), **changes)  # type: ignore[arg-type]


def test_a_snapshot_of_many_thousand_collections_fits_the_checkpoint_topic_and_reads_back(kafka_broker) -> None:
    name = f"k{uuid.uuid4().hex[:10]}"
    settings = CdcSettings(
        mongo_uri="mongodb://unused", name=name, kafka={"bootstrap_servers": kafka_broker.bootstrap_servers},
        topics={"prefix": name, "checkpoint_topic": f"{name}.checkpoints", "dead_letter_topic": f"{name}.dlq"},
    )
    state = _state(12_000)
    records = state.records(settings.name)
    assert max(len(key) + len(value or b"") for key, value in records.items()) < CHECKPOINT_TOPIC_LIMIT // 100

    publisher = EventPublisher(settings)
    limit = publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    assert limit >= CHECKPOINT_TOPIC_LIMIT
    publisher.commit(records, settings.topics.checkpoint_topic, 60)
    loaded = load_checkpoints({"bootstrap.servers": kafka_broker.bootstrap_servers}, settings.topics.checkpoint_topic, settings.name)
    assert loaded.snapshots["deployment"].collections == state.collections
    assert loaded.snapshots["deployment"].position == state.position


def test_records_of_an_earlier_snapshot_keep_their_attempt_numbers_only() -> None:
    """A collection record outliving its snapshot (its header was replaced) still numbers the next
    attempt above every id it used, but its finished copy belongs to the old position."""
    older = _state(3, snapshot_id="old")
    newer = SnapshotState("deployment", Position.from_token({"_data": "8265A1B2C4"}), {}, snapshot_id="new")
    records = [*older.records("svc").items(), (snapshot_key("svc", "deployment"), newer.header_json())]
    restored = fold_records("svc", records).snapshots["deployment"]
    assert restored.snapshot_id == "new"
    for namespace, progress in older.collections.items():
        assert restored.collections[namespace] == CollectionProgress(False, progress.attempt, 0)


def test_a_record_of_the_former_single_record_format_still_loads() -> None:
    legacy = {
        "version": 1, "type": "snapshot", "stream": "coll:shop.orders",
        "position": {"token": '{"_data":"82AA01"}', "start_after": False, "operation_time": None},
        "collections": {"shop.orders": {"done": False, "attempt": 99, "copied": 12}},
        "cluster_time": [1, 2], "completed": False, "started_at": 1.0, "snapshot_id": "abc",
    }
    checkpoints = fold_records("svc", [(snapshot_key("svc", "coll:shop.orders"), json.dumps(legacy).encode())])
    state = checkpoints.snapshots["coll:shop.orders"]
    assert state.collections == {"shop.orders": CollectionProgress(False, 99, 12)}
    assert state.cluster_time == (1, 2) and not state.completed
