"""Offset discontinuities are never silent: a recreated topic, retention, another topic id.

The detection rule without a broker, then the real thing: topics deleted and recreated
under a restarted and under a running writer, records deleted before they were landed,
each with the ``fail`` policy (the writer stops, naming the reset command, which then
works) or ``accept`` (landing goes on from the new offsets, logged at ERROR and counted).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from bronze_support import WriterThread, change_event, event_id, produce, read_bronze, storage_options, wait_until
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable

from bronze_writer.errors import OffsetDiscontinuityError
from bronze_writer.offsets import DiscontinuityKind, KafkaIdentity, find_discontinuity
from bronze_writer.settings import BronzeSettings
from lakehouse_common import lake
from lakehouse_common.lake import HighWaterMark
from lakehouse_common.lifecycle import ExitCode
from local_stack.kafka import KafkaBroker

BRONZE_WRITER = str(Path(sys.executable).with_name("bronze-writer"))


def _mark(cluster: str | None = "c1", topic_id: str | None = "t1") -> HighWaterMark:
    return HighWaterMark("cdc.shop.orders", 0, 99, "00ff", '{"_data":"00ff"}', cluster, topic_id)


@pytest.mark.parametrize(
    ("watermarks", "current", "kind"),
    [
        ((0, 100), KafkaIdentity("c1", "t1"), None),  # continues exactly
        ((50, 500), KafkaIdentity("c1", "t1"), None),
        ((0, 30), KafkaIdentity("c1", "t1"), DiscontinuityKind.BEHIND),
        ((120, 500), KafkaIdentity("c1", "t1"), DiscontinuityKind.RETENTION),
        ((0, 500), KafkaIdentity("c1", "t2"), DiscontinuityKind.TOPIC_REPLACED),
        ((0, 500), KafkaIdentity("c2", "t9"), DiscontinuityKind.CLUSTER_REPLACED),
        ((0, 500), KafkaIdentity(None, None), None),  # nothing to compare
    ],
)
def test_a_discontinuity_is_found_from_offsets_and_ids(
    watermarks: tuple[int, int], current: KafkaIdentity, kind: DiscontinuityKind | None
) -> None:
    found = find_discontinuity("cdc.shop.orders", 0, 100, _mark(), watermarks, current)
    assert (found.kind if found else None) == kind
    if found is not None:
        assert "offset 99 (next 100)" in found.describe()
        assert found.reset_command == "bronze-writer reset-offsets --topic cdc.shop.orders --partition 0 --to earliest"


def test_marks_written_before_ids_were_recorded_compare_offsets_only() -> None:
    assert find_discontinuity("t", 0, 100, _mark(None, None), (0, 500), KafkaIdentity("c1", "t1")) is None
    assert find_discontinuity("t", 0, 100, None, (0, 30), KafkaIdentity("c1", "t1")) is not None


def _pattern(topic: str) -> str:
    return "^" + topic.replace(".", r"\.") + "$"


def _uri(settings: BronzeSettings, topic: str) -> str:
    return lake.bronze_table_uri(settings.lake.root, "shop", topic.split(".")[2])


def _rows(uri: str) -> pl.DataFrame:
    try:
        return read_bronze(uri)
    except Exception:  # noqa: BLE001 - not created yet
        return pl.DataFrame({"__event_id": []}, schema={"__event_id": pl.String})


def _events(first: int, count: int) -> list[bytes]:
    return [change_event(n, {"_id": n}) for n in range(first, first + count)]


def _recreate(admin: AdminClient, topic: str, partitions: int = 1) -> None:
    """Delete the topic and create it again under the same name (a new topic id, offsets from 0)."""
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _land_first(settings: BronzeSettings, bootstrap: str, topic: str, count: int) -> str:
    produce(bootstrap, topic, _events(1, count))
    uri = _uri(settings, topic)
    with WriterThread(settings):
        wait_until(lambda: _rows(uri).height == count, timeout=120)
    return uri


def _writer_env(settings: BronzeSettings) -> dict[str, str]:
    return {
        **os.environ,
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "BRONZE_CONSUMER__TOPIC_PATTERN": settings.consumer.topic_pattern,
        "BRONZE_CONSUMER__GROUP_ID": settings.consumer.group_id,
        "BRONZE_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "BRONZE_LAKE__ROOT": settings.lake.root,
        "BRONZE_LAKE__STORAGE_OPTIONS": json.dumps(settings.lake.deltalake_options()),
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
        "BRONZE_BATCH__MAX_LATENCY_SECONDS": "0.5",
    }


def test_a_recreated_topic_stops_the_writer_with_the_reset_command_which_then_works(
    kafka_broker: KafkaBroker,
    kafka_admin: AdminClient,
    new_topic: Callable[..., str],
    writer_settings: Callable[..., BronzeSettings],
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=1, prefix="cdc.shop")
    settings = writer_settings(_pattern(topic), f"g-{topic}")
    uri = _land_first(settings, bootstrap, topic, 20)
    _recreate(kafka_admin, topic)
    produce(bootstrap, topic, _events(21, 5))  # offsets 0..4, below the 19 bronze landed

    env = _writer_env(settings)
    env["PATH"] = f"{Path(BRONZE_WRITER).parent}:{env['PATH']}"  # the command as printed
    stopped = subprocess.run([BRONZE_WRITER, "run"], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert stopped.returncode == ExitCode.FAILED, stopped.stderr[-3000:]
    command = f"bronze-writer reset-offsets --topic {topic} --partition 0 --to earliest"
    assert command in stopped.stderr
    errors = [json.loads(line) for line in stopped.stderr.splitlines() if line.startswith("{")]
    [logged] = [entry for entry in errors if entry["level"] == "ERROR" and entry.get("kind") == "topic_replaced"]
    assert (logged["topic"], logged["partition"], logged["bronze_next_offset"], logged["kafka_high_offset"]) == (
        topic, 0, 20, 5
    )  # fmt: skip
    assert _rows(uri).height == 20  # nothing landed from the new offsets, nothing filtered silently

    reset = subprocess.run(command.split(), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert reset.returncode == ExitCode.OK, reset.stderr[-3000:]
    assert f"{topic}[0]: next offset 20 -> 0 (Kafka has 0 to 4)" in reset.stdout
    with WriterThread(settings):
        wait_until(lambda: _rows(uri).height == 25, timeout=120)
    assert sorted(_rows(uri)["__event_id"].to_list()) == [event_id(n) for n in range(1, 26)]
    marks = lake.read_high_water_marks(uri, storage_options(uri))
    assert marks[f"{topic}/0"].offset == 4 and marks[f"{topic}/0"].event_id == event_id(25)


def test_a_topic_recreated_under_a_running_writer_is_accepted_when_so_configured(
    kafka_broker: KafkaBroker,
    kafka_admin: AdminClient,
    new_topic: Callable[..., str],
    writer_settings: Callable[..., BronzeSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=1, prefix="cdc.shop")
    settings = writer_settings(_pattern(topic), f"g-{topic}", consumer={"offset_discontinuity": "accept"})
    uri = _uri(settings, topic)
    produce(bootstrap, topic, _events(1, 30))
    with caplog.at_level(logging.ERROR, logger="bronze_writer"), WriterThread(settings) as running:
        wait_until(lambda: _rows(uri).height == 30, timeout=120)
        _recreate(kafka_admin, topic)
        produce(bootstrap, topic, _events(31, 5))
        wait_until(lambda: _rows(uri).height == 35, timeout=180)
        counted = running.writer.metrics.offset_discontinuities.collect()[0].samples
    assert sorted(_rows(uri)["__event_id"].to_list()) == [event_id(n) for n in range(1, 36)]
    assert sum(sample.value for sample in counted if sample.name.endswith("_total")) >= 1
    assert any(record.levelno == logging.ERROR and topic in record.getMessage() for record in caplog.records)
    table_txn = lake.read_high_water_marks(uri, storage_options(uri))[f"{topic}/0"]
    assert table_txn.offset == 4


def test_records_deleted_before_they_were_landed_are_reported(
    kafka_broker: KafkaBroker,
    kafka_admin: AdminClient,
    new_topic: Callable[..., str],
    writer_settings: Callable[..., BronzeSettings],
) -> None:
    """Retention overran a stopped writer (deleteRecords here): fail says so; accept lands what is left."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=1, prefix="cdc.shop")
    settings = writer_settings(_pattern(topic), f"g-{topic}")
    uri = _land_first(settings, bootstrap, topic, 10)
    produce(bootstrap, topic, _events(11, 20))  # offsets 10..29
    kafka_admin.delete_records([TopicPartition(topic, 0, 20)])[TopicPartition(topic, 0, 20)].result(30)

    failing = WriterThread(settings)
    with pytest.raises(OffsetDiscontinuityError) as stopped, failing:
        wait_until(lambda: failing.writer._failure is not None, timeout=120)  # it stops on its own
    assert stopped.value.discontinuity.kind is DiscontinuityKind.RETENTION
    assert (stopped.value.discontinuity.next_offset, stopped.value.discontinuity.low) == (10, 20)
    assert _rows(uri).height == 10

    accepting = writer_settings(_pattern(topic), f"g-{topic}", consumer={"offset_discontinuity": "accept"})
    with WriterThread(accepting):
        wait_until(lambda: _rows(uri).height == 20, timeout=120)
    assert sorted(_rows(uri)["__event_id"].to_list()) == [event_id(n) for n in (*range(1, 11), *range(21, 31))]
    [reset] = [commit for commit in DeltaTable(uri, storage_options=storage_options(uri)).history() if lake.OFFSET_RESET_KEY in commit]
    assert json.loads(reset[lake.OFFSET_RESET_KEY])["reason"] == "retention"
