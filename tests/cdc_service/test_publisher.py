"""Publishing on the real broker: topics as configured, contract headers, dead letters, transactions."""

from __future__ import annotations

import json
import uuid

import bson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, NewTopic

from cdc_service.publisher import EventPublisher, producer_config
from cdc_service.settings import CdcSettings
from cdc_support import fixture_events, raw, read_topic
from lakehouse_common.contract import ValueFormat, encode_events, headers_for, topic_name
from lakehouse_common.errors import ConfigError

EVENTS = fixture_events()


def _settings(kafka_broker, **overrides) -> CdcSettings:
    name = f"p{uuid.uuid4().hex[:10]}"
    values = {
        "mongo_uri": "mongodb://unused",
        "name": name,
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap_servers},
        "topics": {"prefix": name, "dead_letter_topic": f"{name}.dlq", "checkpoint_topic": f"{name}.checkpoints",
                   "partitions": 2, **overrides.pop("topics", {})},
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


def test_oversize_events_go_to_the_dead_letter_topic_as_references(kafka_broker) -> None:
    settings = _settings(kafka_broker, topics={"max_message_bytes": 20_000})
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
        expected = {"customers": ["drop", "dropDatabase", "insert", "invalidate"], "orders": ["dropDatabase", "insert", "invalidate", "rename"]}
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
    settings = _settings(kafka_broker, topics={"max_message_bytes": 1024})  # producer: message.max.bytes 1,000,000
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
        "delete", "update"]


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
    settings = _settings(kafka_broker, name=settings.name, topics={"prefix": prefix, "mapping": {k: v.format(prefix=prefix) for k, v in mapping.items()}})
    publisher = EventPublisher(settings)
    publisher.route(*first)
    with pytest.raises(ConfigError) as raised:
        publisher.route(*second)
    message = str(raised.value)
    assert ".".join(first) in message and ".".join(second) in message and "topics.mapping" in message


def _change(collection: str, number: int, *, operation: str = "insert", pad: int = 10) -> bytes:
    return bson.encode({
        "_id": {"_data": f"82{number:06d}"}, "operationType": operation,
        "clusterTime": bson.Timestamp(1_700_000_000, number), "ns": {"db": "shop", "coll": collection},
        "documentKey": {"_id": number}, "fullDocument": {"_id": number, "pad": "x" * pad},
    })


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
        records = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.{collection}",
                             idle_s=0.5, expect=len(mine))
        assert sorted((r["key"], r["value"], list(r["raw_headers"].items())) for r in records) == sorted(
            (e.key, e.value, headers_for(e, ValueFormat(value_format))) for e in mine)
        for partition in {r["partition"] for r in records}:
            in_partition = [r["headers"].event_id for r in sorted(records, key=lambda r: r["offset"]) if r["partition"] == partition]
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
    settings = _settings(kafka_broker, topics={"max_message_bytes": 20_000})
    publisher = EventPublisher(settings)
    events = [_change("customers", 1), _change("orders", 2, operation="update"), _change("hidden", 3),
              _change("customers", 4, pad=30_000), _change("customers", 5, operation="update"), _change("orders", 6)]
    result = publisher.publish(events, in_scope=lambda db, coll: coll != "hidden")
    publisher.commit({}, settings.topics.checkpoint_topic, 30)

    assert (result.produced, result.skipped, result.dead_lettered) == (4, 1, 1)
    assert result.by_operation == {("insert", "shop.customers"): 2, ("update", "shop.orders"): 1,
                                   ("insert", "shop.hidden"): 1, ("update", "shop.customers"): 1, ("insert", "shop.orders"): 1}
    assert result.published == {("insert", "shop.customers"): 1, ("update", "shop.orders"): 1,
                                 ("update", "shop.customers"): 1, ("insert", "shop.orders"): 1}
    assert result.last_event_id == "82000006"
    customers = read_topic(kafka_broker.bootstrap_servers, f"{settings.topics.prefix}.shop.customers", idle_s=0.5, expect=2)
    assert sorted(r["headers"].event_id for r in customers) == ["82000001", "82000005"]
    (letter,) = read_topic(kafka_broker.bootstrap_servers, settings.topics.dead_letter_topic, idle_s=0.5, expect=1)
    reference = json.loads(letter["value"])
    assert (reference["event_id"], reference["cluster_time"], reference["document_key"]) == ("82000004", [1_700_000_000, 4], {"_id": 4})
