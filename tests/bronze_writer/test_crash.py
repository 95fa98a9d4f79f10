"""Exactly once under SIGKILL: many cycles of a writer killed at random points, then a clean run.

Each cycle publishes new events plus re-deliveries (a replay of an older slice, a producer
retry), starts the writer as a subprocess (crash_runner.py) and SIGKILLs it before a bronze
write, during one, after the Delta commit but before the ingest log and Kafka commit, after
a whole batch but before the Kafka commit, or at a random moment. At the end the bronze table
must hold exactly the distinct events published, and its offsets must cover the topic.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bronze_support import change_event, event_id, landed_offsets, produce, read_bronze, storage_options, wait_until
from confluent_kafka import Consumer, TopicPartition
from crash_runner import CRASH_POINT, READY

from lakehouse_common import lake
from lakehouse_common.contract import ValueFormat
from local_stack.kafka import KafkaBroker

RUNNER = Path(__file__).with_name("crash_runner.py")
MODES = ("before-write", "mid-write", "after-bronze-commit", "before-kafka-commit", "random")
CYCLES = 10
PARTITIONS = 3


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-watermarks"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_exactly_once_under_sigkill_at_random_points(
    kafka_broker: KafkaBroker, new_topic: Callable[..., str], lake_root: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("BRONZE_CRASH_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(partitions=PARTITIONS, prefix="cdc.crash")
    env = {
        **os.environ,
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRONZE_CONSUMER__TOPIC_PATTERN": "^" + topic.replace(".", r"\.") + "$",
        "BRONZE_CONSUMER__GROUP_ID": f"g-{topic}",
        "BRONZE_CONSUMER__GROUP_INSTANCE_ID": "crash-replica-0",  # a restart takes its partitions back at once
        "BRONZE_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "BRONZE_BATCH__MAX_ROWS": str(rng.randint(40, 120)),
        "BRONZE_BATCH__MAX_LATENCY_SECONDS": "0.3",
        "BRONZE_LAKE__ROOT": lake_root,
        "BRONZE_LAKE__STORAGE_OPTIONS": json.dumps(storage_options(lake_root)),
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
        "BRONZE_LOG_LEVEL": "WARNING",
    }
    published: list[bytes] = []
    sequence = 0
    outcomes = []
    for cycle in range(CYCLES):
        fresh = [change_event(sequence + n, {"_id": (sequence + n) % 50, "n": sequence + n}) for n in range(1, 301)]
        sequence += 300
        published += fresh
        start = rng.randrange(0, len(published) - 60)
        redelivered = published[start : start + 60]  # a cdc_service replay of old events
        produce(bootstrap, topic, fresh[:150] + fresh[149:150] + fresh[150:], rng.choice(list(ValueFormat)))
        produce(bootstrap, topic, redelivered)
        mode = MODES[cycle % len(MODES)]
        log = open(tmp_path / f"cycle-{cycle}.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen([sys.executable, str(RUNNER), mode, str(seed + cycle)], env=env, stdout=log, stderr=log)
        try:
            returncode = process.wait(timeout=90)
        except subprocess.TimeoutExpired:  # the kill point was not reached: stop it, and fail below
            process.send_signal(signal.SIGKILL)
            returncode = process.wait()
        log.close()
        output = (tmp_path / f"cycle-{cycle}.log").read_text()
        assert returncode == -signal.SIGKILL, output[-3000:]
        assert CRASH_POINT in output, f"cycle {cycle} ({mode}): the kill point was never reached\n{output[-3000:]}"
        outcomes.append(mode)

    ends = _ends(bootstrap, topic)
    uri = lake.bronze_table_uri(lake_root, "crash", topic.split(".")[2])
    log = open(tmp_path / "final.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, str(RUNNER), "none", str(seed)], env=env, stdout=log, stderr=log)
    try:
        # The last crash cycle may have landed everything already: wait for the runner to be
        # able to stop gracefully too, or the SIGTERM below could hit it while it imports.
        wait_until(lambda: READY in (tmp_path / "final.log").read_text(), timeout=120)
        wait_until(lambda: landed_offsets(uri, topic, PARTITIONS) == {p: end - 1 for p, end in ends.items()}, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "final.log").read_text()[-3000:]
        log.close()

    rows = read_bronze(uri)
    expected = sorted(event_id(n) for n in range(1, sequence + 1))
    assert rows.height == len(expected), f"seed {seed}: {rows.height} rows for {len(expected)} events"
    assert sorted(rows["__event_id"].to_list()) == expected, f"seed {seed}"
    marks = lake.read_high_water_marks(uri, storage_options(uri))
    assert {mark.partition: mark.offset for mark in marks.values()} == {p: end - 1 for p, end in ends.items()}
    assert set(outcomes) == set(MODES)
