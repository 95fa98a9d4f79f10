"""Publishing on the real broker: topics as configured, contract headers, dead letters, transactions."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from cdc_support import fixture_events, raw, read_topic, settings_env
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdc_service.actions import Action, classify
from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.publisher import EventPublisher, TopicManager, client_config, producer_config
from cdc_service.settings import CdcSettings
from lakehouse_common import lake
from lakehouse_common.claims import LANDED_SUFFIX, ClaimStore, claim_path
from lakehouse_common.contract import (
    HEADER_CLAIM,
    ClaimReference,
    ValueFormat,
    claim_headers,
    decode_value,
    encode_events,
    headers_for,
    parse_claim_reference,
    topic_name,
)
from lakehouse_common.errors import ConfigError, TransientError
from local_stack.kafka import start_kafka

EVENTS = fixture_events()


def _settings(kafka_broker, **overrides) -> CdcSettings:
    name = f"p{uuid.uuid4().hex[:10]}"
    values = {
        "mongo_uri": "mongodb://unused",
        "name": name,
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap_servers},
        "topics": {
            "prefix": name,
            "dead_letter_topic": f"{name}.dlq",
            "checkpoint_topic": f"{name}.checkpoints",
            "partitions": 2,
            **overrides.pop("topics", {}),
        },
        **overrides,
    }
    return CdcSettings(**values)


def test_topics_are_created_as_configured_and_records_follow_the_contract(kafka_broker, kafka_admin) -> None:
    settings = _settings(kafka_broker, topics={"max_message_bytes": 4_000_000, "config": {"retention.ms": "86400000"}})
    publisher = EventPublisher(settings)
    names = ["insert", "update", "delete", "insert_in_transaction"]
    result = publisher.publish([raw(EVENTS[n]) for n in names])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    topic = f"{settings.topics.prefix}.shop.customers"
    metadata = kafka_admin.list_topics(topic, timeout=10).topics[topic]
    assert len(metadata.partitions) == 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = kafka_admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["max.message.bytes"].value == "4000000" and config["retention.ms"].value == "86400000"
    assert result.produced == 4 and result.published[("update", "shop.customers")] == 1
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=3, idle_s=0.5)
    (encoded,) = encode_events([raw(EVENTS["update"])], ValueFormat.JSON)
    update = next(r for r in records if r["headers"].operation == "update")
    assert list(update["raw_headers"].items()) == headers_for(encoded, ValueFormat.JSON)
    assert update["key"] == encoded.key and update["value"] == encoded.value


def test_oversize_events_go_to_the_dead_letter_topic_as_references_without_claims(kafka_broker) -> None:
    settings = _settings(kafka_broker, topics={"max_message_bytes": 20_000}, claims={"enabled": False})
    publisher = EventPublisher(settings)
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 50_000}, documentKey={"_id": 1})
    result = publisher.publish([raw(EVENTS["update"]), raw(big), raw(EVENTS["delete"])])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.dead_lettered) == (2, 1)  # never dropped silently, never a crash
    (letter,) = read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1) or [None]
    reference = json.loads(letter["value"])
    assert reference["reason"] == "event_exceeds_topic_max_message_bytes"
    assert reference["event_id"] == big["_id"]["_data"] and reference["document_key"] == {"_id": 1}
    assert reference["value_bytes"] > reference["limit_bytes"] == 20_000
    published = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.customers", idle_s=0.5, expect=2)
    assert sorted(r["headers"].operation for r in published) == ["delete", "update"]


@pytest.mark.parametrize("value_format", [ValueFormat.JSON, ValueFormat.BSON])
def test_oversize_events_are_kept_in_the_claim_store_and_their_references_published(kafka_broker, tmp_path, value_format) -> None:
    settings = _settings(
        kafka_broker,
        topics={"max_message_bytes": 20_000},
        claims={"root": str(tmp_path / "lake")},
        producer={"value_format": value_format.value},
    )
    publisher = EventPublisher(settings)
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 50_000}, documentKey={"_id": 1})
    result = publisher.publish([raw(EVENTS["update"]), raw(big), raw(EVENTS["delete"])])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.dead_lettered, result.claimed) == (3, 0, 1)
    (encoded,) = encode_events([raw(big)], value_format)
    assert result.claimed_bytes == len(encoded.value) > 50_000
    topic = f"{settings.topics.prefix}.shop.customers"
    records = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=3)
    (claimed,) = [r for r in records if r["raw_headers"].get(HEADER_CLAIM)]
    assert list(claimed["raw_headers"].items()) == claim_headers(encoded, value_format)
    assert claimed["key"] == encoded.key and len(claimed["value"]) < 200
    assert claimed["headers"].event_id == big["_id"]["_data"]
    reference = parse_claim_reference(claimed["value"])
    assert ClaimStore(str(tmp_path / "lake")).get(reference) == encoded.value  # the event, byte for byte
    assert read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5) == []


def test_in_exactly_once_mode_a_claim_is_referenced_only_by_a_committed_transaction(kafka_broker, tmp_path) -> None:
    settings = _settings(
        kafka_broker,
        topics={"max_message_bytes": 20_000},
        claims={"root": str(tmp_path / "lake")},
        producer={"delivery": "exactly_once"},
    )
    topic = f"{settings.topics.prefix}.shop.customers"
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 50_000}, documentKey={"_id": 1})
    (encoded,) = encode_events([raw(big)], ValueFormat.JSON)
    publisher = EventPublisher(settings)
    publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    assert publisher.publish([raw(big)]).claimed == 1
    publisher.abort()  # the attempt failed: its claim stays behind, an orphan no committed record references
    assert read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5) == []
    claims = ClaimStore(str(tmp_path / "lake"))
    assert claims.get(ClaimReference.of(encoded.value)) == encoded.value

    assert publisher.publish([raw(big)]).claimed == 1  # the next attempt publishes it again: same claim
    publisher.commit({b"checkpoint": b"{}"}, settings.topics.checkpoint_topic, 30)
    (record,) = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=1)
    assert parse_claim_reference(record["value"]) == ClaimReference.of(encoded.value)
    assert claims.collect(timedelta(0), dry_run=True).orphans_kept == 1  # bronze has not landed it yet


def test_a_claim_store_that_cannot_take_the_event_stops_the_batch_before_its_reference(kafka_broker, tmp_path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    settings = _settings(kafka_broker, topics={"max_message_bytes": 20_000}, claims={"root": str(blocked)})
    publisher = EventPublisher(settings)
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 50_000}, documentKey={"_id": 1})
    with pytest.raises(TransientError):  # the attempt restarts from its checkpoint; nothing references a missing claim
        publisher.publish([raw(EVENTS["update"]), raw(big)])
    assert classify(TransientError("claim store")).action is Action.RETRY
    publisher.abort()
    publisher.close()
    records = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.customers", idle_s=0.5)
    assert not any(r["raw_headers"].get(HEADER_CLAIM) for r in records)


def test_events_of_4_kb_and_more_as_pymongo_hands_them_are_published_not_dead_lettered(kafka_broker) -> None:
    """pymongo 4.18+ gives documents of 4 KB and more from a reply as memoryview slices of it."""
    settings = _settings(kafka_broker)
    publisher = EventPublisher(settings)
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 5000}, documentKey={"_id": 1})
    sliced = RawBSONDocument(memoryview(bson.encode(big)), RAW_CODEC_OPTIONS)
    assert type(sliced.raw) is memoryview
    result = publisher.publish([raw(EVENTS["update"]), sliced])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)
    assert (result.produced, result.dead_lettered) == (2, 0)
    records = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.customers", idle_s=0.5, expect=2)
    assert any(record["event"].get("fullDocument") == big["fullDocument"] for record in records)


def test_an_undecodable_event_is_dead_lettered_and_the_batch_goes_on(kafka_broker) -> None:
    settings = _settings(kafka_broker)
    publisher = EventPublisher(settings)
    no_operation = {k: v for k, v in EVENTS["insert"].items() if k != "operationType"}
    result = publisher.publish([bson.encode(EVENTS["insert"]), bson.encode(no_operation), bson.encode(EVENTS["delete"])])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)
    assert (result.produced, result.dead_lettered) == (2, 1)
    (letter,) = read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1)
    assert letter["raw_headers"]["lakehouse.dead_letter.reason"] == b"undecodable_event"
    assert letter["value"] == bson.encode(no_operation)  # the original bytes, nothing lost


def test_events_without_a_collection_reach_every_topic_of_their_stream(kafka_broker) -> None:
    settings = _settings(kafka_broker)
    publisher = EventPublisher(settings)
    events = [raw(EVENTS[n]) for n in ("insert", "insert_sharded", "drop", "rename", "dropDatabase", "invalidate")]
    publisher.publish(events, fallback_topics=publisher.known_topics, in_scope=lambda db, coll: True)
    publisher.commit({}, settings.topics.checkpoint_topic, 30)
    for collection in ("customers", "orders"):
        records = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.{collection}", idle_s=0.5)
        operations = sorted(r["headers"].operation for r in records)
        expected = {
            "customers": ["drop", "dropDatabase", "insert", "invalidate"],
            "orders": ["dropDatabase", "insert", "invalidate", "rename"],
        }
        assert operations == expected[collection]
        assert all(r["key"] is None for r in records if r["headers"].operation != "insert")


def test_out_of_scope_namespaces_are_skipped(kafka_broker) -> None:
    settings = _settings(kafka_broker)
    publisher = EventPublisher(settings)
    result = publisher.publish([raw(EVENTS["insert"]), raw(EVENTS["insert_sharded"])], in_scope=lambda db, coll: coll == "orders")
    publisher.commit({}, settings.topics.checkpoint_topic, 30)
    assert (result.produced, result.skipped) == (1, 1)


@pytest.mark.parametrize("value_format", ["json", "bson"])
def test_exactly_once_commits_events_with_their_checkpoint_and_aborts_hide_them(kafka_broker, value_format) -> None:
    settings = _settings(kafka_broker, producer={"delivery": "exactly_once", "value_format": value_format})
    publisher = EventPublisher(settings)
    publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    publisher.publish([raw(EVENTS["insert"])])
    publisher.commit({b"k": b'{"committed":1}'}, settings.topics.checkpoint_topic, 30)
    publisher.publish([raw(EVENTS["update"])])
    publisher.producer.flush(30)  # written to the log, then aborted
    publisher.abort()
    publisher.publish([raw(EVENTS["delete"])])
    publisher.commit({b"k": b'{"committed":2}'}, settings.topics.checkpoint_topic, 30)

    topic = f"{settings.topics.prefix}.shop.customers"
    committed = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=2)
    assert sorted(r["headers"].operation for r in committed) == ["delete", "insert"]
    everything = read_topic(kafka_broker.bootstrap_servers, topic, isolation="read_uncommitted", idle_s=0.5, expect=3)
    assert sorted(r["headers"].operation for r in everything) == ["delete", "insert", "update"]  # the broker isolates


def _tiny_queue_publisher(settings: CdcSettings) -> EventPublisher:
    """A publisher whose local queue holds two records and lingers, so produce() meets a full queue."""
    config = {**producer_config(settings), "queue.buffering.max.messages": 2, "linger.ms": 300}
    if settings.exactly_once:
        config["transactional.id"] = settings.transactional_id
        config["transaction.timeout.ms"] = config["delivery.timeout.ms"] = settings.producer.transaction_timeout_ms
    return EventPublisher(settings, producer=Producer(config))


def test_a_full_local_queue_never_crashes_the_fan_out_dead_letters_or_checkpoints(kafka_broker) -> None:
    settings = _settings(kafka_broker)
    publisher = _tiny_queue_publisher(settings)
    publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    no_operation = {k: v for k, v in EVENTS["insert"].items() if k != "operationType"}
    events = [raw(EVENTS["insert"]), raw(EVENTS["insert_sharded"]), raw(EVENTS["insert"]), bson.encode(no_operation)]
    result = publisher.publish(events, fallback_topics=publisher.known_topics, in_scope=lambda db, coll: True)
    fan_out = publisher.publish([raw(EVENTS["dropDatabase"]), raw(EVENTS["invalidate"])], fallback_topics=publisher.known_topics)
    records = {f"k{i}".encode(): b'{"n":%d}' % i for i in range(7)}
    publisher.commit(records, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.dead_lettered, fan_out.produced) == (3, 1, 4)
    for collection, expected in (("customers", 4), ("orders", 3)):
        topic = f"{settings.topics.prefix}.shop.{collection}"
        assert len(read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=expected)) == expected
    assert len(read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1)) == 1
    assert len(read_topic(kafka_broker.bootstrap_servers, settings.topics.checkpoint_topic, idle_s=0.5, expect=7)) == 7


def test_a_full_local_queue_never_crashes_the_exactly_once_checkpoint(kafka_broker) -> None:
    settings = _settings(kafka_broker, producer={"delivery": "exactly_once"})
    publisher = _tiny_queue_publisher(settings)
    publisher.topics.ensure(settings.topics.checkpoint_topic, compacted=True, partitions=1)
    publisher.publish([raw(EVENTS["insert"]), raw(EVENTS["update"])])
    publisher.commit({f"k{i}".encode(): b"{}" for i in range(7)}, settings.topics.checkpoint_topic, 30)
    assert len(read_topic(kafka_broker.bootstrap_servers, settings.topics.checkpoint_topic, idle_s=0.5, expect=7)) == 7


def test_an_existing_topic_larger_than_the_producer_limit_dead_letters_instead_of_failing(kafka_broker, kafka_admin) -> None:
    # producer: message.max.bytes 1,000,000
    settings = _settings(kafka_broker, topics={"max_message_bytes": 1024}, claims={"enabled": False})
    topic = f"{settings.topics.prefix}.shop.customers"
    kafka_admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "3000000"})])[topic].result(30)
    publisher = EventPublisher(settings)
    big = dict(EVENTS["insert"], fullDocument={"_id": 1, "blob": "x" * 1_500_000}, documentKey={"_id": 1})
    result = publisher.publish([raw(EVENTS["update"]), raw(big), raw(EVENTS["delete"])])
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.dead_lettered) == (2, 1)
    (letter,) = read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1)
    reference = json.loads(letter["value"])
    assert reference["event_id"] == big["_id"]["_data"] and reference["limit_bytes"] < 1_500_000
    assert sorted(r["headers"].operation for r in read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=2)) == [
        "delete",
        "update",
    ]


@pytest.mark.parametrize(
    ("mapping", "first", "second"),
    [
        ({"shop.legacy": "{prefix}.shop.orders"}, ("shop", "legacy"), ("shop", "orders")),  # a mapping onto a conventional name
        ({}, ("shop", "order.items"), ("shop", "order_items")),  # Kafka refuses topics differing only in '.' and '_'
    ],
)
def test_two_namespaces_on_one_topic_stop_the_service_naming_both_and_the_fix(kafka_broker, mapping, first, second) -> None:
    settings = _settings(kafka_broker)
    prefix = settings.topics.prefix
    settings = _settings(
        kafka_broker,
        name=settings.name,
        topics={"prefix": prefix, "mapping": {k: v.format(prefix=prefix) for k, v in mapping.items()}},
    )
    publisher = EventPublisher(settings)
    publisher.route(*first)
    with pytest.raises(ConfigError) as raised:
        publisher.route(*second)
    message = str(raised.value)
    assert ".".join(first) in message and ".".join(second) in message and "topics.mapping" in message


def _change(collection: str, number: int, *, operation: str = "insert", pad: int = 10) -> bytes:
    return bson.encode(
        {
            "_id": {"_data": f"82{number:06d}"},
            "operationType": operation,
            "clusterTime": bson.Timestamp(1_700_000_000, number),
            "ns": {"db": "shop", "coll": collection},
            "documentKey": {"_id": number},
            "fullDocument": {"_id": number, "pad": "x" * pad},
        }
    )


@pytest.mark.parametrize("value_format", ["json", "bson"])
def test_the_column_path_sends_the_contract_records_in_order_through_a_full_local_queue(kafka_broker, value_format) -> None:
    """Records produced at C speed are those of encode_events and headers_for, each once, in publish order per partition,
    while produce() keeps meeting a full queue (every slow-path resumption must pick up the right event)."""
    settings = _settings(kafka_broker, producer={"value_format": value_format})
    publisher = _tiny_queue_publisher(settings)
    events = [_change("customers" if number % 3 else "orders", number) for number in range(1, 41)]
    result = publisher.publish(events)
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.dead_lettered, result.skipped) == (40, 0, 0)
    expected = encode_events(events, ValueFormat(value_format))
    for collection in ("customers", "orders"):
        mine = [event for event in expected if event.collection == collection]
        records = read_topic(
            kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.{collection}", idle_s=0.5, expect=len(mine)
        )
        assert sorted((r["key"], r["value"], list(r["raw_headers"].items())) for r in records) == sorted(
            (e.key, e.value, headers_for(e, ValueFormat(value_format))) for e in mine
        )
        for partition in {r["partition"] for r in records}:
            in_partition = [
                r["headers"].event_id for r in sorted(records, key=lambda r: r["offset"]) if r["partition"] == partition
            ]
            assert in_partition == sorted(in_partition)  # publish order (ids increase with the number)


def test_records_land_in_the_partition_of_librdkafkas_default_partitioner(kafka_broker, kafka_admin) -> None:
    """The positional produce() call keeps the default partitioner: each key lands where a plain producer puts it."""
    settings = _settings(kafka_broker, topics={"partitions": 4})
    publisher = EventPublisher(settings)
    events = [_change("orders", number) for number in range(1, 61)]
    publisher.publish(events)
    publisher.commit({}, settings.topics.checkpoint_topic, 30)
    plain_topic = f"{settings.topics.prefix}.plain"
    kafka_admin.create_topics([NewTopic(plain_topic, 4, 1)])[plain_topic].result(30)
    plain = Producer(producer_config(settings))
    for event in encode_events(events, ValueFormat.JSON):
        plain.produce(plain_topic, value=event.value, key=event.key, headers=headers_for(event, ValueFormat.JSON))
    plain.flush(30)

    topic = topic_name(settings.topics.prefix, "shop", "orders")
    published = {r["key"]: r["partition"] for r in read_topic(kafka_broker.bootstrap_servers, topic, idle_s=0.5, expect=60)}
    reference = {r["key"]: r["partition"] for r in read_topic(kafka_broker.bootstrap_servers, plain_topic, idle_s=0.5, expect=60)}
    assert published == reference and len(set(published.values())) > 1


def test_counts_per_operation_and_namespace_subtract_what_was_skipped_or_dead_lettered(kafka_broker) -> None:
    # Without claims, so the oversize event is dead-lettered (with claims it is produced as a reference).
    settings = _settings(kafka_broker, topics={"max_message_bytes": 20_000}, claims={"enabled": False})
    publisher = EventPublisher(settings)
    events = [
        _change("customers", 1),
        _change("orders", 2, operation="update"),
        _change("hidden", 3),
        _change("customers", 4, pad=30_000),
        _change("customers", 5, operation="update"),
        _change("orders", 6),
    ]
    result = publisher.publish(events, in_scope=lambda db, coll: coll != "hidden")
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.skipped, result.dead_lettered) == (4, 1, 1)
    assert result.by_operation == {
        ("insert", "shop.customers"): 2,
        ("update", "shop.orders"): 1,
        ("insert", "shop.hidden"): 1,
        ("update", "shop.customers"): 1,
        ("insert", "shop.orders"): 1,
    }
    assert result.published == {
        ("insert", "shop.customers"): 1,
        ("update", "shop.orders"): 1,
        ("update", "shop.customers"): 1,
        ("insert", "shop.orders"): 1,
    }
    assert result.last_event_id == "82000006"
    customers = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.customers", idle_s=0.5, expect=2)
    assert sorted(r["headers"].event_id for r in customers) == ["82000001", "82000005"]
    (letter,) = read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1)
    reference = json.loads(letter["value"])
    assert (reference["event_id"], reference["cluster_time"], reference["document_key"]) == (
        "82000004",
        [1_700_000_000, 4],
        {"_id": 4},
    )


@pytest.mark.parametrize("existing", [False, True], ids=["create", "describe"])
def test_a_broker_that_does_not_answer_the_admin_api_is_a_transient_failure(kafka_broker, kafka_admin, existing) -> None:
    """chaos finding F1: a paused (or restarting) broker made ensure() raise a bare TimeoutError, and the service stop."""
    settings = _settings(kafka_broker)
    topic = f"{settings.topics.prefix}.shop.customers"
    if existing:  # ensure() then asks for the existing topic's max.message.bytes
        kafka_admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    topics = TopicManager(AdminClient(client_config(settings)), settings, timeout=3)
    kafka_broker.pause()
    try:
        with pytest.raises(TransientError, match="Kafka did not answer within 3s") as raised:
            topics.ensure(topic)
    finally:
        kafka_broker.resume()
    assert classify(raised.value).action is Action.RETRY
    assert topics.ensure(topic) > 0  # the broker is back: the same manager carries on


# -- on a broker whose message.max.bytes is 1 MB, as managed Kafka services impose ----------------

ONE_MB = 1024 * 1024


@pytest.fixture(scope="module")
def one_mb_broker(run_dir):
    broker = start_kafka(run_dir / "kafka-1mb", broker_properties={"message.max.bytes": str(ONE_MB)})
    yield broker
    broker.stop()


def _bronze_rows(uri: str):
    from deltalake import DeltaTable

    try:
        return DeltaTable(uri).to_pyarrow_table().to_pylist()
    except Exception:  # not created yet
        return []


@pytest.mark.timeout(600)
def test_documents_larger_than_the_brokers_limit_reach_bronze_whole(
    one_mb_broker, mongo_endpoint, mongo_database, run_service, tmp_path
) -> None:
    """The real cdc-service and bronze-writer on a 1 MB broker: a 4 MB document is snapshotted and updated."""
    from bronze_writer.app import BronzeWriter
    from bronze_writer.settings import BronzeSettings
    from lakehouse_common.settings import load_settings

    lake_root = str(tmp_path / "lake")
    documents = mongo_database["documents"]
    large = {"_id": "large", "blob": "x" * (4 * ONE_MB), "tags": [{"n": n} for n in range(1000)]}
    documents.insert_many([{"_id": "small-1", "n": 1}, large])  # copied by the snapshot: a snapshot record too large
    env = settings_env(
        mongo_endpoint.uri,
        one_mb_broker.bootstrap_servers,
        mongo_database.name,
        CDC_TOPICS__MAX_MESSAGE_BYTES=str(ONE_MB),  # what the service allows its topics (Kafka's default cap)
        CDC_CLAIMS__ROOT=lake_root,
    )
    name = env["CDC_NAME"]
    topic = f"{name}.{mongo_database.name}.documents"
    bronze = load_settings(
        BronzeSettings,
        kafka={"bootstrap_servers": one_mb_broker.bootstrap_servers},
        consumer={
            "topic_pattern": rf"^{name}\.[^.]+\..+",
            "topic_prefix": name,
            "group_id": f"{name}-bronze",
            "session_timeout_ms": 6000,
        },
        batch={"max_latency_seconds": 0.5},
        lake={"root": lake_root},
        http={"host": "127.0.0.1", "port": 0},
    )
    writer = BronzeWriter(bronze)
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_capturing(writer, failure), name="bronze-writer", daemon=True)
    service = run_service(env)
    thread.start()
    uri = lake.bronze_table_uri(lake_root, mongo_database.name, "documents")
    try:
        service.streaming(1, timeout=120)
        started = time.monotonic()
        documents.update_one({"_id": "large"}, {"$set": {"blob": "y" * (4 * ONE_MB), "version": 2}})
        documents.insert_one({"_id": "small-2", "n": 2})

        def landed() -> list[dict]:
            rows = _bronze_rows(uri)
            return rows if len(rows) >= 5 else []

        rows = _wait(landed, 300, "four events and the copy's marker in bronze")
        print(f"\n4 MB update: MongoDB to bronze in {time.monotonic() - started:.1f}s")  # noqa: T201 - a figure for the report
        # Kafka would refuse the event itself: the topic's limit is the broker's.
        producer = Producer({"bootstrap.servers": one_mb_broker.bootstrap_servers, "message.max.bytes": 10 * ONE_MB})
        refused: list[object] = []
        producer.produce(topic, b"z" * (2 * ONE_MB), on_delivery=lambda error, _message: refused.append(error))
        producer.flush(30)
        assert refused and refused[0] is not None and refused[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    finally:
        assert service.stop() == 0
        writer.stop()
        thread.join(60)
    assert not failure, failure

    by_operation = {(row["__operation"], row["__document_id"]): row for row in rows}
    assert set(by_operation) == {
        ("snapshot", '"small-1"'),
        ("snapshot", '"large"'),
        ("update", '"large"'),
        ("insert", '"small-2"'),
        ("snapshotComplete", None),
    }
    current = documents.find_one({"_id": "large"})
    update = by_operation[("update", '"large"')]
    assert decode_value(update["__full_document"].encode(), ValueFormat.JSON) == current  # the whole document, equal to MongoDB's
    snapshot = by_operation[("snapshot", '"large"')]
    assert decode_value(snapshot["__full_document"].encode(), ValueFormat.JSON) == large
    assert update["blob"] == "y" * (4 * ONE_MB) and update["version"] == 2  # typed into columns like any event
    assert json.loads(update["__update_description"])["updatedFields"]["blob"] == "y" * (4 * ONE_MB)
    records = read_topic(one_mb_broker.bootstrap_servers, topic, idle_s=0.5, expect=5)
    assert sum(1 for record in records if record["raw_headers"].get(HEADER_CLAIM)) == 2
    assert read_topic(one_mb_broker.bootstrap_servers, env["CDC_TOPICS__DEAD_LETTER_TOPIC"], idle_s=0.5) == []
    claims = ClaimStore(lake_root)
    for record in records:
        if record["raw_headers"].get(HEADER_CLAIM):  # each claim landed and marked, ready for collection
            reference = parse_claim_reference(record["value"])
            assert claims.get(reference) and (tmp_path / "lake" / (claim_path(reference.digest) + LANDED_SUFFIX)).exists()
    assert service.service.metrics.claimed_events._value.get() == 2  # noqa: SLF001 - test introspection


def _run_capturing(writer, failure: list[BaseException]) -> None:
    try:
        writer.run()
    except BaseException as error:  # surfaced by the test
        failure.append(error)


def _wait(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {message}")
