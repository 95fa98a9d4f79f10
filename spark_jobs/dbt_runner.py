"""Run dbt as a subprocess and stream its console output into the service's JSON log.

As in the seed project, where the orchestrator triggered dbt through a subprocess and
captured its console into the orchestrator's log: every line dbt prints becomes one log
record the moment it is printed (dbt's JSON log lines keep their level, event name and
node), then a summary of ``run_results.json`` is logged (nodes by status, failures, the
slowest nodes) and dbt's exit status is returned. ``run_forever`` repeats the commands
every N minutes for a long-running deployment; ``run_all`` runs them once (a CronJob).

dbt runs in its own process with its own Spark session (dbt-spark's ``session`` method):
the runner writes ``spark-defaults.conf`` from the project's Spark settings and points
``SPARK_CONF_DIR`` at it, so that session has Delta, the same warehouse and metastore.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as MetricCounter

from spark_jobs.session import pyspark_submit_args, write_spark_defaults
from spark_jobs.settings import SparkJobsSettings

logger = logging.getLogger(__name__)
dbt_output = logging.getLogger("dbt")

_DBT_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_PROBLEM_STATUSES = {"error", "fail", "runtime error", "warn"}
# Spark's console logging for dbt's session: warnings and errors, minus the metastore's
# notes about Delta tables not being Hive-compatible (they never are), plan truncation and
# the local checkpoints of Delta's MERGE.
_SPARK_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.hive.name = org.apache.spark.sql.hive
logger.hive.level = error
logger.hiveconf.name = org.apache.hadoop.hive
logger.hiveconf.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
logger.plans.name = org.apache.spark.util.SparkStringUtils
logger.plans.level = error
logger.checkpoints.name = org.apache.spark.rdd.MapPartitionsRDD
logger.checkpoints.level = error
"""


@dataclass(frozen=True)
class DbtResult:
    """One dbt invocation: the command, its exit status and the summary of its results file."""

    command: str
    exit_code: int
    elapsed_seconds: float
    summary: dict[str, Any] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def exit_status(results: list[DbtResult]) -> int:
    """The first failing command's exit status, or 0."""
    return next((result.exit_code for result in results if result.exit_code != 0), 0)


def absolute_lake_root(root: str) -> str:
    """Spark resolves relative paths against its own working directory: make local roots absolute."""
    return root if "://" in root else str(Path(root).resolve())


def summarize_results(path: Path) -> dict[str, Any]:
    """Nodes by type and status, problems and the slowest nodes, from run_results.json or sources.json."""
    data = json.loads(path.read_text())
    nodes: dict[str, Counter[str]] = {}
    problems = []
    for result in data.get("results", []):
        resource_type = result["unique_id"].split(".", 1)[0]
        nodes.setdefault(resource_type, Counter())[result["status"]] += 1
        if result["status"] in _PROBLEM_STATUSES:
            problems.append(
                {
                    "unique_id": result["unique_id"],
                    "status": result["status"],
                    "message": result.get("message") or result.get("error"),
                    "failures": result.get("failures"),
                }
            )
    timed = [result for result in data.get("results", []) if "execution_time" in result]
    slowest = sorted(timed, key=lambda result: result["execution_time"], reverse=True)[:5]
    return {
        "invocation_id": data.get("metadata", {}).get("invocation_id"),
        "elapsed_seconds": data.get("elapsed_time"),
        "nodes": {resource_type: dict(counts) for resource_type, counts in sorted(nodes.items())},
        "problems": problems,
        "slowest": [{"unique_id": result["unique_id"], "seconds": round(result["execution_time"], 3)} for result in slowest],
    }


