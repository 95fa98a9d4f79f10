"""bronze-writer on the object store: several replicas (real ``bronze-writer run`` processes with
static group membership) commit to the same tables while partitions move between them, and
every event lands once; configurations or stores that would let commits overwrite each other
are refused at start with exit status 2."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from bronze_support import change_event, event_id, landed_offsets, open_table, produce, read_bronze, use_lake, wait_until
from confluent_kafka import Consumer, TopicPartition

from lakehouse_common import lake
from lakehouse_common.lifecycle import ExitCode
from local_stack.kafka import KafkaBroker
from local_stack.object_store import ObjectStore

if TYPE_CHECKING:
    from conftest import UnconditionalStore

BRONZE_WRITER = str(Path(sys.executable).with_name("bronze-writer"))
PARTITIONS = 6
EVENTS = 3000


def _environment(bootstrap: str, topic: str, root: str, options: dict[str, str], instance: str) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("BRONZE_")},
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRONZE_CONSUMER__TOPIC_PATTERN": "^" + topic.replace(".", r"\.") + "$",
        "BRONZE_CONSUMER__GROUP_ID": f"g-{topic}",
        "BRONZE_CONSUMER__GROUP_INSTANCE_ID": instance,  # static membership, as the chart's StatefulSet gives
        "BRONZE_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "BRONZE_BATCH__MAX_LATENCY_SECONDS": "0.2",
        "BRONZE_BATCH__MAX_ROWS": "40",
        "BRONZE_LAKE__ROOT": root,
        # One variable per option, as the chart sets them (the secret ones from a Secret).
        **{f"BRONZE_LAKE__STORAGE_OPTIONS__{key}": value for key, value in options.items()},
        "BRONZE_WRITER_ID": instance,
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
    }


class Replica:
    """One ``bronze-writer run`` process, its JSON log in a file."""

    def __init__(self, environment: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen([BRONZE_WRITER, "run"], env=environment, stdout=output, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def run_replicas_through_rebalances(
    bootstrap: str, topic: str, root: str, options: dict[str, str], work: Path, read_options: dict[str, str] | None = None
) -> tuple[pl.DataFrame, list[dict[str, object]], list[Path]]:
    """Two replicas land a workload; a third joins and leaves while it runs (two rebalances).

    The replicas reach the store with ``options``, the test reads it with ``read_options``.
    """
    use_lake(root, read_options or options)
    events = [change_event(n, {"_id": n % 211, "n": n}) for n in range(1, EVENTS + 1)]
    produced = threading.Event()

    def workload() -> None:
        for start in range(0, EVENTS, 100):
            produce(bootstrap, topic, events[start : start + 100])
            time.sleep(0.25)
        produced.set()

    def replica(instance: str) -> Replica:
        return Replica(_environment(bootstrap, topic, root, options, instance), work / f"{instance}.log")

    uri = lake.bronze_table_uri(root, "shop", topic.split(".")[2])
    replicas = [replica("writer-0"), replica("writer-1")]
    producer = threading.Thread(target=workload, name="workload")
    try:
        producer.start()
        wait_until(lambda: sum(landed_offsets(uri, topic, PARTITIONS).get(p) is not None for p in range(PARTITIONS)) >= 2, 120)
        joiner = replica("writer-2")  # joins mid-stream: the group rebalances, partitions move
        wait_until(lambda: b"partitions assigned" in joiner.log.read_bytes(), 120)
        time.sleep(2.0)
        assert joiner.stop() == ExitCode.OK, joiner.log.read_text()[-3000:]  # leaves: a second rebalance
        wait_until(produced.is_set, 180)
        ends = _ends(bootstrap, topic)
        wait_until(lambda: landed_offsets(uri, topic, PARTITIONS) == {p: end - 1 for p, end in ends.items()}, 180)
    finally:
        producer.join(180)
        codes = [member.stop() for member in replicas]
    assert codes == [ExitCode.OK, ExitCode.OK], [member.log.read_text()[-3000:] for member in replicas]
    history = open_table(uri).history()
    return read_bronze(uri), history, [member.log for member in [*replicas, joiner]]


def test_replicas_on_the_object_store_land_every_event_once_through_rebalances(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], object_store: ObjectStore, tmp_path: Path
) -> None:
    topic = new_topic(partitions=PARTITIONS, prefix="cdc.shop")
    root = object_store.lake_root(f"tests/{uuid.uuid4().hex}")
    rows, history, logs = run_replicas_through_rebalances(
        kafka_broker.bootstrap_servers, topic, root, object_store.storage_options(), tmp_path
    )
    assert rows.height == EVENTS, f"{rows.height} rows for {EVENTS} events"
    assert sorted(rows["__event_id"].to_list()) == [event_id(n) for n in range(1, EVENTS + 1)]
    writers = {commit.get("lakehouse.writer") for commit in history} - {None}
    assert {"writer-0", "writer-1", "writer-2"} <= writers, "every replica committed to the one table"
    ingest_log = read_bronze(lake.ingest_log_uri(root))
    assert int(ingest_log.filter(pl.col("table_uri").str.ends_with(topic.split(".")[2]))["rows"].sum()) == EVENTS
    for log in logs:  # the store's secret never reaches a log line
        assert object_store.secret_access_key not in log.read_text()


def _run(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BRONZE_WRITER, "run"], env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "unsafe",
    [{"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, {"AWS_CONDITIONAL_PUT": "disabled"}, {"AWS_S3_LOCKING_PROVIDER": "dynamodb"}],
    ids=["unsafe-rename", "no-conditional-put", "locking-provider"],
)
def test_unsafe_commit_options_exit_with_bad_configuration(
    kafka_broker: KafkaBroker, object_store: ObjectStore, unsafe: dict[str, str]
) -> None:
    root = object_store.lake_root(f"tests/{uuid.uuid4().hex}")
    options = {**object_store.storage_options(), **unsafe}
    environment = _environment(kafka_broker.bootstrap_servers, "cdc.shop.x", root, options, "w")
    result = _run(environment)
    assert result.returncode == ExitCode.BAD_CONFIGURATION, result.stdout + result.stderr
    assert next(iter(unsafe)) in result.stderr and "conditional writes" in result.stderr
    assert object_store.secret_access_key not in result.stdout + result.stderr


def test_a_store_that_ignores_conditional_writes_is_refused_at_start(
    kafka_broker: KafkaBroker, store_ignoring_conditional_writes: UnconditionalStore
) -> None:
    environment = _environment(
        kafka_broker.bootstrap_servers, "cdc.shop.x", f"s3://lakehouse/{uuid.uuid4().hex}", store_ignoring_conditional_writes.storage_options, "w"
    )
    result = _run(environment)
    assert result.returncode == ExitCode.BAD_CONFIGURATION, result.stdout + result.stderr
    assert "ignores conditional writes" in result.stderr
