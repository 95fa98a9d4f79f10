"""``lakehouse-stack up|down|status``: the local stack for development and the demo.

``up`` starts a Kafka broker, the object store (SeaweedFS's S3 gateway, with a ``lakehouse``
bucket) and, unless ``MONGO_URI`` names a real MongoDB, the MongoDB stand-in, in the
background, and records them in ``build/stack/state.json``; ``up --spark-cluster`` adds a
standalone Spark master and worker with the Spark Thrift Server (dbt's ``cluster`` target)
on the object-store lake. ``down`` stops what ``up`` started. Exit codes are ``lakehouse_common.lifecycle.ExitCode``:
FAILED when a component does not start, or for ``status`` when the stack is not up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from lakehouse_common.errors import StackError
from lakehouse_common.lifecycle import ExitCode
from local_stack.kafka import start_kafka
from local_stack.mongo import STANDIN_DESCRIPTION, start_mongo_standin
from local_stack.object_store import DESCRIPTION as OBJECT_STORE_DESCRIPTION
from local_stack.object_store import start_object_store
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
def up(
    spark_cluster: Annotated[
        bool, typer.Option("--spark-cluster", help="Also start a Spark master, a worker and the Thrift Server.")
    ] = False,
) -> None:
    """Start Kafka, the object store and the MongoDB stand-in in the background."""
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
        store = start_object_store(root / "object-store")
        record["pids"]["object-store"] = store.process.pid  # type: ignore[index,union-attr]
        record["object_store"] = {
            "description": OBJECT_STORE_DESCRIPTION,
            "lake_root": store.lake_root("lake"),
            # The storage options every component takes (BRONZE_LAKE__STORAGE_OPTIONS, SPARK_JOBS_STORAGE_OPTIONS);
            # state.json is owner-only, as it holds the keys of this throw-away store.
            "storage_options": store.storage_options(),
        }
        if spark_cluster:
            from local_stack.spark_cluster import start_spark_cluster
            from spark_jobs.session import SparkSettings

            work = root / "spark-cluster"
            spark = SparkSettings(warehouse_dir=work / "warehouse", metastore_dir=work / "metastore", shuffle_partitions=4)
            cluster = start_spark_cluster(work / "processes", spark, store.storage_options())
            for name, process in cluster.processes.items():
                record["pids"][f"spark-{name}"] = process.pid  # type: ignore[index]
            record["spark_cluster"] = {"master": cluster.master_url, "dbt_environment": cluster.dbt_environment()}
    except StackError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    _state_file().touch(mode=0o600)
    _state_file().chmod(0o600)
    _state_file().write_text(json.dumps(record, indent=2))
    _echo_endpoints(record)
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
    _echo_endpoints(state)


def _echo_endpoints(record: dict[str, object]) -> None:
    typer.echo(f"Kafka:   {record['kafka_bootstrap_servers']}")
    typer.echo(f"MongoDB: {record['mongo_uri']}  ({record['mongo']})")
    store = record.get("object_store")
    if isinstance(store, dict):
        endpoint = store["storage_options"]["AWS_ENDPOINT_URL"]
        typer.echo(f"S3:      {endpoint}  ({store['description']}; lake {store['lake_root']}, keys in the state file)")
    cluster = record.get("spark_cluster")
    if isinstance(cluster, dict):
        thrift = cluster["dbt_environment"]
        typer.echo(f"Spark:   {cluster['master']}, Thrift Server {thrift['SPARK_THRIFT_HOST']}:{thrift['SPARK_THRIFT_PORT']}")


if __name__ == "__main__":
    app()
