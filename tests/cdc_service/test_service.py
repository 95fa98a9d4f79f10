"""The service end to end: the MongoDB stand-in (and, with Docker, a real replica set) to a real broker."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections import Counter

import pymongo
import pytest
from cdc_support import apply_events, event_ids, read_topic, settings_from

from cdc_service.checkpoints import CollectionProgress, SnapshotState, load_checkpoints
from cdc_service.positions import Position
from cdc_service.replay import ReplayPlan, write_plan, write_records
from cdc_service.scope import StreamSpec

pytestmark = pytest.mark.timeout(240)


def _topic(env: dict[str, str], database: str, collection: str) -> str:
    return f"{env['CDC_TOPICS__PREFIX']}.{database}.{collection}"


def _checkpoints(env: dict[str, str], bootstrap: str):
    return load_checkpoints({"bootstrap.servers": bootstrap}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"])


def _wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def test_insert_update_delete_flow(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    customers = mongo_database["customers"]
    customers.insert_one({"_id": 1, "name": "Ada", "tier": "gold"})
    env = cdc_env()
    service = run_service(env)
    server = service.service.serve_http()
    try:
        service.streaming(1)
        customers.insert_one({"_id": 2, "name": "Grace", "tier": "silver"})
        customers.update_one({"_id": 2}, {"$set": {"tier": "gold"}, "$unset": {"name": ""}})
        topic = _topic(env, mongo_database.name, "customers")
        read_topic(kafka_broker.bootstrap_servers, topic, expect=3, idle_s=0.3)  # looked up before the delete below
        customers.replace_one({"_id": 1}, {"name": "Ada Lovelace"})
        customers.delete_one({"_id": 2})
        records = read_topic(kafka_broker.bootstrap_servers, topic, expect=6)

        operations = [r["event"]["operationType"] for r in sorted(records, key=lambda r: r["headers"].event_id)]
        assert operations == ["snapshot", "snapshotComplete", "insert", "update", "replace", "delete"]
        by_operation = {r["event"]["operationType"]: r for r in records}
        assert by_operation["update"]["event"]["fullDocument"] == {"_id": 2, "tier": "gold"}  # updateLookup
        assert by_operation["update"]["event"]["updateDescription"]["removedFields"] == ["name"]
        assert by_operation["delete"]["key"] == b'{"_id":2}'
        assert by_operation["snapshot"]["event"]["fullDocument"] == {"_id": 1, "name": "Ada", "tier": "gold"}
        for record in records:
            headers = record["headers"]
            assert headers.contract_version == 1 and headers.event_id == record["event"]["_id"]["_data"]
            assert headers.operation == record["event"]["operationType"]
        # One document's changes share a partition, in event-id order.
        partitions = {r["key"]: r["partition"] for r in records}
        for key, partition in partitions.items():
            ids = [r["headers"].event_id for r in sorted(records, key=lambda r: r["offset"]) if r["key"] == key]
            assert ids == sorted(ids)
            assert {r["partition"] for r in records if r["key"] == key} == {partition}

        # Metrics and health.
        _wait_for(lambda: _metric(server.port, "cdc_events_published_total") >= 5, message="published metric")
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        assert f'cdc_events_read_total{{namespace="{mongo_database.name}.customers",operation="update"}} 1.0' in body
        for name in ("cdc_publish_latency_seconds_count", "cdc_lag_seconds", "cdc_checkpoint_age_seconds", "cdc_errors_total"):
            assert name in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5).status == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status == 200
    finally:
        assert service.stop() == 0
        server.stop()
    checkpoint = _checkpoints(env, kafka_broker.bootstrap_servers).streams[f"coll:{mongo_database.name}.customers"]
    assert checkpoint.position.event_id >= max(event_ids(records))


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{"))


def test_a_restart_resumes_without_loss(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    orders = mongo_database["orders"]
    orders.insert_one({"_id": 0})
    env = cdc_env()
    first = run_service(env)
    first.streaming(1)
    orders.insert_many([{"_id": i} for i in range(1, 51)])
    topic = _topic(env, mongo_database.name, "orders")
    read_topic(kafka_broker.bootstrap_servers, topic, expect=51, idle_s=0.5)
    assert first.stop() == 0

    orders.insert_many([{"_id": i} for i in range(51, 101)])  # while the service is down
    orders.delete_one({"_id": 0})
    second = run_service(env)
    second.streaming(1)
    orders.insert_many([{"_id": i} for i in range(101, 121)])
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=123)
    second.stop()

    ids = event_ids(records)
    assert len(ids) == len(set(ids)) == 123  # nothing lost, nothing twice after a clean stop
    assert sorted(r["event"]["documentKey"]["_id"] for r in records if r["event"]["operationType"] == "insert") == list(
        range(1, 121)
    )
    assert Counter(r["event"]["operationType"] for r in records) == {
        "insert": 120,
        "snapshot": 1,
        "snapshotComplete": 1,
        "delete": 1,
    }


def test_a_heartbeat_advances_the_checkpoint_of_a_quiet_collection(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    quiet, busy = mongo_database["quiet"], mongo_database["busy"]
    quiet.insert_one({"_id": 1})
    busy.insert_one({"_id": 1})
    env = cdc_env()
    service = run_service(env)
    service.streaming(2)
    stream_id = f"coll:{mongo_database.name}.quiet"
    first = _wait_for(lambda: _checkpoints(env, kafka_broker.bootstrap_servers).streams.get(stream_id), message="checkpoint")
    for number in range(2, 30):  # other collections move the cluster time on
        busy.insert_one({"_id": number})
        time.sleep(0.1)

    def advanced():
        checkpoint = _checkpoints(env, kafka_broker.bootstrap_servers).streams[stream_id]
        return checkpoint if checkpoint.kind == "heartbeat" and checkpoint.position.event_id > first.position.event_id else None

    later = _wait_for(advanced, timeout=30, message="a heartbeat checkpoint")
    service.stop()
    assert later.written_at > first.written_at
    quiet_records = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "quiet"), idle_s=0.5)
    assert sorted(r["event"]["operationType"] for r in quiet_records) == ["snapshot", "snapshotComplete"]  # nothing else


def test_replay_from_a_token_and_from_a_time(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    items = mongo_database["items"]
    items.insert_one({"_id": 0})
    env = cdc_env()
    service = run_service(env)
    service.streaming(1)
    for number in range(1, 11):
        items.insert_one({"_id": number})
        if number == 5:
            time.sleep(1.2)  # events 6.. start in a later second than event 5
    topic = _topic(env, mongo_database.name, "items")
    records = sorted(
        read_topic(kafka_broker.bootstrap_servers, topic, expect=12, idle_s=0.5), key=lambda r: r["headers"].event_id
    )
    assert service.stop() == 0
    inserts = [r for r in records if r["event"]["operationType"] == "insert"]
    stream_id = f"coll:{mongo_database.name}.items"
    settings = settings_from(env)

    token = inserts[6]["event"]["_id"]  # replay after the 7th insert
    write_plan(settings, ReplayPlan(positions={stream_id: Position.from_token(token)}))
    replayed = run_service(env)
    replayed.streaming(1)
    again = read_topic(kafka_broker.bootstrap_servers, topic, expect=15, idle_s=1.0)
    replayed.stop()
    counts = Counter(event_ids(again))
    assert sorted(i for i, n in counts.items() if n == 2) == event_ids(inserts[7:])  # the same ids: bronze drops them

    cluster_time = inserts[5]["event"]["clusterTime"]  # the 6th insert, first of its second
    write_plan(settings, ReplayPlan(positions={stream_id: Position.from_time((cluster_time.time, 0))}))
    from_time = run_service(env)
    from_time.streaming(1)
    third = read_topic(kafka_broker.bootstrap_servers, topic, expect=15 + 5, idle_s=1.0)
    from_time.stop()
    counts = Counter(event_ids(third))
    assert sorted(i for i, n in counts.items() if n == 3) == event_ids(inserts[7:])
    assert sorted(i for i, n in counts.items() if n == 2) == event_ids(inserts[5:7])


def test_a_snapshot_with_concurrent_writes_ends_in_the_final_state(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    accounts = mongo_database["accounts"]
    accounts.insert_many([{"_id": i, "balance": i, "tags": ["new"]} for i in range(3000)])
    env = cdc_env(CDC_SNAPSHOT__BATCH_SIZE="50")
    stop_writing = threading.Event()

    def write() -> None:
        number = 3000
        while not stop_writing.is_set():
            accounts.update_one({"_id": number % 3000}, {"$inc": {"balance": 1000}, "$set": {"tags": ["touched"]}})
            accounts.insert_one({"_id": number, "balance": -1})
            accounts.delete_one({"_id": (number * 7) % 3000})
            number += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    service = run_service(env)
    try:
        service.streaming(1)
    finally:
        time.sleep(0.5)
        stop_writing.set()
        writer.join()
    final = {json.dumps({"_id": d["_id"]}): d for d in accounts.find()}
    topic = _topic(env, mongo_database.name, "accounts")

    def caught_up():
        records = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=1.0)
        return records if apply_events(records) == final else None

    records = _wait_for(caught_up, timeout=90, interval=1.0, message="the topic to reach the collection's final state")
    service.stop()
    assert Counter(r["event"]["operationType"] for r in records)["snapshot"] >= 2000


def test_an_interrupted_snapshot_does_not_copy_finished_collections_again(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    mongo_database["done"].insert_many([{"_id": i} for i in range(5)])
    mongo_database["todo"].insert_many([{"_id": i} for i in range(5)])
    env = cdc_env(CDC_STREAM__LAYOUT="collection")
    settings = settings_from(env)
    # A snapshot of each stream that was interrupted: "done" finished its copy, "todo" was in attempt 1.
    client = pymongo.MongoClient(settings.mongo_uri.get_secret_value())
    with client[mongo_database.name]["done"].watch() as stream:
        position = Position.from_token(stream.resume_token)
    client.close()
    records = {}
    for name, progress in (("done", CollectionProgress(True, 1, 5)), ("todo", CollectionProgress(False, 1, 2))):
        stream_id = StreamSpec.parse(f"coll:{mongo_database.name}.{name}").stream_id
        state = SnapshotState(stream_id, position, {f"{mongo_database.name}.{name}": progress}, cluster_time=(1, 1))
        records.update(state.records(settings.name))
    from confluent_kafka.admin import AdminClient

    from cdc_service.publisher import TopicManager, client_config

    TopicManager(AdminClient(client_config(settings)), settings).ensure(
        settings.topics.checkpoint_topic, compacted=True, partitions=1
    )
    write_records(settings, records)

    service = run_service(env)
    service.streaming(2)
    service.stop()
    done = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "done"), idle_s=0.5)
    todo = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "todo"), idle_s=0.5)
    assert done == []  # finished before the interruption: not copied again
    assert len(todo) == 5 + 1 and all(r["headers"].event_id.startswith(f"{position.event_id}.a2.") for r in todo)  # attempt 2
    [marker] = [r["event"]["snapshot"] for r in todo if r["headers"].operation == "snapshotComplete"]
    assert marker == {"position": position.event_id, "attempt": 2, "documents": 5}
    state = _checkpoints(env, kafka_broker.bootstrap_servers).snapshots[f"coll:{mongo_database.name}.todo"]
    assert state.completed and state.collections[f"{mongo_database.name}.todo"] == CollectionProgress(True, 2, 5)


def test_new_collections_are_snapshotted_then_streamed(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    mongo_database["first"].insert_one({"_id": 1})
    env = cdc_env()
    service = run_service(env)
    service.streaming(1)
    mongo_database["second"].insert_many([{"_id": i} for i in range(10)])  # appears while running
    service.streaming(2)
    mongo_database["second"].insert_one({"_id": 10})
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "second"), expect=12)
    service.stop()
    documents = [r for r in records if r["headers"].operation != "snapshotComplete"]
    assert sorted(r["event"]["documentKey"]["_id"] for r in documents) == list(range(11))


def test_an_unavailable_broker_is_retried_then_streaming_resumes_from_the_checkpoint(
    cdc_env, mongo_endpoint, mongo_database, run_service, kafka_broker
) -> None:
    if mongo_endpoint.is_real:
        pytest.skip("the broker's failure is the subject; one MongoDB is enough")
    payments = mongo_database["payments"]
    payments.insert_one({"_id": 0})
    env = cdc_env(CDC_PRODUCER__DELIVERY_TIMEOUT_MS="2000", CDC_RETRY_MAX_BACKOFF_SECONDS="1")
    service = run_service(env)
    service.streaming(1)
    kafka_broker.process.send_signal(signal.SIGSTOP)  # unavailable: the broker answers nothing
    try:
        payments.insert_many([{"_id": i} for i in range(1, 21)])
        _wait_for(lambda: service.service.metrics.restarts._value.get() >= 1, timeout=60, message="a restart")
        assert not service.service.readiness().ok and service.exit_code is None  # retrying, not dead
    finally:
        kafka_broker.process.send_signal(signal.SIGCONT)
    payments.insert_many([{"_id": i} for i in range(21, 31)])
    topic = _topic(env, mongo_database.name, "payments")
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=31, idle_s=1.0)
    service.stop()
    inserted = {r["event"]["documentKey"]["_id"] for r in records if r["event"]["operationType"] == "insert"}
    assert inserted == set(range(1, 31))


def test_the_snapshot_command_copies_records_the_position_and_exits(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    mongo_database["leads"].insert_many([{"_id": i} for i in range(20)])
    env = cdc_env()
    snapshot = run_service(env, snapshot_only=True)
    assert snapshot.join(120) == 0
    stream_id = f"coll:{mongo_database.name}.leads"
    checkpoint = _checkpoints(env, kafka_broker.bootstrap_servers).streams[stream_id]
    assert checkpoint.kind == "snapshot"
    mongo_database["leads"].insert_one({"_id": 20})
    service = run_service(env)  # streams from the snapshot's position: no second copy
    service.streaming(1)
    topic = _topic(env, mongo_database.name, "leads")
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=22)
    service.stop()
    assert Counter(r["event"]["operationType"] for r in records) == {"snapshot": 20, "snapshotComplete": 1, "insert": 1}


def test_copying_a_streamed_collection_again_skips_no_change_made_while_the_service_was_stopped(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    """`snapshot --stream` of a stream whose checkpoint is still in the oplog: the copy lands at
    a fresh position, and the stream goes on from its checkpoint, so a delete made while the
    service was stopped (which no copy can show) still reaches the topic."""
    leads = mongo_database["leads"]
    leads.insert_many([{"_id": i, "v": 0} for i in range(10)])
    env = cdc_env()
    service = run_service(env)
    service.streaming(1)
    leads.insert_one({"_id": 10, "v": 0})
    topic = _topic(env, mongo_database.name, "leads")
    read_topic(kafka_broker.bootstrap_servers, topic, expect=11)
    assert service.stop() == 0
    leads.delete_one({"_id": 3})
    leads.update_one({"_id": 4}, {"$set": {"v": 1}})
    snapshot = run_service(env, snapshot_only=True, force_snapshot=[f"coll:{mongo_database.name}.leads"])
    assert snapshot.join(120) == 0
    service = run_service(env)
    service.streaming(1)
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=10 + 1 + 1 + 10 + 1 + 2)
    service.stop()
    operations = Counter(r["event"]["operationType"] for r in records)
    assert operations["delete"] == 1 and operations["snapshot"] == 20 and operations["snapshotComplete"] == 2
    state = {json.loads(key)["_id"]: document for key, document in apply_events(records).items()}
    assert state == {document["_id"]: document for document in leads.find()}


def test_a_lost_history_message_says_what_was_lost_and_how_to_recover() -> None:
    from cdc_service.checkpoints import CheckpointKind, StreamCheckpoint
    from cdc_service.errors import HistoryLostError
    from cdc_service.pipeline import describe_history_lost

    error = HistoryLostError("stream coll:shop.orders cannot resume (code 286)", stream_id="coll:shop.orders", code=286)
    checkpoint = StreamCheckpoint(
        "coll:shop.orders", Position.from_token({"_data": "82AA"}), CheckpointKind.EVENT, cluster_time=(1_714_564_800, 3)
    )
    message = describe_history_lost(error, checkpoint)
    assert "2024-05-01T12:00:00+00:00" in message  # from the last checkpoint's cluster time ...
    assert "cdc-service snapshot --stream coll:shop.orders" in message  # ... and the command to recover
    assert "CDC_ON_HISTORY_LOST=resnapshot" in message


def test_without_snapshots_a_new_collection_is_streamed_from_its_first_event(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    mongo_database["existing"].insert_one({"_id": 1})
    env = cdc_env(CDC_SNAPSHOT__MODE="never")
    service = run_service(env)
    service.streaming(1)
    mongo_database["created_later"].insert_many([{"_id": i} for i in range(5)])  # before discovery sees it
    service.streaming(2)
    mongo_database["created_later"].insert_one({"_id": 5})
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "created_later"), expect=6)
    service.stop()
    assert sorted(r["event"]["documentKey"]["_id"] for r in records) == list(range(6))
    assert {r["event"]["operationType"] for r in records} == {"insert"}
    existing = read_topic(kafka_broker.bootstrap_servers, _topic(env, mongo_database.name, "existing"), idle_s=0.3)
    assert existing == []  # snapshot mode never: nothing copied
