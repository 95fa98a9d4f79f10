"""A snapshot on signal while streaming: the copy rate of a chunked copy under concurrent writes.

The service runs (in this process) against the MongoDB stand-in and a real broker, with a
signal collection; a writer updates, inserts and deletes documents of the copied collection
at a steady pace the whole time, so the copy interleaves with a live stream. An
execute-snapshot signal asks for the collection; the copy rate is the documents published
by the copy over the seconds the service reports for it in the signal document (from the
signal's acceptance to the last chunk's durable commit). The machine's load (``uptime``)
is recorded before and after, since the cores are shared.

Size: ``CDC_BENCH_COPY_DOCUMENTS`` (default 50,000 documents of about 500 bytes; the
stand-in scans its whole oplog on every getMore, so a bigger collection measures the stand-in), chunks of
``CDC_BENCH_COPY_CHUNK`` documents (default 4096, the setting's default), writes per second
``CDC_BENCH_COPY_WRITES`` (default 200). Results go to ``build/bench/copy.json``,
the service's JSON log (its ``copy progress`` lines) to ``build/bench/copy-service.log``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from cdc_service.service import CdcService
from cdc_service.settings import CdcSettings
from lakehouse_common.json_logging import JsonFormatter
from lakehouse_common.settings import load_settings
from local_stack.kafka import start_kafka
from local_stack.mongo import STANDIN_DESCRIPTION, start_mongo_standin
from local_stack.paths import PROJECT_ROOT

DEFAULT_DOCUMENTS = 50_000
DEFAULT_CHUNK = 4096
DEFAULT_WRITES_PER_S = 200


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


class _Writer(threading.Thread):
    """Updates (70%), inserts (15%) and deletes (15%) at a steady rate."""

    def __init__(self, collection: Any, count: int, per_second: int) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.count = count
        self.pause = 1.0 / per_second
        self.stop = threading.Event()
        self.writes = 0
        self.random = random.Random(11)

    def run(self) -> None:
        while not self.stop.wait(self.pause):
            roll = self.random.random()
            number = self.random.randrange(self.count)
            if roll < 0.7:
                self.collection.update_one({"_id": number}, {"$inc": {"version": 1}})
            elif roll < 0.85:
                self.collection.insert_one({"_id": f"new-{self.writes}", "version": 0})
            else:
                self.collection.delete_one({"_id": number})
            self.writes += 1


def _settings(mongo_uri: str, bootstrap: str, chunk: int) -> CdcSettings:
    name = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        "CDC_NAME": name,
        "CDC_MONGO_URI": mongo_uri,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CDC_SCOPE__INCLUDE_DATABASES": '["shop"]',
        "CDC_TOPICS__PREFIX": name,
        "CDC_TOPICS__CHECKPOINT_TOPIC": f"{name}.checkpoints",
        "CDC_TOPICS__DEAD_LETTER_TOPIC": f"{name}.dead-letters",
        "CDC_HTTP__PORT": "0",
        "CDC_SNAPSHOT__MODE": "never",
        "CDC_SNAPSHOT__SIGNAL_COLLECTION": "shop.cdc_signals",
        "CDC_SNAPSHOT__CHUNK_SIZE": str(chunk),
        "CDC_PROGRESS_BAR": "never",
    }
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return load_settings(CdcSettings)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(results_dir: Path) -> dict[str, Any]:
    documents = int(os.environ.get("CDC_BENCH_COPY_DOCUMENTS", DEFAULT_DOCUMENTS))
    chunk = int(os.environ.get("CDC_BENCH_COPY_CHUNK", DEFAULT_CHUNK))
    writes_per_s = int(os.environ.get("CDC_BENCH_COPY_WRITES", DEFAULT_WRITES_PER_S))
    results_dir.mkdir(parents=True, exist_ok=True)
    log_handler = logging.FileHandler(results_dir / "copy-service.log", mode="w")
    log_handler.setFormatter(JsonFormatter("cdc-service"))
    root = logging.getLogger()
    root.addHandler(log_handler)
    root.setLevel(logging.INFO)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=PROJECT_ROOT / "build"))
    broker = start_kafka(work_dir / "kafka", heap="1g")
    standin = start_mongo_standin(work_dir / "mongo", heap="2g")
    client: MongoClient = MongoClient(standin.uri)
    writer: _Writer | None = None
    try:
        orders = client["shop"]["orders"]
        payload = "x" * 420
        for start in range(0, documents, 10_000):
            orders.insert_many([{"_id": number, "version": 0, "status": "placed", "notes": payload}
                                for number in range(start, min(start + 10_000, documents))])
        service = CdcService(_settings(standin.uri, broker.bootstrap_servers, chunk))
        runner = threading.Thread(target=service.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 120
        while service.metrics.streams._value.get() < 1:  # noqa: SLF001 - the running service's own gauge
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start streaming")
            time.sleep(0.1)
        time.sleep(2)
        writer = _Writer(orders, documents, writes_per_s)
        writer.start()
        load_before = _load()
        signals = client["shop"]["cdc_signals"]
        signals.insert_one({"_id": "bench", "type": "execute-snapshot", "data": {"data-collections": ["shop.orders"]}})
        started = time.monotonic()
        done: dict[str, Any] | None = None
        while done is None and time.monotonic() - started < 3600:
            time.sleep(0.5)
            done = signals.find_one({"_id": "bench", "status": "done"})
        wall = time.monotonic() - started
        load_after = _load()
        writer.stop.set()
        writer.join()
        service.request_stop()
        runner.join(120)
        if done is None:
            raise RuntimeError("the copy did not finish within an hour")
        entry = done["finished"][0]
        seconds = float(entry["seconds"])
        result = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "mongo": STANDIN_DESCRIPTION,
            "documents": documents,
            "document_bytes": len(payload) + 60,
            "chunk_size": chunk,
            "chunks": entry["chunks"],
            "published": entry["published"],
            "superseded": entry["superseded"],
            "copy_seconds": seconds,
            "wall_seconds_from_signal": round(wall, 3),
            "documents_per_second": round(entry["published"] / seconds) if seconds else None,
            "concurrent_writes": writer.writes,
            "concurrent_writes_per_second": round(writer.writes / wall, 1) if wall else None,
            "load_before": load_before,
            "load_after": load_after,
            "cores": os.cpu_count(),
        }
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join()
        root.removeHandler(log_handler)
        log_handler.close()
        client.close()
        standin.stop()
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "copy.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
