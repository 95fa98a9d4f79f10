"""The service on a real broker: end to end, seeking from Delta, replicas, shutdown, backpressure, health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from bronze_support import (
    WriterThread,
    change_event,
    claim_records,
    event_id,
    landed_offsets,
    open_table,
    produce,
    read_bronze,
    wait_until,
)
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bronze_writer.app import BronzeWriter
from bronze_writer.settings import BronzeSettings
from lakehouse_common import contract, lake
from lakehouse_common.claims import ClaimStore
from lakehouse_common.contract import ValueFormat, encode_events
from lakehouse_common.errors import ConfigError
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.settings import load_settings
from local_stack.kafka import KafkaBroker


def _pattern(topic: str) -> str:
    return "^" + topic.replace(".", r"\.") + "$"


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        consumer.close()


def _all_landed(uri: str, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    def check() -> bool:
        landed = landed_offsets(uri, topic, len(ends))
        return all(end == 0 or landed.get(p) == end - 1 for p, end in ends.items())

    return check


def _table_uri(settings: BronzeSettings, topic: str) -> str:
    database, collection = topic.split(".")[1:3]
    return lake.bronze_table_uri(settings.lake.root, database, collection)


def test_end_to_end_exactly_once_with_duplicates_replays_and_poison(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    first = [change_event(n, {"_id": n % 40, "qty": n, "name": f"n{n}"}) for n in range(1, 301)]
    produce(bootstrap, cdc_topic, first, ValueFormat.JSON)
    produce(bootstrap, cdc_topic, first[100:150], ValueFormat.JSON)  # a replay of events already published
    later = [change_event(n, {"_id": n % 40, "qty": float(n) + 0.5}) for n in range(301, 401)]
    produce(bootstrap, cdc_topic, later, ValueFormat.BSON)
    poison = Producer({"bootstrap.servers": bootstrap})
    poison.produce(cdc_topic, value=b"not an event", key=b'{"_id":1}', partition=1,
                   headers=[(contract.HEADER_CONTRACT_VERSION, b"1")])  # fmt: skip
    poison.produce(cdc_topic, value=b"{}", partition=2, headers=[(contract.HEADER_CONTRACT_VERSION, b"9")])
    poison.flush(10)
    ends = _end_offsets(bootstrap, cdc_topic, 3)

    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}", batch={"max_rows": 97})
    uri = _table_uri(settings, cdc_topic)
    with WriterThread(settings) as running:
        wait_until(_all_landed(uri, cdc_topic, ends))
        server_port = running.writer.http_port
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server_port}/healthz").read())
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server_port}/readyz").read())
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server_port}/metrics").read().decode()
    assert health["status"] == "ok" and ready["status"] == "ok"
    rows = read_bronze(uri)
    assert rows.height == 400
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 401)]
    assert rows.filter(pl.col("qty").is_null())["__rescued_data"].str.contains('"type":"double"').all()
    letters = read_bronze(lake.dead_letter_uri(settings.lake.root))
    assert sorted(letters["error_type"].to_list()) == ["UndecodableEventError", "UnsupportedContractVersionError"]
    table_label = f'table="shop.{cdc_topic.split(".")[2]}"'
    assert f"bronze_rows_total{{{table_label}}} 400.0" in metrics
    assert f"bronze_duplicates_dropped_total{{{table_label}}} 50.0" in metrics
    assert f'bronze_rescued_values_total{{field="qty",{table_label}}} 100.0' in metrics
    assert "bronze_dead_letters_total" in metrics and "bronze_end_to_end_lag_seconds_bucket" in metrics
    # Kafka's committed offsets follow the Delta commits (for monitoring).
    committed = _committed(bootstrap, f"g-{cdc_topic}", cdc_topic, 3)
    assert committed == ends


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        consumer.close()


def _set_committed(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def test_restart_positions_from_the_delta_log_not_kafka_offsets(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    group = f"g-{cdc_topic}"
    produce(bootstrap, cdc_topic, [change_event(n, {"_id": n}) for n in range(1, 61)])
    settings = writer_settings(_pattern(cdc_topic), group)
    uri = _table_uri(settings, cdc_topic)
    ends = _end_offsets(bootstrap, cdc_topic, 3)
    with WriterThread(settings):
        wait_until(_all_landed(uri, cdc_topic, ends))
    # Kafka's offsets are wrong in both directions: rewound to 0, or past what Delta holds.
    produce(bootstrap, cdc_topic, [change_event(n, {"_id": n}) for n in range(61, 121)])
    ends = _end_offsets(bootstrap, cdc_topic, 3)
    _set_committed(bootstrap, group, cdc_topic, {0: 0, 1: ends[1], 2: ends[2]})
    with WriterThread(settings):
        wait_until(_all_landed(uri, cdc_topic, ends))
    rows = read_bronze(uri)
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 121)]


def test_two_replicas_share_the_partitions_of_a_topic(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], writer_settings: Callable[..., BronzeSettings]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=4, prefix="cdc.shop")
    settings = writer_settings(_pattern(topic), f"g-{topic}", batch={"max_rows": 50})
    uri = _table_uri(settings, topic)
    events = [change_event(n, {"_id": n % 97, "n": n}) for n in range(1, 1201)]
    stop_producing = threading.Event()

    def keep_producing() -> None:
        for start in range(0, len(events), 100):
            produce(bootstrap, topic, events[start : start + 100])
            time.sleep(0.2)
        stop_producing.set()

    producer = threading.Thread(target=keep_producing)
    with WriterThread(settings) as first:
        producer.start()
        time.sleep(1.0)
        with WriterThread(settings) as second:  # joins mid-stream: partitions move between replicas
            wait_until(stop_producing.is_set, timeout=120)
            wait_until(_all_landed(uri, topic, _end_offsets(bootstrap, topic, 4)), timeout=120)
            # Both hold partitions once the group settles (a rebalance may still be running here).
            wait_until(
                lambda: first.writer.metrics.assigned._value.get() > 0 and second.writer.metrics.assigned._value.get() > 0,
                timeout=60,
            )
        # The second replica left: its partitions come back to the first one.
        produce(bootstrap, topic, [change_event(n, {"_id": n}) for n in range(1201, 1301)])
        wait_until(_all_landed(uri, topic, _end_offsets(bootstrap, topic, 4)), timeout=120)
    producer.join()
    rows = read_bronze(uri)
    assert rows.height == 1300
    assert rows["__event_id"].n_unique() == 1300


def test_graceful_stop_lands_what_is_buffered(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}", batch={"max_latency_seconds": 600})
    uri = _table_uri(settings, cdc_topic)
    with WriterThread(settings) as running:
        wait_until(lambda: running.writer.metrics.assigned._value.get() > 0)
        produce(bootstrap, cdc_topic, [change_event(n, {"_id": n}) for n in range(1, 51)])
        wait_until(lambda: running.writer.metrics.buffered_bytes._value.get() > 0)
        assert landed_offsets(uri, cdc_topic, 3) == {}
    assert read_bronze(uri).height == 50


def test_backpressure_pauses_partitions_while_the_landing_thread_is_busy(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    encoded = encode_events([change_event(n, {"_id": n, "pad": "x" * 500}) for n in range(1, 401)], ValueFormat.JSON)
    produce(bootstrap, cdc_topic, encoded)
    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}", batch={"max_rows": 40, "max_bytes": 4096})
    uri = _table_uri(settings, cdc_topic)
    paused: list[float] = []
    running = WriterThread(settings)
    land = running.writer.lander.land

    def slow_land(*args, **kwargs):  # a slow object store
        time.sleep(0.3)
        paused.append(running.writer.metrics.paused._value.get())
        return land(*args, **kwargs)

    running.writer.lander.land = slow_land  # type: ignore[method-assign]
    with running:
        wait_until(_all_landed(uri, cdc_topic, _end_offsets(bootstrap, cdc_topic, 3)), timeout=120)
    assert max(paused) > 0
    assert read_bronze(uri).height == 400


def _writer_process(settings: BronzeSettings, log_path: Path, **extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "BRONZE_CONSUMER__TOPIC_PATTERN": settings.consumer.topic_pattern,
        "BRONZE_CONSUMER__GROUP_ID": settings.consumer.group_id,
        "BRONZE_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "BRONZE_LAKE__ROOT": settings.lake.root,
        "BRONZE_LAKE__STORAGE_OPTIONS": json.dumps(settings.lake.deltalake_options()),
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
        **extra,
    }
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("bronze-writer")), "run"],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def _fenced(message_error: KafkaError | None) -> bool:
    return message_error is not None and message_error.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


def _static_member(bootstrap: str, group: str, topic: str, instance: str) -> Consumer:
    """A plain consumer joining ``group`` with ``instance`` as its group.instance.id (a second replica with the same id)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.instance.id": instance,
                         "session.timeout.ms": 6000, "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    return consumer


