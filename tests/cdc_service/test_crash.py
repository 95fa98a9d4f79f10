"""SIGKILL mid-stream, then restart: nothing lost; duplicates only after the last checkpoint,
and none at all in exactly-once mode (read_committed)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from cdc_support import event_ids, read_topic

from cdc_service.checkpoints import load_checkpoints

pytestmark = pytest.mark.timeout(300)

TOTAL = 1500


def _records_so_far(bootstrap: str, topic: str, isolation: str) -> int:
    try:
        return len(read_topic(bootstrap, topic, isolation=isolation, idle_s=0.2, timeout_s=5))
    except KeyError:  # the topic does not exist yet
        return 0


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_sigkill_then_restart_loses_nothing(delivery, cdc_env, service_process, mongo_database, kafka_broker) -> None:
    events = mongo_database["events"]
    events.insert_one({"_id": 0})
    env = cdc_env(CDC_PRODUCER__DELIVERY=delivery, CDC_CHECKPOINT_INTERVAL_SECONDS="0.5", CDC_MAX_BATCH_EVENTS="200")
    topic = f"{env['CDC_TOPICS__PREFIX']}.{mongo_database.name}.events"
    bootstrap = kafka_broker.bootstrap_servers
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"

    def write() -> None:
        for number in range(1, TOTAL + 1):
            events.insert_one({"_id": number, "payload": "x" * 200})
            if number % 100 == 0:
                time.sleep(0.05)

    process = service_process(env)
    deadline = time.monotonic() + 60
    while _records_so_far(bootstrap, topic, isolation) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    writer = threading.Thread(target=write)
    writer.start()
    while _records_so_far(bootstrap, topic, isolation) < 400 and time.monotonic() < deadline + 60:
        time.sleep(0.1)
    process.kill()  # SIGKILL: no drain, no final checkpoint
    process.wait(10)
    checkpoint = load_checkpoints({"bootstrap.servers": bootstrap}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"])
    killed_at = checkpoint.streams[f"coll:{mongo_database.name}.events"].position.event_id
    writer.join()

    restarted = service_process(env)
    records = read_topic(bootstrap, topic, isolation=isolation, expect=TOTAL + 1, idle_s=2.0, timeout_s=120)
    restarted.terminate()
    assert restarted.wait(60) == 0  # SIGTERM: drained and stopped cleanly

    inserted = sorted(r["event"]["documentKey"]["_id"] for r in records if r["event"]["operationType"] == "insert")
    assert sorted(set(inserted)) == list(range(1, TOTAL + 1))  # no loss
    counts = Counter(event_ids(records))
    duplicates = sorted(event_id for event_id, count in counts.items() if count > 1)
    if delivery == "exactly_once":
        assert duplicates == []
    else:
        assert all(event_id > killed_at for event_id in duplicates)  # only what the checkpoint did not cover
