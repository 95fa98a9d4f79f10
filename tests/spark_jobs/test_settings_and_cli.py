"""Settings from the environment, and the ``spark-jobs`` commands that need no Spark."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from typer.testing import CliRunner

from lakehouse_common.errors import ConfigError
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.settings import load_settings
from spark_jobs.cli import app, dbt_exit_code
from spark_jobs.dbt_runner import DbtResult
from spark_jobs.lake_tables import gold_table_uri, layer_counts, silver_current_state_uri, silver_history_uri
from spark_jobs.settings import SparkJobsSettings


def test_settings_come_from_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_JOBS_LAKE_ROOT", "s3://bucket/lake")
    monkeypatch.setenv("SPARK_JOBS_SPARK__MASTER", "spark://spark-master:7077")
    monkeypatch.setenv("SPARK_JOBS_DBT__INTERVAL_MINUTES", "15")
    monkeypatch.setenv("SPARK_JOBS_DBT__COMMANDS", '["build --select silver"]')
    monkeypatch.setenv("SPARK_JOBS_MAINTENANCE__RETENTION_HOURS", "72")
    settings = load_settings(SparkJobsSettings)
    assert settings.lake_root == "s3://bucket/lake"
    assert settings.spark.master == "spark://spark-master:7077"
    assert settings.dbt.interval_minutes == 15 and settings.dbt.commands == ["build --select silver"]
    assert settings.maintenance.retention_hours == 72
    monkeypatch.setenv("SPARK_JOBS_DBT__SILVER_DELETES", "archive")
    with pytest.raises(ConfigError, match="SPARK_JOBS_DBT__SILVER_DELETES"):
        load_settings(SparkJobsSettings)


def test_counts_report_rows_per_silver_and_gold_table(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    write_deltalake(silver_current_state_uri(root, "orders"), pa.table({"__document_id": ["a", "b"]}))
    write_deltalake(silver_history_uri(root, "orders"), pa.table({"__event_id": ["1", "2", "3"]}))
    write_deltalake(gold_table_uri(root, "daily_revenue"), pa.table({"revenue": [1.0]}))
    expected = {"silver": {"orders": 2}, "silver_history": {"orders": 3}, "gold": {"daily_revenue": 1}}
    assert layer_counts(root) == expected
    result = CliRunner().invoke(app, ["counts"], env={"SPARK_JOBS_LAKE_ROOT": root})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


def test_spark_defaults_for_other_processes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["spark-defaults", str(tmp_path / "conf")])
    assert result.exit_code == 0, result.output
    assert "io.delta.sql.DeltaSparkSessionExtension" in (tmp_path / "conf" / "spark-defaults.conf").read_text()


def test_maintain_rejects_unknown_layers() -> None:
    result = CliRunner().invoke(app, ["maintain", "--layer", "platinum"])
    assert result.exit_code == ExitCode.BAD_CONFIGURATION and "unknown layer" in result.output


def test_dbt_command_passes_the_arguments_after_the_separator_and_exits_failed_when_dbt_fails(tmp_path: Path) -> None:
    script = tmp_path / "dbt"
    argv = tmp_path / "argv.json"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(argv)!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(3)\n"
    )
    script.chmod(0o755)
    environment = {
        "SPARK_JOBS_DBT__EXECUTABLE": str(script),
        "SPARK_JOBS_DBT__TARGET_PATH": str(tmp_path / "target"),
        "SPARK_JOBS_DBT__LOG_PATH": str(tmp_path / "logs"),
        "SPARK_JOBS_DBT__SPARK_CONF_DIR": str(tmp_path / "conf"),
        "SPARK_JOBS_SPARK__WAREHOUSE_DIR": str(tmp_path / "warehouse"),
        "SPARK_JOBS_SPARK__METASTORE_DIR": str(tmp_path / "metastore"),
    }
    result = CliRunner().invoke(app, ["dbt", "--", "build", "--select", "stg_mongo__orders"], env=environment)
    assert result.exit_code == ExitCode.FAILED  # dbt exited 3: its status is in the log, ours is the project's
    assert json.loads(argv.read_text())[:3] == ["build", "--select", "stg_mongo__orders"]


def test_a_stop_request_that_cuts_a_dbt_run_short_exits_interrupted() -> None:
    passed, failed = DbtResult("build", 0, 1.0, None), DbtResult("test", 2, 1.0, None)
    running, stopped = threading.Event(), threading.Event()
    stopped.set()
    assert dbt_exit_code([passed, passed], 2, running) == ExitCode.OK
    assert dbt_exit_code([passed, failed], 2, running) == ExitCode.FAILED
    assert dbt_exit_code([passed, failed], 2, stopped) == ExitCode.INTERRUPTED  # dbt interrupted on request
    assert dbt_exit_code([passed], 2, stopped) == ExitCode.INTERRUPTED  # the rest never ran
    assert dbt_exit_code([passed, passed], 2, stopped) == ExitCode.OK  # the stop came after the work was done
