"""The demo end to end on a tiny dataset, with the suite's real broker and MongoDB stand-in.

The full ``make demo`` builds every dbt model; here dbt builds silver (every collection's
current state and history) and one gold mart with its upstream models, because dbt on
Spark costs several seconds per model on the 2-core CI machine (the full build is
``make demo``'s). The orchestration (stack,
load, services as child processes, live changes, catch-up, dbt runner, summary, shutdown)
is the real one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from demo_support import bronze_event_ids, demo_settings
from rich.console import Console

from data_generator.config import COLLECTIONS
from demo.run import STANDIN, DemoRun
from demo.settings import DemoSettings
from demo.summary import verification_problems
from lakehouse_common.lifecycle import ExitCode
from local_stack.kafka import KafkaBroker
from local_stack.mongo import MongoStandIn
from local_stack.processes import pid_alive
from spark_jobs.verify import compare, documents_side


def test_demo_builds_silver_equal_to_mongodb_and_stops_everything(
    kafka_broker: KafkaBroker, mongo_standin: MongoStandIn, run_dir: Path
) -> None:
    settings = demo_settings(
        run_dir / "demo" / "build" / "demo",
        kafka_broker.bootstrap_servers,
        mongo_standin.uri,
        dbt_commands=["run --select staging +conversion_funnel"],
    )
    status = DemoRun(settings, Console(width=140)).run()

    summary = json.loads(settings.summary_file.read_text())
    assert status == ExitCode.OK, summary.get("problems")
    assert {"mongo", "bronze", "silver", "gold", "lag_seconds", "mongo_kind"} <= set(summary)
    assert summary["mongo_kind"] == STANDIN
    assert list(summary["mongo"]) == list(COLLECTIONS)
    assert set(summary["bronze"]) == set(summary["silver"]) == set(COLLECTIONS)
    assert summary["silver"] == summary["mongo"]
    assert sum(summary["mongo"].values()) > 0
    for collection, documents in summary["mongo"].items():
        assert summary["bronze"][collection] >= documents  # at least one event per document
    assert summary["gold"]["conversion_funnel"] > 0
    assert summary["kpis"]["sessions"] == summary["mongo"]["web_sessions"]
    assert summary["lag_seconds"] is not None and summary["lag_seconds"] >= 0
    assert summary["lag"]["events"] > 0
    assert summary["ok"] is True and summary["problems"] == []
    # The verdict is the verification, document by document.
    assert summary["verified"] is True and list(summary["verification"]) == list(COLLECTIONS)
    for collection, result in summary["verification"].items():
        assert result["ok"] and result["mongo"] == result["silver"] == summary["mongo"][collection], collection
        assert result["missing"] == result["extra"] == result["differing"] == 0, collection

    # Bronze holds every event once; the services' JSON logs are where the demo says.
    for collection, ids in bronze_event_ids(settings.lake_root, settings.database).items():
        assert ids.n_unique() == ids.len(), collection
    for service in ("cdc-service", "bronze-writer", "dbt"):
        first = (settings.logs_dir / f"{service}.log").read_text().splitlines()[0]
        assert json.loads(first)["level"]
    # The report: its inputs recorded during the run, the page, and its screenshot.
    series = json.loads((settings.work_dir / "series.json").read_text())
    assert series["pipeline"]["lag"] and series["pipeline"]["throughput"]["bronze"] and series["samples"]
    assert series["gold"]["funnel"]["sessions"] == summary["kpis"]["sessions"]
    assert (settings.work_dir / "report.html").stat().st_size > 3_000_000
    assert (settings.work_dir / "report.png").read_bytes()[:4] == b"\x89PNG"
    # Everything the demo started has stopped.
    for pid_file in settings.work_dir.glob("*.pid"):
        assert not pid_alive(int(pid_file.read_text())), pid_file.name


def test_a_difference_the_verification_found_is_a_problem_naming_the_ids() -> None:
    mongo, silver = documents_side([{"_id": 1, "v": 1}, {"_id": 2, "v": 1}]), documents_side([{"_id": 1, "v": 2}])
    verification = {"orders": compare(mongo, silver).as_dict(), "customers": compare(mongo, mongo).as_dict()}
    assert verification_problems(verification) == ["orders: 1 missing in silver: 2", "orders: 1 differing: 1"]


def test_mongo_uri_selects_a_real_replica_set_and_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_URI", "mongodb://cdc:s3cret@db-0:27017/?replicaSet=rs0")
    settings = DemoSettings()
    assert settings.mongo_uri is not None
    assert settings.mongo_uri.get_secret_value().startswith("mongodb://cdc:s3cret@")
    assert "s3cret" not in repr(settings)


def test_a_mongo_uri_that_is_not_a_replica_set_is_refused(mongo_standin: MongoStandIn, run_dir: Path) -> None:
    settings = DemoSettings(work_dir=run_dir / "demo-refused", mongo_uri=mongo_standin.uri, kafka_bootstrap_servers="127.0.0.1:1")
    console = Console(width=200, record=True)
    assert DemoRun(settings, console).run() == ExitCode.BAD_CONFIGURATION
    assert "is not a replica set" in console.export_text()
    assert not os.path.exists(settings.summary_file)
