"""Exact de-duplication: nothing is dropped unless bronze holds that exact event id.

The lookups (file statistics, cached file ids) without a broker; then the three ways a
high-water mark used to lose events, each for real: a forged id far above the others,
librdkafka failing some records of a partition while later ones succeed (a paused broker),
and an interrupted ``cdc-service snapshot`` followed by ``cdc-service run`` (the stand-in).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pymongo
import pytest
from bronze_support import WriterThread, change_event, event_id, land, read_bronze, records, wait_until
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from deltalake import DeltaTable, write_deltalake

from bronze_writer.dedupe import EventIdIndex, candidate_files
from bronze_writer.lander import Lander
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.settings import BronzeSettings
from lakehouse_common import lake
from lakehouse_common.contract import EncodedEvent, ValueFormat, encode_events, headers_for
from lakehouse_common.settings import load_settings
from local_stack.kafka import KafkaBroker
from local_stack.mongo import MongoStandIn
from local_stack.paths import PROJECT_ROOT

TOPIC = "cdc.shop.orders"


@pytest.fixture
def settings(tmp_path: Path) -> BronzeSettings:
    return load_settings(BronzeSettings, lake={"root": str(tmp_path / "lake")}, writer_id="test-writer")


@pytest.fixture
def lander(settings: BronzeSettings) -> Lander:
    return Lander(settings, BronzeMetrics())


def _ids_table(path: Path, files: list[list[str]]) -> DeltaTable:
    for ids in files:
        write_deltalake(str(path), pa.table({"__event_id": pa.array(ids, pa.string())}), mode="append")
    return DeltaTable(str(path))


def test_lookups_read_only_the_files_whose_statistics_admit_the_ids(tmp_path: Path) -> None:
    # Resume tokens are long: deltalake keeps 64 characters of string statistics.
    prefix = "82" + "a" * 70
    files = [[f"{prefix}{n:04d}" for n in range(start, start + 100)] for start in (0, 100, 200, 300)]
    table = _ids_table(tmp_path / "t", files)
    stats = pl.DataFrame(table.get_add_actions(flatten=True))
    assert stats["max.__event_id"].str.len_chars().max() == 64  # truncated (and rounded up)
    wanted = pl.Series([f"{prefix}0150", f"{prefix}0151", f"{prefix}9999"]).sort()
    # Truncated bounds cannot tell these files apart: every one is a candidate, and the lookup stays exact.
    assert len(candidate_files(table, wanted)) == 4
    index = EventIdIndex(max_cached_bytes=10_000_000)
    found = index.lookup(table, wanted)
    assert sorted(found.held.to_list()) == [f"{prefix}0150", f"{prefix}0151"]
    assert found.files_read == 4
    again = index.lookup(table, wanted)  # files never change: their ids are cached
    assert sorted(again.held.to_list()) == [f"{prefix}0150", f"{prefix}0151"] and again.files_read == 0


def test_statistics_rule_out_files_with_short_ids(tmp_path: Path) -> None:
    files = [[event_id(n) for n in range(start, start + 100)] for start in (0, 100, 200, 300)]
    table = _ids_table(tmp_path / "t", files)
    wanted = pl.Series([event_id(150), event_id(151), event_id(5000)]).sort()
    [uri] = candidate_files(table, wanted)
    assert pl.read_parquet(uri)["__event_id"].to_list() == files[1]
    assert candidate_files(table, pl.Series([event_id(400)])) == []


def test_the_cache_stays_within_its_bound(tmp_path: Path) -> None:
    files = [[event_id(n) for n in range(start, start + 1000)] for start in range(0, 5000, 1000)]
    table = _ids_table(tmp_path / "t", files)
    one_file = pl.Series([event_id(n) for n in range(1000)]).estimated_size()
    index = EventIdIndex(max_cached_bytes=2 * one_file)
    everything = pl.Series([event_id(n) for n in range(0, 5000, 7)])
    assert index.lookup(table, everything).held.len() == everything.len()
    assert index.cached_bytes <= 2 * one_file


def _log(settings: BronzeSettings) -> pl.DataFrame:
    return read_bronze(lake.ingest_log_uri(settings.lake.root)).sort("committed_at")


def test_a_forged_id_far_above_the_others_hides_no_later_event(lander: Lander, settings: BronzeSettings) -> None:
    """The issue's reproduction: one well-formed record with a huge id, then real events below it."""
    land(lander, records([change_event(n, {"_id": n}) for n in range(1, 5)], topic=TOPIC))
    forged = change_event(1, {"_id": "forged"}, extra={"_id": {"_data": "ffffffffffffffffffff"}})
    land(lander, records([change_event(5, {"_id": 5}), forged], topic=TOPIC, first_offset=4))  # one file: ids 5..ffff
    later = [records([change_event(n, {"_id": n})], topic=TOPIC, first_offset=n) for n in range(6, 15)]
    results = [land(lander, batch).commits[0] for batch in later]
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert sorted(rows["__event_id"].to_list()) == sorted([event_id(n) for n in range(1, 15)] + ["ffffffffffffffffffff"])
    log = _log(settings)
    assert log["duplicates_dropped"].to_list()[-9:] == [0] * 9
    assert log["rows"].to_list()[-9:] == [1] * 9
    # Every id is now below the forged mark, so each batch looks its ids up; the file whose statistics
    # span the forged id is the only one they admit, and it is read once (then cached).
    assert [result.ids_looked_up for result in results] == [1] * 9
    assert sum(result.files_read for result in results) == 1


