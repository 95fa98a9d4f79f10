"""A killed broker is logged once when lost and once when back, in JSON; the errors between are counted.

chaos finding F2: a down broker made each service write about 19 lines a second, librdkafka's
own as plain text on stderr. A broker of its own here (it is killed and restarted).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from lakehouse_common.json_logging import configure_logging
from lakehouse_common.kafka_connection import KafkaConnection
from local_stack.kafka import KafkaBroker, start_kafka


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    broker = start_kafka(tmp_path / "kafka", heap="512m")
    yield broker
    broker.stop()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, text: str) -> list[logging.LogRecord]:
        return [record for record in self.records if record.getMessage().startswith(text)]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_a_broker_outage_is_logged_once_each_way_in_json_and_counted_between(
    broker: KafkaBroker, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("test")
    records = _Records()
    logging.getLogger().addHandler(records)
    registry = CollectorRegistry()
    connection = KafkaConnection(registry, "test")
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "reconnect.backoff.max.ms": 200,
                         **connection.client_config()})  # fmt: skip
    delivered: list[object] = []
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic("outage", 1, 1)])["outage"].result(30)
    del admin  # a client of the test's own, which would log the outage to stderr
    try:
        producer.produce("outage", b"before", on_delivery=lambda error, _message: delivered.append(error))
        assert producer.flush(30) == 0
        connection.reachable()  # as the services do after an acknowledged flush: nothing to report
        assert not records.messages("Kafka connection")

        broker.kill()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            producer.poll(0.2)  # serves the error callback and librdkafka's log
        assert connection.down and _sample(registry, "test_kafka_unreachable") == 1
        assert len(records.messages("Kafka connection lost")) == 1
        errors = _sample(registry, "test_kafka_client_errors_total")
        assert errors >= 5  # librdkafka kept reporting (reconnects every 200 ms): counted, not logged

        broker.restart()
        producer.produce("outage", b"after", on_delivery=lambda error, _message: delivered.append(error))
        assert producer.flush(60) == 0 and delivered == [None, None]
        connection.reachable()
        (back,) = records.messages("Kafka connection back")
        assert back.suppressed_errors > 0 and back.outage_seconds > 0  # type: ignore[attr-defined]
        assert not connection.down and _sample(registry, "test_kafka_unreachable") == 0
    finally:
        logging.getLogger().removeHandler(records)
        producer.flush(5)
    assert len(records.messages("Kafka connection lost")) == 1
    stderr = capfd.readouterr().err
    # Clients of earlier tests in this process may still print raw lines about their own (stopped)
    # brokers: only lines about this test's broker are ours, and every one of them must be JSON.
    port = broker.bootstrap_servers.rsplit(":", 1)[1]
    lines = [line for line in stderr.splitlines() if line.strip() and not (line.startswith("%") and port not in line)]
    assert lines, "the logs went nowhere"
    for line in lines:  # librdkafka's lines too: every line is a JSON object
        json.loads(line)
    librdkafka = [line for line in lines if json.loads(line)["logger"] == "librdkafka"]
    assert len(librdkafka) < errors  # the connection failures were not logged one by one