class DbtMetrics:
    """Prometheus metrics of the runner."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = MetricCounter(
            "lakehouse_dbt_runs", "dbt invocations by command and outcome.", ["command", "outcome"], registry=registry
        )
        self.duration = Gauge(
            "lakehouse_dbt_last_duration_seconds", "Duration of the last invocation.", ["command"], registry=registry
        )
        self.last_success = Gauge(
            "lakehouse_dbt_last_success_timestamp_seconds",
            "When the command last succeeded (Unix time).",
            ["command"],
            registry=registry,
        )
        self.nodes = Gauge(
            "lakehouse_dbt_last_nodes",
            "Nodes of the last invocation by type and status.",
            ["command", "resource_type", "status"],
            registry=registry,
        )

    def record(self, result: DbtResult) -> None:
        self.runs.labels(result.command, "success" if result.ok else "failure").inc()
        self.duration.labels(result.command).set(result.elapsed_seconds)
        if result.ok:
            self.last_success.labels(result.command).set(time.time())
        for resource_type, counts in ((result.summary or {}).get("nodes") or {}).items():
            for status, count in counts.items():
                self.nodes.labels(result.command, resource_type, status).set(count)


class DbtRunner:
    """Runs the configured dbt commands once or on a schedule."""

    def __init__(
        self,
        settings: SparkJobsSettings,
        *,
        stop: threading.Event | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.metrics = DbtMetrics(registry or CollectorRegistry())
        self.last_results: list[DbtResult] = []
        self._plain_level = logging.INFO

    # ------------------------------------------------------------------ invocation

    def command_line(self, command: str) -> list[str]:
        dbt = self.settings.dbt
        arguments = [
            dbt.executable,
            *shlex.split(command),
            "--project-dir", str(dbt.project_dir.resolve()),
            "--profiles-dir", str(dbt.profiles_dir.resolve()),
            "--target", dbt.target,
            "--target-path", str(dbt.target_path.resolve()),
            "--log-path", str(dbt.log_path.resolve()),
            "--log-format", dbt.log_format,
            "--no-use-colors",
        ]  # fmt: skip
        if dbt.vars:
            arguments += ["--vars", json.dumps(dbt.vars)]
        return arguments

    def environment(self) -> dict[str, str]:
        """The parent's environment, minus its own Spark launch arguments, plus the project's."""
        dbt, spark = self.settings.dbt, self.settings.spark
        environment = {key: value for key, value in os.environ.items() if key != "PYSPARK_SUBMIT_ARGS"}
        environment.update(
            {
                "SPARK_CONF_DIR": str(dbt.spark_conf_dir.resolve()),
                "PYSPARK_SUBMIT_ARGS": pyspark_submit_args(spark),
                "LAKEHOUSE_LAKE_ROOT": absolute_lake_root(self.settings.lake_root),
                "LAKEHOUSE_MONGO_DATABASE": dbt.mongo_database,
                "LAKEHOUSE_SILVER_DELETES": dbt.silver_deletes,
                "DBT_TARGET": dbt.target,
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if dbt.threads is not None:
            environment["DBT_THREADS"] = str(dbt.threads)
        if spark.master.startswith("local"):
            environment.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        environment.update(dbt.env)
        return environment

    def _prepare(self) -> None:
        dbt, spark = self.settings.dbt, self.settings.spark
        write_spark_defaults(spark, dbt.spark_conf_dir, self.settings.object_store_options())
        (dbt.spark_conf_dir / "log4j2.properties").write_text(_SPARK_LOG4J)
        for directory in (spark.warehouse_dir, spark.metastore_dir, dbt.target_path, dbt.log_path):
            directory.mkdir(parents=True, exist_ok=True)

    def run(self, command: str) -> DbtResult:
        """Run one dbt command, streaming its output; returns its exit status and summary."""
        self._prepare()
        arguments = self.command_line(command)
        logger.info("starting dbt", extra={"dbt_command": command, "argv": arguments})
        started, started_wall = time.monotonic(), time.time()
        process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.settings.dbt.project_dir,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,
        )
        watcher = threading.Thread(target=self._stop_on_request, args=(process, command), name="dbt-stop-watcher", daemon=True)
        watcher.start()
        assert process.stdout is not None
        for line in process.stdout:
            self._emit(line, command)
        exit_code = process.wait()
        watcher.join()  # it ends within its 0.5 s poll once dbt has exited: no thread outlives the run
        elapsed = time.monotonic() - started
        summary = self._summary(started_wall)
        result = DbtResult(command, exit_code, round(elapsed, 3), summary)
        self.metrics.record(result)
        logger.log(
            logging.INFO if result.ok else logging.ERROR,
            "dbt finished" if result.ok else "dbt failed",
            extra={"dbt_command": command, "exit_code": exit_code, "elapsed_seconds": result.elapsed_seconds, "summary": summary},
        )
        return result

    def _emit(self, line: str, command: str) -> None:
        """One line of dbt's console as one log record, structured when dbt wrote JSON."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return
        extra: dict[str, Any] = {"dbt_command": command}
        level = logging.INFO
        message = text
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and isinstance(event.get("info"), dict):
                info = event["info"]
                message = info.get("msg", text)
                if not message.strip():
                    return  # dbt's blank separator lines
                level = _DBT_LEVELS.get(info.get("level", "info"), logging.INFO)
                extra["dbt_event"] = info.get("name")
                node = (event.get("data") or {}).get("node_info") or {}
                if node:
                    extra["dbt_node"] = node.get("unique_id")
                    extra["dbt_node_status"] = node.get("node_status")
        elif text[0].isspace() or text.startswith(("Caused by:", "...")):
            level = self._plain_level  # a stack trace continues the line before it
        elif " ERROR " in text or text.startswith("ERROR"):
            level = logging.ERROR
        elif " WARN " in text:
            level = logging.WARNING
        if "dbt_event" not in extra:
            self._plain_level = level
        dbt_output.log(level, message, extra=extra)

    def _summary(self, started_wall: float) -> dict[str, Any] | None:
        for name in ("run_results.json", "sources.json"):
            path = self.settings.dbt.target_path.resolve() / name
            if path.exists() and path.stat().st_mtime >= started_wall - 1:
                return summarize_results(path)
        return None

    def _stop_on_request(self, process: subprocess.Popen[str], command: str) -> None:
        """On a stop request, interrupt dbt (it cancels its queries), then kill it after the grace period."""
        while process.poll() is None:
            if not self.stop.wait(0.5):
                continue
            logger.warning("stop requested: interrupting dbt", extra={"dbt_command": command})
            process.send_signal(signal.SIGINT)
            try:
                process.wait(self.settings.dbt.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                logger.error("dbt ignored the interrupt: killing it", extra={"dbt_command": command})
                os.killpg(process.pid, signal.SIGKILL)
            return

    # ------------------------------------------------------------------ schedules

    def run_all(self) -> list[DbtResult]:
        """The configured commands, in order; after a failure the rest run only with keep_going."""
        results: list[DbtResult] = []
        for command in self.settings.dbt.commands:
            if self.stop.is_set():
                break
            result = self.run(command)
            results.append(result)
            if not result.ok and not self.settings.dbt.keep_going:
                break
        self.last_results = results
        return results

    def run_forever(self) -> int:
        """Run the commands every ``interval_minutes`` until stopped; returns the last run's status."""
        interval = (self.settings.dbt.interval_minutes or 0) * 60
        status = 0
        next_start = time.monotonic()
        while not self.stop.is_set():
            status = exit_status(self.run_all())
            next_start = max(next_start + interval, time.monotonic())
            self.stop.wait(max(0.0, next_start - time.monotonic()))
        return status


__all__ = ["DbtMetrics", "DbtResult", "DbtRunner", "absolute_lake_root", "exit_status", "summarize_results"]