def test_a_fenced_static_member_recreates_its_consumer_and_lands_on(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    """chaos finding F6: one fence (as after a broker outage longer than the session timeout) used to stop the writer.

    A second client joining with the writer's group.instance.id fences the writer's member id,
    librdkafka then raises FENCED_INSTANCE_ID as a fatal error, as it does after such an outage.
    """
    bootstrap = kafka_broker.bootstrap_servers
    group = f"g-{cdc_topic}"
    settings = writer_settings(_pattern(cdc_topic), group, consumer={"group_instance_id": "replica-0"})
    uri = _table_uri(settings, cdc_topic)
    produce(bootstrap, cdc_topic, [change_event(n, {"_id": n}) for n in range(1, 31)])
    with WriterThread(settings) as running:
        wait_until(_all_landed(uri, cdc_topic, _end_offsets(bootstrap, cdc_topic, 3)), timeout=120)
        usurper = _static_member(bootstrap, group, cdc_topic, "replica-0")
        try:
            wait_until(
                lambda: (usurper.poll(0.2), running.writer.metrics.consumer_recreations._value.get() >= 1)[1],
                timeout=120,
                interval=0,
            )
        finally:
            usurper.close()
        produce(bootstrap, cdc_topic, [change_event(n, {"_id": n}) for n in range(31, 61)])
        wait_until(_all_landed(uri, cdc_topic, _end_offsets(bootstrap, cdc_topic, 3)), timeout=120)
        assert running.error is None
        assert running.writer.metrics.consumer_recreations._value.get() == 1
    rows = read_bronze(uri)
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 61)]


