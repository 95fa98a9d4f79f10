"""The ``cdc-service`` commands: checkpoint show/set, replay (from bronze), configuration errors, secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from cdc_support import event_ids, read_topic, settings_env
from deltalake import CommitProperties, write_deltalake
from typer.testing import CliRunner

from bronze_writer.tables import namespace_for_topic
from cdc_service.cli import app
from cdc_service.positions import Position
from cdc_service.replay import plan_from_bronze
from cdc_service.scope import StreamSpec
from lakehouse_common import lake
from lakehouse_common.contract import snapshot_complete_event_id, topic_name
from lakehouse_common.lake import HighWaterMark
from lakehouse_common.lifecycle import ExitCode
from local_stack.paths import PROJECT_ROOT

runner = CliRunner()


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands configure JSON logging on the runner's stderr, which closes after each invoke."""
    monkeypatch.setattr("lakehouse_common.cli.configure_logging", lambda *args, **kwargs: None)


def _land(root: Path, database: str, collection: str, marks: dict[int, str]) -> None:
    """A bronze table whose last commit records these (partition -> event id) marks, as bronze_writer does."""
    topic = f"cdc.{database}.{collection}"
    recorded = {
        f"{topic}/{partition}": HighWaterMark(topic, partition, 10 + partition, event_id, json.dumps({"_data": event_id}))
        for partition, event_id in marks.items()
    }
    write_deltalake(
        lake.bronze_table_uri(str(root), database, collection),
        pa.table({"__event_id": list(marks.values())}),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(recorded)}),
    )


def test_replay_from_bronze_starts_at_the_earliest_partition_mark(tmp_path: Path) -> None:
    orders, customers, fresh = (StreamSpec.parse(f"coll:shop.{name}") for name in ("orders", "customers", "fresh"))
    deployment = StreamSpec.parse("deployment")
    _land(tmp_path, "shop", "orders", {0: "82AA0005", 1: "82AA0003", 2: "82AA0009"})
    _land(tmp_path, "shop", "customers", {0: "82AA0001.000000000004", 1: "82AA0007"})  # snapshot not fully landed

    covered = {"coll:shop.orders": ["shop.orders"], "coll:shop.customers": ["shop.customers"], "coll:shop.fresh": ["shop.fresh"]}
    plan = plan_from_bronze([orders, customers, fresh], covered, str(tmp_path), [])
    assert plan.positions == {"coll:shop.orders": Position.from_token({"_data": "82AA0003"})}
    assert sorted(plan.resnapshot) == ["coll:shop.customers", "coll:shop.fresh"]

    single = plan_from_bronze([deployment], {"deployment": ["shop.orders"]}, str(tmp_path), [])
    assert single.positions == {"deployment": Position.from_token({"_data": "82AA0003"})}


