"""What only a real replica set has: database and deployment scope, pre-images, split events,
transactions, invalidate, history loss. Runs against MongoDB 7 in Docker (testcontainers);
skipped, with the reason, where no Docker engine is reachable."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pymongo
import pytest
from cdc_support import read_topic, settings_env, settings_from

from cdc_service.positions import Position
from cdc_service.replay import ReplayPlan, write_plan

pytestmark = [pytest.mark.real_mongo, pytest.mark.timeout(300)]


@pytest.fixture
def real_client(real_replica_set) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(real_replica_set.uri)
    yield client
    client.close()


@pytest.fixture
def databases(real_client) -> Iterator[list[str]]:
    names = [f"rs_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    yield names
    for name in names:
        real_client.drop_database(name)


def _env(real_replica_set, kafka_broker, first_database: str, **extra: str) -> dict[str, str]:
    return settings_env(real_replica_set.uri, kafka_broker.bootstrap_servers, first_database, **extra)


def _topic(env: dict[str, str], database: str, collection: str) -> str:
    return f"{env['CDC_TOPICS__PREFIX']}.{database}.{collection}"


@pytest.mark.parametrize("layout", ["deployment", "database"])
def test_database_and_deployment_scope(layout, real_replica_set, real_client, databases, kafka_broker, run_service) -> None:
    shop, crm, other = databases
    for database in (shop, crm, other):
        real_client[database]["orders"].insert_one({"_id": 0})
    real_client[shop]["audit"].insert_one({"_id": 0})
    env = _env(
        real_replica_set,
        kafka_broker,
        shop,
        CDC_STREAM__LAYOUT=layout,
        CDC_SCOPE__INCLUDE_DATABASES=f'["{shop}", "/{crm[:3]}{crm[3:]}/"]',
        CDC_SCOPE__EXCLUDE_COLLECTIONS=f'["{shop}.audit"]',
    )
    service = run_service(env)
    service.streaming(1 if layout == "deployment" else 2)
    for database in (shop, crm, other):
        real_client[database]["orders"].insert_one({"_id": 1})
    real_client[shop]["audit"].insert_one({"_id": 1})
    shop_records = read_topic(kafka_broker.bootstrap_servers, _topic(env, shop, "orders"), expect=2)
    crm_records = read_topic(kafka_broker.bootstrap_servers, _topic(env, crm, "orders"), expect=2)
    service.stop()
    assert Counter(r["headers"].operation for r in shop_records) == {"snapshot": 1, "insert": 1}
    assert Counter(r["headers"].operation for r in crm_records) == {"snapshot": 1, "insert": 1}
    topics = kafka_broker_topics(kafka_broker)
    assert _topic(env, other, "orders") not in topics and _topic(env, shop, "audit") not in topics


def kafka_broker_topics(kafka_broker) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers}).list_topics(timeout=10).topics)


def test_pre_images_and_transactions(real_replica_set, real_client, databases, kafka_broker, run_service) -> None:
    database = real_client[databases[0]]
    database.create_collection("accounts", changeStreamPreAndPostImages={"enabled": True})
    database["accounts"].insert_one({"_id": 1, "balance": 10})
    env = _env(real_replica_set, kafka_broker, databases[0], CDC_STREAM__FULL_DOCUMENT_BEFORE_CHANGE="whenAvailable")
    service = run_service(env)
    service.streaming(1)
    database["accounts"].update_one({"_id": 1}, {"$inc": {"balance": 5}})
    with real_client.start_session() as session, session.start_transaction():
        database["accounts"].insert_one({"_id": 2, "balance": 1}, session=session)
        database["accounts"].delete_one({"_id": 1}, session=session)
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, databases[0], "accounts"), expect=4)
    service.stop()
    by_operation = {r["headers"].operation: r["event"] for r in records}
    assert by_operation["update"]["fullDocumentBeforeChange"] == {"_id": 1, "balance": 10}
    assert by_operation["delete"]["fullDocumentBeforeChange"] == {"_id": 1, "balance": 15}
    assert by_operation["insert"]["lsid"] == by_operation["delete"]["lsid"]
    assert by_operation["insert"]["txnNumber"] == by_operation["delete"]["txnNumber"]
    assert "wallTime" in by_operation["insert"]


def test_events_over_16_mb_are_split_and_reassembled(real_replica_set, real_client, databases, kafka_broker, run_service) -> None:
    database = real_client[databases[0]]
    database.create_collection("media", changeStreamPreAndPostImages={"enabled": True})
    database["media"].insert_one({"_id": 0, "blob": "a" * (10 * 1024 * 1024)})
    env = _env(
        real_replica_set,
        kafka_broker,
        databases[0],
        CDC_STREAM__FULL_DOCUMENT_BEFORE_CHANGE="required",
        CDC_TOPICS__MAX_MESSAGE_BYTES=str(48 * 1024 * 1024),
        CDC_PRODUCER__VALUE_FORMAT="bson",
    )
    service = run_service(env)
    service.streaming(1)
    database["media"].replace_one({"_id": 0}, {"blob": "b" * (10 * 1024 * 1024)})  # pre + post image > 16 MB
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, databases[0], "media"), expect=2, timeout_s=120)
    service.stop()
    (replace,) = [r["event"] for r in records if r["headers"].operation == "replace"]
    assert "splitEvent" not in replace
    assert replace["fullDocument"]["blob"][0] == "b" and replace["fullDocumentBeforeChange"]["blob"][0] == "a"


def test_drop_and_invalidate_restart_the_collection_stream(
    real_replica_set, real_client, databases, kafka_broker, run_service
) -> None:
    database = real_client[databases[0]]
    database["things"].insert_one({"_id": 0})
    env = _env(real_replica_set, kafka_broker, databases[0], CDC_STREAM__LAYOUT="collection")
    service = run_service(env)
    service.streaming(1)
    database["things"].drop()
    time.sleep(1)
    database["things"].insert_one({"_id": 1})  # the stream was reopened with startAfter
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, databases[0], "things"), expect=4)
    service.stop()
    assert [r["headers"].operation for r in sorted(records, key=lambda r: r["headers"].event_id)] == [
        "snapshot",
        "drop",
        "invalidate",
        "insert",
    ]


@pytest.mark.parametrize("policy", ["fail", "resnapshot"])
def test_history_lost(policy, real_replica_set, real_client, databases, kafka_broker, run_service) -> None:
    database = real_client[databases[0]]
    database["ledger"].insert_many([{"_id": i} for i in range(3)])
    env = _env(real_replica_set, kafka_broker, databases[0], CDC_ON_HISTORY_LOST=policy, CDC_STREAM__LAYOUT="collection")
    stream_id = f"coll:{databases[0]}.ledger"
    settings = settings_from(env)
    from confluent_kafka.admin import AdminClient

    from cdc_service.publisher import TopicManager, client_config

    TopicManager(AdminClient(client_config(settings)), settings).ensure(
        settings.topics.checkpoint_topic, compacted=True, partitions=1
    )
    write_plan(settings, ReplayPlan(positions={stream_id: Position.from_time((946684800, 1))}))  # 2000-01-01: long gone
    service = run_service(env)
    if policy == "fail":
        assert service.join(120) == 3  # EXIT_HISTORY_LOST, with the command to recover in the log
        return
    service.streaming(1)
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, databases[0], "ledger"), expect=3)
    service.stop()
    assert Counter(r["headers"].operation for r in records) == {"snapshot": 3}


def test_a_collection_created_while_a_snapshot_lists_its_collections_is_copied_or_streamed(
    real_replica_set, real_client, databases, kafka_broker, run_service, monkeypatch
) -> None:
    """A collection created right after the listing, before the snapshot position existed, was
    neither copied nor streamed; with the position taken first it is at least streamed."""
    from cdc_service import pipeline

    shop = databases[0]
    real_client[shop]["orders"].insert_one({"_id": 0})
    list_collections = pipeline.covered_collections
    created: list[str] = []

    def listing_then_a_new_collection(*args, **kwargs):
        listed = list_collections(*args, **kwargs)
        if not created:
            created.append("late")
            real_client[shop]["late"].insert_many([{"_id": i} for i in range(3)])
        return listed

    monkeypatch.setattr(pipeline, "covered_collections", listing_then_a_new_collection)
    env = _env(real_replica_set, kafka_broker, shop, CDC_STREAM__LAYOUT="database")
    service = run_service(env)
    service.streaming(1)
    records = read_topic(kafka_broker.bootstrap_servers, _topic(env, shop, "late"), expect=3, timeout_s=60)
    service.stop()
    assert {r["event"]["documentKey"]["_id"] for r in records} == {0, 1, 2}
