"""`make stack-up` / `make stack-down`: the stack starts in the background and stops again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pymongo
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable, write_deltalake

from local_stack.processes import pid_alive


def _stack(command: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LAKEHOUSE_STACK_DIR": str(state_dir)}
    environment.pop("MONGO_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "local_stack.cli", command], capture_output=True, text=True, env=environment, timeout=180
    )


def test_stack_up_starts_kafka_the_standin_and_the_object_store_and_down_stops_them(tmp_path: Path) -> None:
    started = _stack("up", tmp_path)
    assert started.returncode == 0, started.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    try:
        assert "stand-in" in state["mongo"]
        assert AdminClient({"bootstrap.servers": state["kafka_bootstrap_servers"]}).list_topics(timeout=10).brokers
        client = pymongo.MongoClient(state["mongo_uri"], serverSelectionTimeoutMS=10000)
        assert client.admin.command("ping")["ok"] == 1.0
        client.close()
        store = state["object_store"]
        assert store["lake_root"].startswith("s3://lakehouse/")
        write_deltalake(f"{store['lake_root']}/probe", pa.table({"n": [1]}), storage_options=store["storage_options"])
        assert DeltaTable(f"{store['lake_root']}/probe", storage_options=store["storage_options"]).version() == 0
        assert (tmp_path / "state.json").stat().st_mode & 0o077 == 0, "the state file holds the store's keys"
        status = _stack("status", tmp_path)
        assert status.returncode == 0 and "S3:" in status.stdout
        assert store["storage_options"]["AWS_SECRET_ACCESS_KEY"] not in status.stdout
    finally:
        stopped = _stack("down", tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in state["pids"].values())
    assert not (tmp_path / "state.json").exists()
    assert _stack("status", tmp_path).returncode == 1