def test_replay_from_bronze_resumes_at_the_cluster_time_of_a_snapshot_complete_marker(tmp_path: Path) -> None:
    """A partition whose last landed event is a copy's marker: its id is no resume token, so
    the stream resumes at the marker's cluster time (events there are read again, bronze drops them)."""
    orders = StreamSpec.parse("coll:shop.orders")
    marker_id = snapshot_complete_event_id("82AA0003", 1)
    topic = "cdc.shop.orders"
    marks = {
        f"{topic}/0": HighWaterMark(topic, 0, 10, marker_id, json.dumps({"_data": marker_id})),
        f"{topic}/1": HighWaterMark(topic, 1, 12, "82AA0009", json.dumps({"_data": "82AA0009"})),
    }
    write_deltalake(
        lake.bronze_table_uri(str(tmp_path), "shop", "orders"),
        pa.table(
            {
                "__event_id": [marker_id, "82AA0009"],
                "__operation": ["snapshotComplete", "insert"],
                "__cluster_time": pa.array([datetime(2024, 5, 1, 12, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
                "__cluster_time_increment": pa.array([3, 9], pa.int64()),
            }
        ),
        commit_properties=CommitProperties(custom_metadata={lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(marks)}),
    )
    plan = plan_from_bronze([orders], {"coll:shop.orders": ["shop.orders"]}, str(tmp_path), [])
    assert plan.positions == {"coll:shop.orders": Position.from_time((1714564800, 3))}
    assert plan.resnapshot == []


def test_replay_from_bronze_finds_the_table_of_an_escaped_collection_name(tmp_path: Path) -> None:
    """Bronze names a table after its topic; a collection whose name needed escaping is found there."""
    topic = topic_name("cdc", "shop", "order items")
    database, collection = namespace_for_topic(topic, "cdc", {})
    table = lake.bronze_table_uri(str(tmp_path), database, collection)
    mark = HighWaterMark(topic, 0, 10, "82AA0005", json.dumps({"_data": "82AA0005"}))
    write_deltalake(
        table,
        pa.table({"__event_id": ["82AA0005"]}),
        mode="append",
        commit_properties=CommitProperties(
            custom_metadata={lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks({f"{topic}/0": mark})}
        ),
    )
    spec = StreamSpec.parse("coll:shop.order items")
    plan = plan_from_bronze([spec], {spec.stream_id: ["shop.order items"]}, str(tmp_path), [])
    assert plan.positions == {spec.stream_id: Position.from_token({"_data": "82AA0005"})}


def test_configuration_errors_exit_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_SNAPSHOT__PARALLELISM", "0")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2
    assert "CDC_SNAPSHOT__PARALLELISM" in result.output


def test_secrets_never_reach_the_logs(kafka_broker, tmp_path: Path) -> None:
    env = settings_env("mongodb://app:Sup3rSecret@127.0.0.1:1/?serverSelectionTimeoutMS=300", kafka_broker.bootstrap_servers, "x")
    env.update({"CDC_RETRY_MAX_ATTEMPTS": "1", "CDC_KAFKA__SASL_PASSWORD": "KafkaSecret"})
    result = subprocess.run(
        [sys.executable, "-m", "cdc_service.cli", "run"],
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == ExitCode.FAILED, output  # MongoDB unreachable: retried once, then a clear stop
    assert "Sup3rSecret" not in output and "KafkaSecret" not in output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["level"] == "WARNING" and "restarting" in line["message"] for line in lines)


def test_checkpoint_set_show_and_delete(mongo_endpoint, kafka_broker, monkeypatch: pytest.MonkeyPatch) -> None:
    if mongo_endpoint.is_real:
        pytest.skip("needs no MongoDB; runs once")
    for key, value in settings_env("mongodb://unused", kafka_broker.bootstrap_servers, "x").items():
        monkeypatch.setenv(key, value)
    assert "no checkpoints" in runner.invoke(app, ["checkpoint", "show"]).output

    result = runner.invoke(app, ["checkpoint", "set", "--stream", "coll:shop.orders", "--token", '{"_data": "82AA01"}'])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["checkpoint", "set", "--stream", "db:crm", "--time", "2024-05-01T12:00:00Z"])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(app, ["checkpoint", "show", "--json"]).output)
    assert shown["streams"]["coll:shop.orders"]["position"]["token"] == '{"_data":"82AA01"}'
    assert shown["streams"]["coll:shop.orders"]["kind"] == "manual"
    assert shown["streams"]["db:crm"]["position"]["operation_time"] == [1714564800, 0]
    table = runner.invoke(app, ["checkpoint", "show"]).output
    assert "coll:shop.orders" in table and "startAtOperationTime" in table

    assert runner.invoke(app, ["checkpoint", "set", "--stream", "db:crm", "--delete"]).exit_code == 0
    assert "db:crm" not in json.loads(runner.invoke(app, ["checkpoint", "show", "--json"]).output)["streams"]
    bad = runner.invoke(app, ["checkpoint", "set", "--stream", "nonsense", "--token", '{"_data": "1"}'])
    assert bad.exit_code == 2 and "not a stream id" in bad.output


def test_replay_from_a_bronze_table(cdc_env, run_service, mongo_database, kafka_broker, tmp_path, monkeypatch) -> None:
    items = mongo_database["items"]
    items.insert_one({"_id": 0})
    env = cdc_env()
    service = run_service(env)
    service.streaming(1)
    items.insert_many([{"_id": i} for i in range(1, 9)])
    topic = f"{env['CDC_TOPICS__PREFIX']}.{mongo_database.name}.items"
    records = sorted(
        read_topic(kafka_broker.bootstrap_servers, topic, expect=10, idle_s=0.5), key=lambda r: r["headers"].event_id
    )
    assert service.stop() == 0
    # The snapshot record and its marker sort first; bronze landed up to here, Kafka lost the rest, say.
    landed = records[6]["event"]["_id"]["_data"]
    _land(tmp_path, mongo_database.name, "items", {0: landed})

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["replay", "--from-bronze", str(tmp_path), "--no-run"])
    assert result.exit_code == 0, result.output
    assert f"resumes after {landed}" in result.output

    replayed = run_service(env)
    replayed.streaming(1)
    again = read_topic(kafka_broker.bootstrap_servers, topic, expect=13, idle_s=1.0)
    replayed.stop()
    twice = sorted(event_id for event_id, count in Counter(event_ids(again)).items() if count == 2)
    assert twice == event_ids(records)[7:]  # the events after the mark, with their own ids
