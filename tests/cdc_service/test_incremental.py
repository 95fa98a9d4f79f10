"""Copies while streaming: chunks between watermarks, on signal, under concurrent writes.

Against the MongoDB stand-in and, where Docker is, a real replica set (``mongo_endpoint``):
the final check is always that the published events, replayed per document in event-id
order, give MongoDB's final state.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from bson import ObjectId, json_util
from bson.raw_bson import RawBSONDocument

from cdc_service.checkpoints import CopyState, load_checkpoints
from cdc_support import apply_events, read_topic
from lakehouse_common.contract import parse_snapshot_event_id
from local_stack.paths import PROJECT_ROOT

pytestmark = pytest.mark.timeout(300)


def _mixed_ids(count: int) -> list[Any]:
    """_id values of several BSON types, so chunks cross type brackets."""
    ids: list[Any] = []
    for number in range(count):
        kind = number % 4
        ids.append(number if kind == 0 else f"key-{number:05d}" if kind == 1 else ObjectId() if kind == 2 else float(number) + 0.5)
    return ids


def _key(document_id: Any) -> str:
    return json.dumps(json_util.loads(json_util.dumps({"_id": document_id})), sort_keys=True, default=str)


def _mongo_state(collection: Any) -> dict[str, dict[str, Any]]:
    return {_key(document["_id"]): json_util.loads(json_util.dumps(document)) for document in collection.find()}


def _published_state(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: json_util.loads(json_util.dumps(document)) for key, document in apply_events(records).items()}


class Writer(threading.Thread):
    """Concurrent updates, inserts and deletes while the copy runs."""

    def __init__(self, collection: Any, ids: list[Any], *, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.ids = list(ids)
        self.pause = pause
        self.stop = threading.Event()
        self.writes = 0
        self.random = random.Random(7)

    def run(self) -> None:
        while not self.stop.is_set():
            choice = self.random.random()
            document_id = self.random.choice(self.ids)
            if choice < 0.7:
                self.collection.update_one({"_id": document_id}, {"$inc": {"version": 1}, "$set": {"touched": True}})
            elif choice < 0.85:
                new_id = f"new-{self.writes:06d}"
                self.collection.insert_one({"_id": new_id, "version": 0})
                self.ids.append(new_id)
            else:
                self.collection.delete_one({"_id": document_id})
            self.writes += 1
            time.sleep(self.pause)


def _cdc(env: dict[str, str], *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc_service.cli", *arguments], env={**__import__("os").environ, **env}, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_a_signalled_copy_under_concurrent_writes_ends_in_mongodbs_state(cdc_env, run_service, mongo_database, kafka_broker) -> None:
    items = mongo_database["items"]
    ids = _mixed_ids(3000)
    items.insert_many([{"_id": document_id, "version": 0, "payload": "x" * 100} for document_id in ids])
    env = cdc_env(
        CDC_SNAPSHOT__MODE="never",  # nothing copied at start: only the signalled copy brings these documents
        CDC_SNAPSHOT__SIGNAL_COLLECTION=f"{mongo_database.name}.cdc_signals",
        CDC_SNAPSHOT__CHUNK_SIZE="400",
    )
    service = run_service(env)
    service.streaming(1)
    writer = Writer(items, ids)
    writer.start()
    try:
        copy = _cdc(env, "snapshot", "--stream", f"coll:{mongo_database.name}.items")
    finally:
        writer.stop.set()
        writer.join()
    assert copy.returncode == 0, copy.stdout + copy.stderr
    assert "the running service" in copy.stdout and "accepted signal" in copy.stdout, copy.stdout
    assert f"{mongo_database.name}.items: done" in copy.stdout, copy.stdout

    topic = f"{env['CDC_TOPICS__PREFIX']}.{mongo_database.name}.items"
    final = items.count_documents({})
    time.sleep(2)  # the last writes reach the topic
    records = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=3.0, timeout_s=120)
    assert _published_state(records) == _mongo_state(items)
    snapshots = [r for r in records if r["headers"].operation == "snapshot"]
    progress = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).copies[f"{mongo_database.name}.items"]
    assert progress.state == CopyState.DONE and progress.copied == len(snapshots)
    assert progress.chunks >= len(ids) // 400
    assert writer.writes > 100 and final > 0
    # Every record sorts right after its chunk's high watermark: its position is no change event of the topic.
    changes = {r["headers"].event_id for r in records if r["headers"].operation != "snapshot"}
    assert all(parse_snapshot_event_id(r["headers"].event_id).position not in changes for r in snapshots)
    service.stop()
    signal = mongo_database["cdc_signals"].find_one({"type": "execute-snapshot"})
    assert signal["status"] == "done" and signal["finished"][0]["published"] == progress.copied
    assert mongo_database["cdc_signals"].count_documents({"_id": {"$regex": "^wm:"}}) == 0  # watermarks cleaned up