def test_a_fence_that_persists_makes_run_exit_failed_naming_the_instance_id(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings], tmp_path: Path
) -> None:
    """Another live consumer with the same group.instance.id, recreating itself when fenced as the writer does.

    The writer recreates its consumer a few times, then stops with FAILED and says why (it
    once carried on after a fatal Kafka error, and once exited 0).
    """
    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}")
    log = tmp_path / "writer.log"
    process = _writer_process(settings, log, BRONZE_CONSUMER__GROUP_INSTANCE_ID="replica-0")
    try:
        wait_until(lambda: "partitions assigned" in log.read_text(), timeout=120)
        usurper = _static_member(kafka_broker.bootstrap_servers, f"g-{cdc_topic}", cdc_topic, "replica-0")
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            message = usurper.poll(0.2)
            if message is not None and _fenced(message.error()):
                usurper.close()
                usurper = _static_member(kafka_broker.bootstrap_servers, f"g-{cdc_topic}", cdc_topic, "replica-0")
        usurper.close()
        assert process.wait(60) == ExitCode.FAILED, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    text = log.read_text()
    assert text.count("closing the consumer and joining again") == 3, text[-3000:]
    assert "another live consumer" in text and "'replica-0'" in text and "BRONZE_CONSUMER__GROUP_INSTANCE_ID" in text


def test_client_config_wins_over_the_writers_defaults_but_cannot_undo_what_correctness_needs(
    kafka_broker: KafkaBroker, lake_root: str
) -> None:
    """chaos finding F3: topic.metadata.refresh.interval.ms from BRONZE_KAFKA__CLIENT_CONFIG was overwritten."""

    def consumer_config(client_config: dict[str, str]) -> dict[str, object]:
        settings = load_settings(
            BronzeSettings,
            kafka={"bootstrap_servers": kafka_broker.bootstrap_servers, "client_config": client_config},
            consumer={"topic_pattern": "^cdc\\..*", "group_id": "g"},
            lake={"root": lake_root},
        )
        return BronzeWriter(settings)._consumer_config()

    assert consumer_config({})["topic.metadata.refresh.interval.ms"] == 10000  # the writer's default
    tuned = consumer_config({"topic.metadata.refresh.interval.ms": "2000", "fetch.wait.max.ms": "50"})
    assert tuned["topic.metadata.refresh.interval.ms"] == "2000" and tuned["fetch.wait.max.ms"] == "50"
    assert consumer_config({"enable.auto.commit": "false"})["enable.auto.commit"] is False  # the same value: fine
    with pytest.raises(ConfigError, match="enable.auto.commit, isolation.level"):
        consumer_config({"isolation.level": "read_uncommitted", "enable.auto.commit": "true"})


def test_a_second_stop_signal_exits_at_once_with_interrupted(
    cdc_topic: str, writer_settings: Callable[..., BronzeSettings], tmp_path: Path
) -> None:
    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}")
    log = tmp_path / "writer.log"
    process = _writer_process(settings, log)
    try:
        wait_until(lambda: "partitions assigned" in log.read_text(), timeout=120)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)  # another signal: both are delivered
        assert process.wait(60) == ExitCode.INTERRUPTED, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_claims_are_landed_in_batches_their_resolved_size_keeps_within_the_byte_limit(
    kafka_broker: KafkaBroker, cdc_topic: str, writer_settings: Callable[..., BronzeSettings]
) -> None:
    settings = writer_settings(_pattern(cdc_topic), f"g-{cdc_topic}", batch={"max_bytes": 400_000, "max_latency_seconds": 2})
    store = ClaimStore(settings.lake.root, settings.lake.deltalake_options())
    events = [change_event(n, {"_id": n, "blob": "b" * 300_000}) for n in range(1, 7)]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for message in claim_records(events, store, topic=cdc_topic):  # six claims of 300 KB, a few hundred bytes in Kafka
        producer.produce(cdc_topic, value=message.value(), key=message.key(), headers=message.headers(), partition=0)
    produce(kafka_broker.bootstrap_servers, cdc_topic, [change_event(7, {"_id": 7})], partition=0)
    assert producer.flush(30) == 0
    uri = _table_uri(settings, cdc_topic)
    with WriterThread(settings) as running:
        wait_until(_all_landed(uri, cdc_topic, _end_offsets(kafka_broker.bootstrap_servers, cdc_topic, 3)), 120)
        metrics = running.writer.metrics
    rows = read_bronze(uri)
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 8)]
    assert rows.filter(pl.col("_id") == 3)["blob"].to_list() == ["b" * 300_000]
    assert metrics.flushes.labels("bytes")._value.get() >= 5  # noqa: SLF001 - one claim per batch
    assert open_table(uri).version() >= 6
