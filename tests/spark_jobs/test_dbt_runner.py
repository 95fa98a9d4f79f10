"""The runner streams dbt's console line by line into the JSON log and returns dbt's exit status.

dbt itself is exercised end to end in tests/dbt; here a scripted stand-in for the dbt
executable makes streaming provable: it prints one line, then waits until the runner
has logged that line before printing the rest. A runner that buffered the output (or a
child whose stdout was block-buffered) would deadlock until the script's timeout.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_jobs.dbt_runner import DbtRunner, exit_status, summarize_results
from spark_jobs.settings import SparkJobsSettings

FAKE_DBT = """\
#!{python}
import json, os, pathlib, sys, time
arguments = sys.argv[1:]
target = pathlib.Path(arguments[arguments.index("--target-path") + 1])
pathlib.Path(os.environ["FAKE_DBT_ENV"]).write_text(json.dumps(dict(os.environ)))
print(json.dumps({{"info": {{"name": "MainReportVersion", "level": "info", "msg": "Running with dbt=fake " + " ".join(arguments[:1])}}}}))
marker = pathlib.Path(os.environ["FAKE_DBT_MARKER"])
deadline = time.time() + float(os.environ.get("FAKE_DBT_WAIT", "10"))
while not marker.exists() and time.time() < deadline:
    time.sleep(0.02)
if not marker.exists():
    print("the runner never logged the first line")
    sys.exit(99)
print("26/11/24 12:00:00 WARN SparkSession: a plain line from the JVM")
print("26/11/24 12:00:01 ERROR Executor: task failed")
print("\tat org.apache.spark.executor.Executor.run(Executor.scala:1)")
print(json.dumps({{"info": {{"name": "Formatting", "level": "info", "msg": ""}}}}))
print(json.dumps({{"info": {{"name": "LogTestResult", "level": "error", "msg": "1 of 2 FAIL 3 accepted_values_orders_status"}},
                  "data": {{"node_info": {{"unique_id": "test.p.accepted_values_orders_status", "node_status": "fail"}}}}}}))
target.mkdir(parents=True, exist_ok=True)
(target / "run_results.json").write_text(json.dumps({{
    "metadata": {{"invocation_id": "fake-1"}},
    "elapsed_time": 1.5,
    "results": [
        {{"unique_id": "model.p.orders", "status": "success", "execution_time": 1.0, "message": "OK"}},
        {{"unique_id": "test.p.accepted_values_orders_status", "status": "fail", "execution_time": 0.2,
          "message": "Got 3 results, configured to fail if != 0", "failures": 3}},
    ],
}}))
time.sleep(float(os.environ.get("FAKE_DBT_SLEEP", "0")))
sys.exit(int(os.environ.get("FAKE_DBT_EXIT", "1")))
"""


class _Capture(logging.Handler):
    """Keeps dbt's records; the first one creates the marker the script waits for."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.marker.touch()


