"""``lakehouse-stack up|down|status``: the local stack for development and the demo.

``up`` starts a Kafka broker and, unless ``MONGO_URI`` names a real MongoDB, the MongoDB
stand-in, both in the background, and records them in ``build/stack/state.json``;
``down`` stops what ``up`` started. Exit codes are ``lakehouse_common.lifecycle.ExitCode``:
FAILED when a component does not start, or for ``status`` when the stack is not up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from lakehouse_common.errors import StackError
from lakehouse_common.lifecycle import ExitCode
from local_stack.kafka import start_kafka
from local_stack.mongo import STANDIN_DESCRIPTION, start_mongo_standin
from local_stack.paths import state_dir
from local_stack.processes import pid_alive, stop_pid

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)


def _state_file() -> Path:
    return state_dir() / "state.json"


def read_state() -> dict[str, object] | None:
    """What ``up`` recorded, or None when the stack is not up."""
    path = _state_file()
    if not path.exists():
        return None
    return json.loads(path.read_text())


@app.command()
def up() -> None:
    """Start Kafka and the MongoDB stand-in in the background."""
    state = read_state()
    if state and all(pid_alive(int(pid)) for pid in state["pids"].values()):  # type: ignore[union-attr]
        typer.echo(f"the stack is already up: {_state_file()}")
        raise typer.Exit(ExitCode.OK)
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    try:
        broker = start_kafka(root / "kafka")
        record: dict[str, object] = {
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_logs": str(broker.log_file.parent),
            "pids": {"kafka": broker.process.pid},  # type: ignore[union-attr]
            "started_at": time.time(),
        }
        mongo_uri = os.environ.get("MONGO_URI")
        if mongo_uri:
            record["mongo_uri"] = mongo_uri
            record["mongo"] = "real MongoDB from MONGO_URI"
        else:
            standin = start_mongo_standin(root / "mongo")
            record["mongo_uri"] = standin.uri
            record["mongo"] = STANDIN_DESCRIPTION
            record["pids"]["mongo-standin"] = standin.process.pid  # type: ignore[index,union-attr]
    except StackError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    _state_file().write_text(json.dumps(record, indent=2))
    typer.echo(f"Kafka:   {record['kafka_bootstrap_servers']}")
    typer.echo(f"MongoDB: {record['mongo_uri']}  ({record['mongo']})")
    typer.echo(f"state:   {_state_file()}")


@app.command()
def down() -> None:
    """Stop what ``up`` started."""
    state = read_state()
    if state is None:
        typer.echo("the stack is not up")
        return
    for name, pid in state["pids"].items():  # type: ignore[union-attr]
        stop_pid(int(pid))
        typer.echo(f"stopped {name} (pid {pid})")
    _state_file().unlink()


@app.command()
def status() -> None:
    """Show the stack's endpoints and whether its processes run."""
    state = read_state()
    if state is None:
        typer.echo("the stack is not up")
        raise typer.Exit(ExitCode.FAILED)
    for name, pid in state["pids"].items():  # type: ignore[union-attr]
        typer.echo(f"{name}: pid {pid} {'running' if pid_alive(int(pid)) else 'NOT running'}")
    typer.echo(f"Kafka:   {state['kafka_bootstrap_servers']}")
    typer.echo(f"MongoDB: {state['mongo_uri']}  ({state['mongo']})")


if __name__ == "__main__":
    app()