def test_republished_delivery_failures_land_below_the_mark(lander: Lander, settings: BronzeSettings) -> None:
    """Records 11..20 failed, 21..30 succeeded; the republish from the checkpoint lands 11..20 only."""
    events = [change_event(n, {"_id": n}) for n in range(1, 41)]
    land(lander, records(events[:10], topic=TOPIC) + records(events[20:30], topic=TOPIC, first_offset=10))
    landed = land(lander, records(events[10:40], topic=TOPIC, first_offset=20))
    rows = read_bronze(lake.bronze_table_uri(settings.lake.root, "shop", "orders"))
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 41)]
    commit = landed.commits[0]
    assert (commit.rows, commit.duplicates_dropped, commit.ids_looked_up) == (20, 10, 20)


def _delivered(producer: Producer, topic: str, encoded: list[EncodedEvent], reports: dict[str, KafkaError | None]) -> None:
    """Produce, recording each event's delivery report (None: delivered)."""
    for item in encoded:

        def report(error: KafkaError | None, _message: object, event: str = item.event_id) -> None:
            reports[event] = error

        producer.produce(topic, value=item.value, key=item.key, headers=headers_for(item, ValueFormat.JSON), on_delivery=report)
        producer.poll(0)


def test_at_least_once_delivery_failures_lose_nothing_on_a_real_broker(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], writer_settings: Callable[..., BronzeSettings]
) -> None:
    """librdkafka fails the records queued while the broker is away; later ones are delivered; the
    producer republishes from its checkpoint, as cdc-service does; bronze ends with each event once.

    A faithful simulation of cdc-service's at-least-once producer (idempotent, acks=all, a short
    delivery timeout): the gap must be certain, so records are produced by a client that has no
    connection yet while the broker is paused (none can be in flight), and the last ones just
    before it resumes.
    """
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=1, prefix="cdc.shop")
    encoded = encode_events([change_event(n, {"_id": n}) for n in range(1, 41)], ValueFormat.JSON)
    reports: dict[str, KafkaError | None] = {}
    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    first = Producer(config)
    _delivered(first, topic, encoded[:10], reports)
    assert first.flush(30) == 0
    timeout_ms = 8000
    kafka_broker.pause()
    try:
        producer = Producer({**config, "delivery.timeout.ms": timeout_ms})
        _delivered(producer, topic, encoded[10:20], reports)
        deadline = time.monotonic() + 60
        while len(reports) < 20 and time.monotonic() < deadline:
            producer.poll(0.2)
        _delivered(producer, topic, encoded[20:30], reports)
    finally:
        kafka_broker.resume()
    producer.flush(60)
    failed = {event for event, error in reports.items() if error is not None}
    assert failed == {item.event_id for item in encoded[10:20]}, "the gap was not created"
    assert all(reports[item.event_id] is None for item in encoded[20:30]), "records after the gap were not delivered"
    assert {reports[event].code() for event in failed} == {KafkaError._MSG_TIMED_OUT}  # type: ignore[union-attr]

    settings = writer_settings("^" + topic.replace(".", r"\.") + "$", f"g-{topic}")
    uri = lake.bronze_table_uri(settings.lake.root, "shop", topic.split(".")[2])

    def landed() -> int:
        try:
            return read_bronze(uri).height
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    with WriterThread(settings):
        wait_until(lambda: landed() == 20, timeout=120)
        # The service restarts from its last checkpoint (event 10) and publishes 11..30 again, then goes on.
        _delivered(first, topic, encoded[10:40], reports)
        assert first.flush(30) == 0
        wait_until(lambda: landed() >= 40, timeout=120)
    rows = read_bronze(uri)
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, 41)]
    log = read_bronze(lake.ingest_log_uri(settings.lake.root))
    assert log["duplicates_dropped"].sum() == 10 and log["ids_looked_up"].sum() >= 20
    del first, producer  # no client left retrying once the session's broker stops


