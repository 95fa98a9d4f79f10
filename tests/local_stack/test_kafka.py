"""The real broker: idempotent produce, consumer-group offsets across restarts, transactions, SCRAM."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from local_stack.kafka import KafkaBroker


def _consume(consumer: Consumer, expected: int, timeout: float = 30.0) -> list:
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            if message.error():
                raise KafkaException(message.error())
            records.append(message)
    return records


def _drain(consumer: Consumer, quiet_seconds: float = 3.0) -> list:
    """Everything the consumer receives until it has been quiet for a while."""
    records = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_seconds:
        batch = consumer.consume(num_messages=500, timeout=0.5)
        if batch:
            quiet_since = time.monotonic()
            records.extend(message for message in batch if not message.error())
    return records


def _consumer(broker: KafkaBroker, group: str, **overrides: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **overrides,
        }
    )


def test_idempotent_producer_and_committed_offsets_survive_a_consumer_restart(kafka_broker: KafkaBroker, topic: str) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    for number in range(100):
        producer.produce(topic, value=f"event-{number}".encode(), key=f"key-{number % 7}".encode())
    assert producer.flush(30) == 0

    group = f"group-{uuid.uuid4().hex}"
    first = _consumer(kafka_broker, group)
    first.subscribe([topic])
    consumed = _consume(first, 60)[:60]
    # Commit exactly what was processed: the next offset of the last record per partition.
    last = {}
    for message in consumed:
        last[message.partition()] = max(last.get(message.partition(), -1), message.offset())
    first.commit(offsets=[TopicPartition(topic, partition, offset + 1) for partition, offset in last.items()], asynchronous=False)
    first.close()

    second = _consumer(kafka_broker, group)
    second.subscribe([topic])
    rest = _drain(second)
    second.close()

    values = [message.value() for message in consumed] + [message.value() for message in rest]
    processed = {(message.partition(), message.offset()) for message in consumed}
    assert not processed & {(message.partition(), message.offset()) for message in rest}
    assert sorted(values) == sorted(f"event-{number}".encode() for number in range(100))


def test_read_committed_consumers_never_see_aborted_transactions(kafka_broker: KafkaBroker, topic: str) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for number in range(10):
        producer.produce(topic, value=f"aborted-{number}".encode(), key=b"k")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for number in range(5):
        producer.produce(topic, value=f"committed-{number}".encode(), key=b"k")
    producer.commit_transaction(30)

    committed = _consumer(kafka_broker, f"g-{uuid.uuid4().hex}", **{"isolation.level": "read_committed"})
    committed.subscribe([topic])
    seen_committed = [message.value() for message in _drain(committed)]
    committed.close()

    uncommitted = _consumer(kafka_broker, f"g-{uuid.uuid4().hex}", **{"isolation.level": "read_uncommitted"})
    uncommitted.subscribe([topic])
    seen_uncommitted = [message.value() for message in _drain(uncommitted)]
    uncommitted.close()

    assert sorted(seen_committed) == [f"committed-{number}".encode() for number in range(5)]
    # The aborted records really are in the log: isolation, not absence, hides them.
    assert {f"aborted-{number}".encode() for number in range(10)} <= set(seen_uncommitted)


def test_scram_users_authenticate_and_wrong_passwords_are_refused(kafka_broker: KafkaBroker, topic: str, scram_user: str) -> None:
    producer = Producer(kafka_broker.sasl_client_config(scram_user))
    producer.produce(topic, value=b"over sasl")
    assert producer.flush(30) == 0

    errors: list[KafkaError] = []
    intruder = Producer(
        {
            **kafka_broker.sasl_client_config(scram_user),
            "sasl.password": "wrong-password",
            "error_cb": errors.append,
            "message.timeout.ms": 5000,
        }
    )
    intruder.produce(topic, value=b"should not land")
    intruder.flush(8)
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors)


def test_the_sasl_listener_needs_credentials(kafka_broker: KafkaBroker) -> None:
    with pytest.raises(KeyError):
        kafka_broker.sasl_client_config("nobody")


def test_a_broker_paused_then_killed_and_restarted_keeps_its_data_and_port(tmp_path) -> None:
    """pause/resume freeze it like a partition; kill/restart come back on the same storage and port."""
    from local_stack.kafka import start_kafka

    broker = start_kafka(tmp_path / "kafka", heap="512m")
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = f"restart.{uuid.uuid4().hex}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": "all"})
        producer.produce(topic, b"before")
        assert producer.flush(30) == 0

        broker.pause()
        producer.produce(topic, b"while paused")
        assert producer.flush(2) == 1  # nobody answers while paused
        broker.resume()
        assert producer.flush(30) == 0

        port = broker.port
        broker.kill()
        broker.restart()
        assert broker.port == port
        producer.produce(topic, b"after")
        assert producer.flush(60) == 0
        consumer = _consumer(broker, f"g-{uuid.uuid4().hex}")
        consumer.subscribe([topic])
        assert [message.value() for message in _consume(consumer, 3)] == [b"before", b"while paused", b"after"]
        consumer.close()
    finally:
        broker.stop()
