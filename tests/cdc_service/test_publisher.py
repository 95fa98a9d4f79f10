"""Publishing on the real broker: topics as configured, contract headers, dead letters, transactions."""

from __future__ import annotations

import json
import uuid

import bson
import pytest
from confluent_kafka.admin import ConfigResource

from cdc_service.publisher import EventPublisher
from cdc_service.settings import CdcSettings
from cdc_support import fixture_events, raw, read_topic
from lakehouse_common.contract import ValueFormat, headers_for, encode_events

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
