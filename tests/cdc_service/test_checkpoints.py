"""Checkpoint records: every one fits the checkpoint topic, whatever the snapshot's size, and reads back whole."""

from __future__ import annotations

import json
import uuid

from cdc_service.checkpoints import (
    CollectionProgress,
    CopyProgress,
    SnapshotState,
    copy_key,
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


def test_a_copy_record_reads_back_whole_and_the_last_one_per_collection_wins() -> None:
    first = CopyProgress("shop.orders", "coll:shop.orders", "c1", 1, "signal", filter='{"open": true}', signal_id='"s1"')
    later = CopyProgress("shop.orders", "coll:shop.orders", "c1", 1, "signal", bracket=3, last_id="DgAAABBfaWQABwAAAAA=",
                         chunks=4, copied=4000, superseded=12, estimate=10_000, start_position="8265A1B2C3")
    other = CopyProgress("shop.items/x", "coll:shop.items/x", "c2", 3, "new-collection", state="done")
    records = [(copy_key("svc", p.namespace), p.to_json()) for p in (first, other, later)]
    records.append((copy_key("another", "shop.orders"), first.to_json()))
    restored = fold_records("svc", records).copies
    assert restored == {"shop.orders": later, "shop.items/x": other}
    assert len(later.to_json()) < CHECKPOINT_TOPIC_LIMIT // 1000
    # Fields a later version adds are ignored by this one.
    assert CopyProgress.from_dict({**json.loads(later.to_json()), "added_later": 1}) == later


def test_checkpoints_are_read_while_a_running_service_keeps_writing_them(kafka_broker) -> None:
    """End-of-partition may never come while records keep arriving: reading stops at the end it began with."""
    import threading
    import time

    name = f"k{uuid.uuid4().hex[:10]}"
    settings = CdcSettings(
        mongo_uri="mongodb://unused", name=name, kafka={"bootstrap_servers": kafka_broker.bootstrap_servers},
        topics={"prefix": name, "checkpoint_topic": f"{name}.checkpoints", "dead_letter_topic": f"{name}.dlq"},
    )
    publisher = EventPublisher(settings)
    topic = settings.topics.checkpoint_topic
    stop = threading.Event()
    commits = 0

    def keep_writing() -> None:  # as the service does: small commits, one after the other
        nonlocal commits
        while not stop.is_set():
            state = _state(3, snapshot_id=f"s{commits}")
            publisher.commit(state.records(settings.name), topic, 30)
            commits += 1

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while commits < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(3):
            started = time.monotonic()
            loaded = load_checkpoints({"bootstrap.servers": kafka_broker.bootstrap_servers}, topic, settings.name, timeout=20)
            assert time.monotonic() - started < 20 and "deployment" in loaded.snapshots
    finally:
        stop.set()
        writer.join(30)
