"""`make stack-up` / `make stack-down`: the stack starts in the background and stops again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pymongo
from confluent_kafka.admin import AdminClient

from local_stack.processes import pid_alive


def _stack(command: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LAKEHOUSE_STACK_DIR": str(state_dir)}
    environment.pop("MONGO_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "local_stack.cli", command], capture_output=True, text=True, env=environment, timeout=180
    )


def test_stack_up_starts_kafka_and_the_standin_and_down_stops_them(tmp_path: Path) -> None:
    started = _stack("up", tmp_path)
    assert started.returncode == 0, started.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    try:
        assert "stand-in" in state["mongo"]
        assert AdminClient({"bootstrap.servers": state["kafka_bootstrap_servers"]}).list_topics(timeout=10).brokers
        client = pymongo.MongoClient(state["mongo_uri"], serverSelectionTimeoutMS=10000)
        assert client.admin.command("ping")["ok"] == 1.0
        client.close()
        assert _stack("status", tmp_path).returncode == 0
    finally:
        stopped = _stack("down", tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in state["pids"].values())
    assert not (tmp_path / "state.json").exists()
    assert _stack("status", tmp_path).returncode == 1