def _cdc_env(standin: MongoStandIn, bootstrap: str, database: str, name: str) -> dict[str, str]:
    return {
        "CDC_NAME": name,
        "CDC_MONGO_URI": standin.uri,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CDC_SCOPE__INCLUDE_DATABASES": json.dumps([database]),
        "CDC_TOPICS__PREFIX": name,
        "CDC_TOPICS__PARTITIONS": "1",
        "CDC_TOPICS__CHECKPOINT_TOPIC": f"{name}.checkpoints",
        "CDC_TOPICS__DEAD_LETTER_TOPIC": f"{name}.dead-letters",
        "CDC_HTTP__PORT": "0",
        "CDC_HTTP__HOST": "127.0.0.1",
        "CDC_CHECKPOINT_INTERVAL_SECONDS": "0.3",
        "CDC_HEARTBEAT_INTERVAL_SECONDS": "1",
        "CDC_STREAM__MAX_AWAIT_MS": "200",
        "CDC_STREAM__IDLE_POLL_INTERVAL_SECONDS": "0.05",
        "CDC_SNAPSHOT__MODE": "never",
        "CDC_SNAPSHOT__BATCH_SIZE": "10",
        "CDC_PROGRESS_BAR": "never",
        "CDC_LOG_LEVEL": "INFO",
    }


def _cdc(env: dict[str, str], log: Path, *arguments: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cdc_service.cli", *arguments],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    except Exception:  # noqa: BLE001 - the topic does not exist yet
        return 0
    finally:
        consumer.close()


def test_an_interrupted_snapshot_then_run_loses_no_change(
    kafka_broker: KafkaBroker,
    mongo_standin: MongoStandIn,
    writer_settings: Callable[..., BronzeSettings],
    tmp_path: Path,
) -> None:
    """``cdc-service snapshot --stream X`` killed mid-copy, then ``cdc-service run``: the stream resumes
    from its old checkpoint, below the interrupted copy's ids; bronze must land those changes."""
    bootstrap = kafka_broker.bootstrap_servers
    database = f"test_{uuid.uuid4().hex[:10]}"
    name = f"t{uuid.uuid4().hex[:10]}"
    env = _cdc_env(mongo_standin, bootstrap, database, name)
    topic = f"{name}.{database}.orders"
    log = tmp_path / "cdc.log"
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_standin.uri)
    orders = client[database]["orders"]
    orders.insert_many([{"_id": n, "bulk": True} for n in range(20_000)])
    settings = writer_settings("^" + topic.replace(".", r"\.") + "$", f"g-{topic}", consumer={"topic_prefix": name})
    uri = lake.bronze_table_uri(settings.lake.root, database, "orders")

    def bronze() -> pl.DataFrame:
        try:
            return read_bronze(uri)
        except Exception:  # noqa: BLE001 - not created yet
            return pl.DataFrame()

    def inserted(document_ids: range) -> Callable[[], bool]:
        wanted = {str(n) for n in document_ids}

        def check() -> bool:
            frame = bronze()
            return frame.height > 0 and wanted <= set(frame.filter(pl.col("__operation") == "insert")["__document_id"])

        return check

    processes: list[subprocess.Popen[bytes]] = []

    def cdc(*arguments: str) -> subprocess.Popen[bytes]:
        processes.append(_cdc(env, log, *arguments))
        return processes[-1]

    def streamed() -> bool:  # the stream opens "from now" a moment after the service says it streams
        orders.insert_one({"_id": 100_000 + len(probes)})
        probes.append(1)
        frame = bronze()
        return frame.height > 0 and (frame["__operation"] == "insert").any()

    probes: list[int] = []
    try:
        with WriterThread(settings):
            service = cdc("run")  # streams from now: the bulk documents are not published
            wait_until(streamed, timeout=120, interval=1.0)
            service.send_signal(signal.SIGTERM)
            assert service.wait(60) == 0, log.read_text()[-3000:]

            # Changes while the service is down, then a forced copy that is killed midway.
            orders.insert_many([{"_id": 200_000 + n} for n in range(10)])
            orders.update_one({"_id": 200_000}, {"$set": {"changed": True}})
            before = _end_offset(bootstrap, topic)
            copy = cdc("snapshot", "--stream", f"coll:{database}.orders")
            wait_until(lambda: _end_offset(bootstrap, topic) > before + 50, timeout=120, interval=0.02)
            copy.send_signal(signal.SIGKILL)
            copy.wait(30)
            copied = _end_offset(bootstrap, topic) - before
            assert copied < 20_000, f"the copy finished ({copied} records) before it could be interrupted"
            wait_until(lambda: bronze().filter(pl.col("__operation") == "snapshot").height == copied, timeout=120)

            # The stream resumes from its checkpoint, before the copy's position.
            service = cdc("run")
            orders.insert_one({"_id": 300_000})
            wait_until(inserted(range(300_000, 300_001)), timeout=120)
            service.send_signal(signal.SIGTERM)
            assert service.wait(60) == 0, log.read_text()[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        client.drop_database(database)
        client.close()
    rows = bronze()
    changes = rows.filter(pl.col("__operation") != "snapshot")
    inserts = set(changes.filter(pl.col("__operation") == "insert")["__document_id"].to_list())
    assert {str(200_000 + n) for n in range(10)} <= inserts, "changes made before the interrupted copy were dropped"
    assert changes.filter(pl.col("__operation") == "update")["__document_id"].to_list() == ["200000"]
    assert rows["__event_id"].n_unique() == rows.height