@pytest.fixture
def fake_dbt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SparkJobsSettings, _Capture]]:
    script = tmp_path / "dbt"
    script.write_text(FAKE_DBT.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_DBT_MARKER", str(tmp_path / "marker"))
    monkeypatch.setenv("FAKE_DBT_ENV", str(tmp_path / "env.json"))
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -Dderby.system.home=/elsewhere pyspark-shell")
    settings = SparkJobsSettings(
        lake_root="relative-lake",
        spark={"warehouse_dir": tmp_path / "warehouse", "metastore_dir": tmp_path / "metastore"},
        dbt={
            "executable": str(script),
            "commands": ["build --select orders"],
            "target_path": tmp_path / "target",
            "log_path": tmp_path / "logs",
            "spark_conf_dir": tmp_path / "conf",
            "threads": 2,
        },
    )
    capture = _Capture(tmp_path / "marker")
    dbt_logger = logging.getLogger("dbt")
    dbt_logger.addHandler(capture)
    dbt_logger.setLevel(logging.DEBUG)
    yield settings, capture
    dbt_logger.removeHandler(capture)


def test_each_line_is_logged_as_it_arrives_and_the_exit_status_is_dbts(fake_dbt, tmp_path: Path) -> None:
    settings, capture = fake_dbt
    (result,) = DbtRunner(settings).run_all()
    assert result.exit_code == 1, [record.getMessage() for record in capture.records]
    messages = [record.getMessage() for record in capture.records]
    assert messages[0].startswith("Running with dbt=fake build")
    assert messages[1:] == [
        "26/11/24 12:00:00 WARN SparkSession: a plain line from the JVM",
        "26/11/24 12:00:01 ERROR Executor: task failed",
        "\tat org.apache.spark.executor.Executor.run(Executor.scala:1)",
        "1 of 2 FAIL 3 accepted_values_orders_status",
    ], "blank separators are dropped, every other line is one record"
    first, plain, error, trace, failed = capture.records
    assert (first.levelno, first.dbt_event) == (logging.INFO, "MainReportVersion")
    assert plain.levelno == logging.WARNING and not hasattr(plain, "dbt_event")
    assert error.levelno == trace.levelno == logging.ERROR, "a stack trace keeps its line's level"
    assert failed.levelno == logging.ERROR
    assert (failed.dbt_node, failed.dbt_node_status) == ("test.p.accepted_values_orders_status", "fail")
    assert all(record.dbt_command == "build --select orders" for record in capture.records)
    assert result.summary is not None
    assert result.summary["nodes"] == {"model": {"success": 1}, "test": {"fail": 1}}
    assert result.summary["problems"][0]["unique_id"] == "test.p.accepted_values_orders_status"
    assert result.summary["problems"][0]["failures"] == 3


def test_dbt_gets_the_projects_spark_configuration_not_the_parents(fake_dbt, tmp_path: Path) -> None:
    settings, _ = fake_dbt
    DbtRunner(settings).run_all()
    environment = json.loads((tmp_path / "env.json").read_text())
    assert environment["LAKEHOUSE_LAKE_ROOT"] == str(Path("relative-lake").resolve())
    assert environment["PYTHONUNBUFFERED"] == "1" and environment["DBT_THREADS"] == "2"
    assert f"-Dderby.system.home={(tmp_path / 'metastore').resolve()}" in environment["PYSPARK_SUBMIT_ARGS"]
    defaults = (Path(environment["SPARK_CONF_DIR"]) / "spark-defaults.conf").read_text()
    assert "io.delta.sql.DeltaSparkSessionExtension" in defaults
    assert str((tmp_path / "warehouse").resolve()) in defaults


def test_keep_going_and_the_first_failure_decides_the_status(fake_dbt, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = fake_dbt
    settings = settings.model_copy(update={"dbt": settings.dbt.model_copy(update={"commands": ["source freshness", "build"]})})
    monkeypatch.setenv("FAKE_DBT_EXIT", "3")
    results = DbtRunner(settings).run_all()
    assert [result.exit_code for result in results] == [3, 3] and exit_status(results) == 3
    stopping = settings.model_copy(update={"dbt": settings.dbt.model_copy(update={"keep_going": False})})
    assert len(DbtRunner(stopping).run_all()) == 1


def test_a_loop_repeats_until_stopped(fake_dbt, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = fake_dbt
    monkeypatch.setenv("FAKE_DBT_EXIT", "0")
    settings = settings.model_copy(update={"dbt": settings.dbt.model_copy(update={"interval_minutes": 0.001})})
    stop = threading.Event()
    runner = DbtRunner(settings, stop=stop)
    runs: list[int] = []
    original = runner.run

    def counting_run(command: str):  # noqa: ANN202
        result = original(command)
        runs.append(result.exit_code)
        if len(runs) == 3:
            stop.set()
        return result

    runner.run = counting_run  # type: ignore[method-assign]
    assert runner.run_forever() == 0
    assert runs == [0, 0, 0]


def test_a_stop_request_interrupts_dbt(fake_dbt, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = fake_dbt
    monkeypatch.setenv("FAKE_DBT_SLEEP", "60")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    (result,) = DbtRunner(settings, stop=stop).run_all()
    assert result.exit_code != 0 and result.elapsed_seconds < 30


def test_summaries_of_freshness_results(tmp_path: Path) -> None:
    sources = tmp_path / "sources.json"
    sources.write_text(
        json.dumps(
            {
                "metadata": {"invocation_id": "x"},
                "elapsed_time": 2.0,
                "results": [
                    {"unique_id": "source.p.mongo.orders", "status": "pass", "execution_time": 0.5},
                    {"unique_id": "source.p.mongo.customers", "status": "warn", "execution_time": 0.7, "error": None},
                ],
            }
        )
    )
    summary = summarize_results(sources)
    assert summary["nodes"] == {"source": {"pass": 1, "warn": 1}}
    assert [problem["unique_id"] for problem in summary["problems"]] == ["source.p.mongo.customers"]
    assert summary["slowest"][0] == {"unique_id": "source.p.mongo.customers", "seconds": 0.7}
