"""``DemoRun``: the whole pipeline on one machine, started and stopped like an operator would.

Phases (each timed, each shown as it runs):

1. the local stack: a real Kafka broker (KRaft) and the MongoDB stand-in, unless
   ``MONGO_URI`` names a real replica set; with ``lake=s3`` also the object store
   (SeaweedFS), whose bucket then holds the whole lake;
2. the generator's dataset loaded into MongoDB (``lakehouse-generator load``);
3. ``cdc-service run`` and ``bronze-writer run`` as child processes configured through
   environment variables (also written to ``demo.env`` for the runbook's commands), JSON logs
   in ``logs/``; the snapshot lands in bronze;
4. ``lakehouse-generator run`` keeps changing the data for ``duration_seconds``;
5. the generator stops; the demo waits until bronze holds everything (see ``demo.observe``),
   measures the end-to-end lag, and stops the two services;
6. ``spark-jobs dbt`` builds silver and gold, its output streamed into ``logs/dbt.log``;
7. the verification, the demo's verdict: MongoDB against silver document by document, by
   the hash of each document's canonical form (``spark_jobs.verify``, what ``spark-jobs
   verify`` runs; called in-process, like the demo's other readers of the lake);
8. the summary: rows per layer per collection, the verification, lag, gold KPIs; ``summary.json``;
9. the report (``demo.report``): ``report.html`` with plots of the run, and its screenshot
   ``report.png`` (headless Chromium).

Everything started is stopped in ``finally``, also after Ctrl-C or an error. With
``keep_running`` the pipeline stays live instead (generator, services, dbt every N minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pymongo
from confluent_kafka import KafkaException
from deltalake.exceptions import DeltaError
from rich.console import Console

from cdc_service.planning import server_hello
from data_generator.config import COLLECTIONS
from data_generator.mongo import MongoWriter
from demo.browser import BrowserError, find_chromium, screenshot
from demo.observe import (
    LandingState,
    bronze_documents,
    bronze_rows,
    end_to_end_lag,
    lake_counts,
    landing_state,
    silver_documents,
)
from demo.processes import ManagedProcess, console_script
from demo.settings import DemoSettings
from demo.summary import gold_kpis, render, verification_problems, write_summary
from demo.timeseries import MetricsSampler
from lakehouse_common.errors import LakehouseError
from lakehouse_common.lifecycle import ExitCode, stop_on_signals
from lakehouse_common.redaction import redact
from local_stack.kafka import KafkaBroker, start_kafka
from local_stack.mongo import MongoStandIn, start_mongo_standin
from local_stack.object_store import ObjectStore, start_object_store
from local_stack.paths import PROJECT_ROOT
from local_stack.processes import free_port, pid_alive
from spark_jobs.verify import verify_silver

STANDIN = "stand-in"
REAL_REPLICA_SET = "real replica set"


class DemoError(LakehouseError):
    """The demo cannot go on; the message says why and where the logs are."""


class DemoConfigurationError(DemoError):
    """A setting the demo cannot run with (a MONGO_URI that is not a replica set)."""


class DemoInterrupted(Exception):
    """Ctrl-C or SIGTERM: stop everything and exit."""


class DemoRun:
    """One demo run. ``run()`` returns the exit status; the phase methods are public for tests."""

    def __init__(self, settings: DemoSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.processes: dict[str, ManagedProcess] = {}
        self.broker: KafkaBroker | None = None
        self.standin: MongoStandIn | None = None
        self.kafka_bootstrap = ""
        self.mongo_uri = ""
        self.mongo_kind = STANDIN
        self.ports: dict[str, int] = {}
        self.sampler: MetricsSampler | None = None
        self.object_store: ObjectStore | None = None
        self.lake_root = str(settings.lake_root.resolve())
        self.storage_options: dict[str, str] = {}

    # ------------------------------------------------------------------ output

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/] {message}", highlight=False)

    def _phase(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    # ------------------------------------------------------------------ entry point

    def run(self) -> ExitCode:
        """The demo's exit code: OK when silver holds exactly MongoDB's documents (the
        verification), DIFFERENCES_FOUND when it does not, FAILED on an error (dbt's included), INTERRUPTED after Ctrl-C or SIGTERM (a second
        one kills what the demo started and exits at once)."""
        try:
            with stop_on_signals(self.stop_event, on_second=self._kill_everything_now):
                try:
                    if self.settings.keep_running:
                        return self._run_live()
                    return self._run_once()
                finally:
                    self.shutdown()
        except DemoInterrupted:
            self.say("[yellow]interrupted: stopped everything the demo started[/]")
            return ExitCode.INTERRUPTED
        except (DemoError, LakehouseError) as error:
            self.say(f"[red]demo failed:[/] {redact(str(error))}")
            return ExitCode.BAD_CONFIGURATION if isinstance(error, DemoConfigurationError) else ExitCode.FAILED
        except Exception as error:  # a bug or an unexpected failure: say so, show where, stop everything
            self.say(f"[red]demo failed unexpectedly:[/] {type(error).__name__}: {redact(str(error))}")
            self.console.print_exception(max_frames=4)
            return ExitCode.FAILED

    def _kill_everything_now(self) -> None:
        """A second Ctrl-C: kill every process the demo started, then exit at once."""
        for process in self.processes.values():
            process.signal(signal.SIGKILL)
        for component in (self.standin, self.broker):
            child = getattr(component, "process", None) if component is not None else None
            if child is not None and child.poll() is None:
                child.kill()
        os._exit(ExitCode.INTERRUPTED)

    def _run_once(self) -> ExitCode:
        s = self.settings
        self.prepare()
        self.start_stack()
        self.load_dataset()
        self.start_services()
        self.start_sampler()
        self.wait_for_snapshot()
        started = time.monotonic()
        generator = self.start_generator(duration=s.duration_seconds)
        self.watch_live(generator, s.duration_seconds)
        self._phase("changes", started)
        mongo = self.mongo_counts()
        self.say(f"generator stopped; MongoDB holds {sum(mongo.values()):,} documents")
        self.wait_until_caught_up(mongo)
        lag = end_to_end_lag(self.lake_root, s.database, COLLECTIONS, self.storage_options)
        bronze = bronze_rows(self.lake_root, s.database, COLLECTIONS, self.storage_options)
        self.stop_sampler()
        self.stop_services()
        dbt_status = self.run_dbt()
        verification = self.verify()
        counts = lake_counts(self.lake_root, self.storage_options)
        summary: dict[str, Any] = {
            "mongo_kind": self.mongo_kind,
            "mongo": mongo,
            "bronze": bronze,
            "silver": {collection: counts["silver"].get(collection, 0) for collection in COLLECTIONS},
            "gold": counts["gold"],
            "lag_seconds": lag.last_write_seconds,
            "lag": lag.as_dict(),
            "silver_history": counts["silver_history"],
            "verified": all(result["ok"] for result in verification.values()),
            "verification": verification,
            "kpis": gold_kpis(self.lake_root, self.storage_options) if dbt_status == 0 else {},
            "dbt_exit_code": dbt_status,
            "settings": {
                "scale": s.scale,
                "seed": s.seed,
                "rate": s.rate,
                "duration_seconds": s.duration_seconds,
                "lake": self.lake_root,
            },
            "timings_seconds": {**self.timings, "total": round(time.monotonic() - self.started, 1)},
        }
        problems = verification_problems(verification)
        if dbt_status != 0:
            problems.append(f"dbt exited {dbt_status}: see {s.logs_dir / 'dbt.log'}")
        summary["ok"] = not problems
        summary["problems"] = problems
        write_summary(s.summary_file, summary)
        render(self.console, summary)
        self.say(f"summary written to {s.summary_file}")
        self.write_report(summary)
        if problems:
            for problem in problems:
                self.say(f"[red]{problem}[/]")
            if dbt_status != 0:
                self.say("[red]dbt failed: the demo failed[/]")
                return ExitCode.FAILED
            self.say("[red]silver does not match MongoDB: the demo failed[/]")
            return ExitCode.DIFFERENCES_FOUND
        self.say(
            f"[green]verified: silver holds exactly MongoDB's documents in all {len(mongo)} collections[/] ({self.mongo_kind})"
        )
        return ExitCode.OK

    def _run_live(self) -> ExitCode:
        self.prepare()
        self.start_stack()
        self.load_dataset()
        self.start_services()
        self.wait_for_snapshot()
        generator = self.start_generator(duration=None)
        dbt = self.start_dbt_loop()
        self.print_endpoints()
        announced: set[str] = set()
        last_status = 0.0
        while not self.stop_event.wait(1.0):
            for name, process in (("generator", generator), ("dbt", dbt), *self._services()):
                code = process.poll()
                if code is not None and name not in announced:
                    announced.add(name)
                    colour = "yellow" if code == 0 else "red"
                    self.say(f"[{colour}]{name} exited with {code}[/] (log {process.log_file}); the rest keeps running")
            if time.monotonic() - last_status >= 15:
                last_status = time.monotonic()
                self._live_status()
        raise DemoInterrupted

    # ------------------------------------------------------------------ phases

    def prepare(self) -> None:
        """A fresh work directory: the demo's lake, logs and Spark metastore start empty."""
        work = self.settings.work_dir
        running = {
            pid_file.stem: int(pid_file.read_text())
            for pid_file in work.glob("*.pid")
            if pid_file.read_text().strip().isdigit() and pid_alive(int(pid_file.read_text()))
        }
        if running:
            listed = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(running.items()))
            raise DemoError(
                f"processes of an earlier demo still run from {work}: {listed}. Stop that demo (Ctrl-C), "
                f"or, if it was killed, end them: kill -TERM -- {' '.join(f'-{pid}' for pid in running.values())}"
            )
        if work.exists():
            shutil.rmtree(work)
        self.settings.logs_dir.mkdir(parents=True)
        self.say(f"work directory {work} (logs in {self.settings.logs_dir})")

    def start_stack(self) -> None:
        started = time.monotonic()
        s = self.settings
        if s.kafka_bootstrap_servers:
            self.kafka_bootstrap = s.kafka_bootstrap_servers
            self.say(f"Kafka: using the broker at {self.kafka_bootstrap}")
        else:
            self.say("starting Kafka (Apache Kafka 4, KRaft, single node)...")
            self.broker = start_kafka(s.work_dir / "stack" / "kafka")
            self.kafka_bootstrap = self.broker.bootstrap_servers
            self._record_pid("kafka", self.broker.process)
            self.say(f"Kafka ready at {self.kafka_bootstrap}")
        self._check_stop()
        if s.lake == "s3":
            self.say("starting the object store (SeaweedFS, S3-compatible) for the lake...")
            self.object_store = start_object_store(s.work_dir / "stack" / "object-store")
            self.lake_root = self.object_store.lake_root("demo")
            self.storage_options = self.object_store.storage_options()
            self._record_pid("object-store", self.object_store.process)
            self.say(f"object store ready at {self.object_store.endpoint_url}; the lake is {self.lake_root}")
        self._check_stop()
        if s.mongo_uri is not None:
            self.mongo_uri = s.mongo_uri.get_secret_value()
            self.mongo_kind = self._check_replica_set(self.mongo_uri)
            self.say(f"MongoDB: the real replica set at {redact(self.mongo_uri)} (from MONGO_URI)")
        elif s.standin_uri:
            self.mongo_uri = s.standin_uri
            self.say(f"MongoDB: the MongoDB stand-in at {self.mongo_uri} (mongo-java-server, not a real MongoDB)")
        else:
            self.say("starting the MongoDB stand-in (mongo-java-server in memory; not a real MongoDB)...")
            self.standin = start_mongo_standin(s.work_dir / "stack" / "mongo-standin")
            self.mongo_uri = self.standin.uri
            self._record_pid("mongo-standin", self.standin.process)
            self.say(f"MongoDB stand-in ready at {self.mongo_uri}")
        self._phase("stack", started)

    def _check_replica_set(self, uri: str) -> str:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=15000)
        try:
            hello = server_hello(client)
        except pymongo.errors.PyMongoError as error:
            raise DemoError(f"MONGO_URI {redact(uri)} does not answer: {error}") from None
        finally:
            client.close()
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise DemoConfigurationError(f"MONGO_URI {redact(uri)} is not a replica set: change streams need one")
        return REAL_REPLICA_SET

    def environment(self) -> dict[str, str]:
        """The services' configuration, as an operator would export it."""
        s = self.settings
        if not self.ports:
            self.ports = {"cdc-service": free_port(), "bronze-writer": free_port(), "spark-jobs": free_port()}
        lake = self.lake_root
        options = json.dumps(self.storage_options)
        spark = s.work_dir.resolve() / "spark"
        return {
            "MONGO_URI": self.mongo_uri,
            "CDC_MONGO_URI": self.mongo_uri,
            "CDC_NAME": "demo",
            "CDC_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "CDC_SCOPE__INCLUDE_DATABASES": json.dumps([s.database]),
            "CDC_HTTP__HOST": "127.0.0.1",
            "CDC_HTTP__PORT": str(self.ports["cdc-service"]),
            "CDC_PROGRESS_BAR": "never",
            "CDC_HEARTBEAT_INTERVAL_SECONDS": "5",
            "BRONZE_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "BRONZE_LAKE__ROOT": lake,
            "BRONZE_LAKE__STORAGE_OPTIONS": options,
            # Only this database's topics: a shared broker may carry other pipelines' topics.
            "BRONZE_CONSUMER__TOPIC_PATTERN": rf"^cdc\.{re.escape(s.database)}\..+",
            "BRONZE_CONSUMER__GROUP_ID": f"bronze-writer-{s.database}",
            "BRONZE_HTTP__HOST": "127.0.0.1",
            "BRONZE_HTTP__PORT": str(self.ports["bronze-writer"]),
            "BRONZE_BATCH__MAX_LATENCY_SECONDS": "1",
            "BRONZE_WRITER_ID": "demo-bronze-1",
            # New topics (cdc-service creates one per collection) are found in 2 s, not 10.
            "BRONZE_KAFKA__CLIENT_CONFIG": json.dumps({"topic.metadata.refresh.interval.ms": "2000"}),
            "SPARK_JOBS_LAKE_ROOT": lake,
            "SPARK_JOBS_STORAGE_OPTIONS": options,
            "SPARK_JOBS_SPARK__MASTER": "local[2]",
            "SPARK_JOBS_SPARK__DRIVER_MEMORY": s.spark_driver_memory,
            "SPARK_JOBS_SPARK__SHUFFLE_PARTITIONS": "2",
            "SPARK_JOBS_SPARK__DRIVER_JAVA_OPTIONS": s.spark_driver_java_options,
            "SPARK_JOBS_SPARK__WAREHOUSE_DIR": str(spark / "warehouse"),
            "SPARK_JOBS_SPARK__METASTORE_DIR": str(spark / "metastore"),
            "SPARK_JOBS_DBT__SPARK_CONF_DIR": str(spark / "conf"),
            "SPARK_JOBS_DBT__TARGET_PATH": str(s.work_dir.resolve() / "dbt" / "target"),
            "SPARK_JOBS_DBT__LOG_PATH": str(s.work_dir.resolve() / "dbt" / "logs"),
            "SPARK_JOBS_DBT__MONGO_DATABASE": s.database,
            "SPARK_JOBS_DBT__COMMANDS": json.dumps(s.dbt_commands),
            "SPARK_JOBS_VERIFY__MONGO_URI": self.mongo_uri,
            "SPARK_JOBS_HTTP__HOST": "127.0.0.1",
            "SPARK_JOBS_HTTP__PORT": str(self.ports["spark-jobs"]),
        }

    def write_env_file(self) -> Path:
        """``demo.env``: the configuration above, for the runbook's commands (owner-only: it may hold a password)."""
        path = self.settings.env_file
        lines = ["# The demo's configuration: set -a; . build/demo/demo.env; set +a"]
        lines += [f"{key}='{value}'" for key, value in self.environment().items()]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def _child_env(self) -> dict[str, str]:
        return {**os.environ, **self.environment(), "PYTHONUNBUFFERED": "1"}

    def _start(self, name: str, *argv: str) -> ManagedProcess:
        if name in self.processes:  # a finished run of the same command (the generator, again)
            self.processes.pop(name).stop()
        process = ManagedProcess(
            name, [console_script(argv[0]), *argv[1:]], self._child_env(), self.settings.logs_dir / f"{name}.log", PROJECT_ROOT
        )
        self.processes[name] = process
        self._record_pid(name, process.process)
        return process

    def _record_pid(self, name: str, process: Any) -> None:
        """``<name>.pid`` in the work directory: for the runbook, and to find orphans after a SIGKILL."""
        if process is not None:
            (self.settings.work_dir / f"{name}.pid").write_text(f"{process.pid}\n")

    def _generator_args(self) -> list[str]:
        s = self.settings
        return ["--database", s.database, "--scale", str(s.scale), "--seed", str(s.seed)]

    def load_dataset(self) -> None:
        started = time.monotonic()
        self.write_env_file()
        self.say(f"loading the generator's dataset (scale {self.settings.scale}) into {self.settings.database}...")
        loader = self._start("generator-load", "lakehouse-generator", "load", "--drop", *self._generator_args())
        last = 0.0
        while loader.poll() is None:
            self._check_stop()
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                self.say(f"  loading: {sum(self.mongo_counts().values()):,} documents so far")
            time.sleep(0.5)
        if loader.poll() != 0:
            raise DemoError(f"lakehouse-generator load exited {loader.poll()}:\n{loader.tail()}")
        counts = self.mongo_counts()
        self.say(f"loaded {sum(counts.values()):,} documents: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        self._phase("load", started)

    def start_services(self) -> None:
        self._start("cdc-service", "cdc-service", "run")
        self._start("bronze-writer", "bronze-writer", "run")
        self.say(
            f"started cdc-service (metrics :{self.ports['cdc-service']}) and bronze-writer "
            f"(metrics :{self.ports['bronze-writer']}); JSON logs in {self.settings.logs_dir}"
        )

    def _services(self) -> list[tuple[str, ManagedProcess]]:
        return [(name, self.processes[name]) for name in ("cdc-service", "bronze-writer") if name in self.processes]

    def _check_services(self) -> None:
        for name, process in self._services():
            code = process.poll()
            if code is not None:
                raise DemoError(f"{name} exited with {code}; last lines of {process.log_file}:\n{process.tail()}")

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise DemoInterrupted

    def wait_for_snapshot(self) -> None:
        """Until bronze holds every document MongoDB held before the changes start."""
        started = time.monotonic()
        self.say("cdc-service snapshots MongoDB; bronze-writer lands it...")
        mongo = self.mongo_counts()
        self._wait_for_bronze(mongo, "snapshot")
        self._phase("snapshot_to_bronze", started)
        self.say(f"snapshot landed in bronze in {self.timings['snapshot_to_bronze']:.1f}s")

    def start_generator(self, duration: float | None) -> ManagedProcess:
        s = self.settings
        argv = ["lakehouse-generator", "run", *self._generator_args(), "--rate", str(s.rate)]
        if duration is not None:
            argv += ["--duration", str(duration)]
        self.say(
            f"the generator changes data at {s.rate:g} changes/s"
            + (f" for {duration:g}s" if duration is not None else " until Ctrl-C")
            + " (inserts, updates, replaces, deletes, schema drift)"
        )
        return self._start("generator", *argv)

    def watch_live(self, generator: ManagedProcess, duration: float) -> None:
        """While the generator runs: what bronze has landed and what is still in Kafka."""
        started = time.monotonic()
        last = 0.0
        while generator.poll() is None:
            self._check_stop()
            self._check_services()
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                elapsed = time.monotonic() - started
                self._live_status(prefix=f"  {min(elapsed, duration):4.0f}/{duration:g}s:")
            if time.monotonic() - started > duration + 120:
                raise DemoError(f"the generator did not stop after {duration:g}s; log {generator.log_file}")
            time.sleep(0.5)
        if generator.poll() != 0:
            raise DemoError(f"lakehouse-generator run exited {generator.poll()}:\n{generator.tail()}")

    def _live_status(self, prefix: str = "  live:") -> None:
        s = self.settings
        try:
            landing = landing_state(self._kafka_config(), self.lake_root, s.database, COLLECTIONS, self.storage_options)
            rows = sum(bronze_rows(self.lake_root, s.database, COLLECTIONS, self.storage_options).values())
            silver = ""
            if s.keep_running:
                current = silver_documents(self.lake_root, self.storage_options)
                silver = f", silver {sum(current.values()):,} documents (last dbt build)" if current else ""
        except Exception as error:  # a status line must never stop the demo
            self.say(f"{prefix} (status unavailable: {str(error).splitlines()[0]})")
            return
        self.say(
            f"{prefix} MongoDB {sum(self.mongo_counts().values()):,} documents, bronze {rows:,} events, "
            f"{landing.unlanded:,} records in Kafka not yet in bronze{silver}"
        )

    def wait_until_caught_up(self, mongo: dict[str, int]) -> None:
        started = time.monotonic()
        self.say("waiting until bronze has caught up with MongoDB...")
        self._wait_for_bronze(mongo, "caught up")
        self._phase("catch_up", started)
        self.say(f"bronze caught up {self.timings['catch_up']:.1f}s after the generator stopped")

    def _wait_for_bronze(self, mongo: dict[str, int], what: str) -> None:
        s = self.settings
        deadline = time.monotonic() + s.catch_up_timeout_seconds
        confirmations = 0
        last_report = time.monotonic()
        documents: dict[str, int] = {}
        unlanded = -1
        while True:
            self._check_stop()
            self._check_services()
            try:
                landing = landing_state(self._kafka_config(), self.lake_root, s.database, COLLECTIONS, self.storage_options)
                documents = bronze_documents(self.lake_root, s.database, COLLECTIONS, self.storage_options)
            except (KafkaException, DeltaError) as error:  # topics and tables being created: ask again
                landing, last_error = LandingState(unknown=["?"]), str(error).splitlines()[0]
            else:
                last_error = ""
            unlanded = landing.unlanded
            if landing.complete and landing.end_offsets and documents == mongo:
                confirmations += 1
                if confirmations >= 2:  # the same answer twice: nothing was in flight
                    return
            else:
                confirmations = 0
            if time.monotonic() > deadline:
                missing = {c: (mongo[c], documents.get(c)) for c in mongo if documents.get(c) != mongo[c]}
                raise DemoError(
                    f"bronze not {what} after {s.catch_up_timeout_seconds:.0f}s: {unlanded} records unlanded, "
                    f"documents (MongoDB, bronze) differ for {missing}"
                    + (f", last error: {last_error}" if last_error else "")
                    + f"; logs in {s.logs_dir}"
                )
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                self.say(
                    f"  bronze holds {sum(documents.values()):,}/{sum(mongo.values()):,} documents, {unlanded:,} records unlanded"
                )
            time.sleep(1.0)

    def start_sampler(self) -> None:
        """Scrape the services' /metrics every 2 s for the report (``demo.timeseries``)."""
        self.sampler = MetricsSampler(
            {name: f"http://127.0.0.1:{self.ports[name]}/metrics" for name in ("cdc-service", "bronze-writer")}
        ).start()

    def stop_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def write_report(self, summary: dict[str, Any]) -> None:
        """``series.json``, ``report.html`` and, where Chromium is, ``report.png``.

        The report shows the run; it never changes the verdict, so a failure here is said and
        the demo's exit status stays the summary's.
        """
        from demo.report import report_inputs, write_report, write_series  # plotly: only needed here, at the end

        s = self.settings
        try:
            series = report_inputs(s.lake_root, s.database, COLLECTIONS, self.sampler, summary["dbt_exit_code"] == 0)
            write_series(s.work_dir, series)
            report = write_report(s.work_dir, summary, series)
        except (OSError, ValueError, DeltaError) as error:
            self.say(f"[red]the report could not be written:[/] {redact(str(error))}")
            return
        if find_chromium() is None:
            self.say(f"report written to {report} (no Chromium for its screenshot: `make setup` installs it)")
            return
        try:
            image = screenshot(report, s.work_dir / "report.png")
        except BrowserError as error:
            self.say(f"report written to {report}; [yellow]its screenshot failed:[/] {error}")
            return
        self.say(f"report written to {report} (screenshot {image})")

    def stop_services(self) -> None:
        """Stop cdc-service and bronze-writer cleanly (SIGTERM: drain, checkpoint, close)."""
        for name, process in reversed(self._services()):
            code = process.stop(timeout=60)
            self.say(f"stopped {name} (exit {code})")
            if code not in (0, None):
                raise DemoError(f"{name} did not stop cleanly (exit {code}); log {process.log_file}")

    def run_dbt(self) -> int:
        """``spark-jobs dbt``: dbt build on Spark + Delta; its console streamed into logs/dbt.log."""
        started = time.monotonic()
        commands = ", ".join(self.settings.dbt_commands)
        self.say(
            f"running the dbt runner (spark-jobs dbt: {commands}) on Spark with Delta; log {self.settings.logs_dir / 'dbt.log'}"
        )
        process = self._start("dbt", "spark-jobs", "dbt")
        follower = _DbtLogFollower(process.log_file)
        last = 0.0
        while process.poll() is None:
            self._check_stop()
            follower.read()
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                self.say(f"  dbt: {follower.done} nodes done{follower.latest_text()}")
            time.sleep(0.5)
        follower.read()
        code = process.stop()
        self._phase("dbt", started)
        self.say(
            f"dbt finished with exit {code} in {self.timings['dbt']:.0f}s: {follower.done} nodes, {follower.problems} problems"
        )
        return code or 0

    def verify(self) -> dict[str, dict[str, Any]]:
        """MongoDB against silver, document by document (``spark_jobs.verify``): per collection, the verdict."""
        started = time.monotonic()
        self.say("verifying silver against MongoDB, document by document (document hashes)...")
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=15000)
        try:
            diffs = verify_silver(client[self.settings.database], COLLECTIONS, self.lake_root, self.storage_options)
        except (pymongo.errors.PyMongoError, DeltaError, OSError) as error:
            raise DemoError(f"the verification could not read both sides: {error}") from None
        finally:
            client.close()
        self._phase("verify", started)
        different = [collection for collection, diff in diffs.items() if not diff.ok]
        self.say(
            f"verification took {self.timings['verify']:.1f}s: "
            + (f"[red]{len(different)} collections differ[/] ({', '.join(different)})" if different else "every document equal")
        )
        return {collection: diff.as_dict() for collection, diff in diffs.items()}

    def start_dbt_loop(self) -> ManagedProcess:
        minutes = self.settings.dbt_interval_minutes
        self.say(f"the dbt runner rebuilds silver and gold every {minutes:g} minutes (spark-jobs dbt --every {minutes:g})")
        return self._start("dbt", "spark-jobs", "dbt", "--every", str(minutes))

    def print_endpoints(self) -> None:
        s = self.settings
        kind = "the MongoDB stand-in, not a real MongoDB" if self.mongo_kind == STANDIN else self.mongo_kind
        self.console.rule("the pipeline is live: Ctrl-C stops everything")
        rows = [
            ("Kafka bootstrap", self.kafka_bootstrap),
            ("MongoDB", f"{redact(self.mongo_uri)} ({kind}), database {s.database}"),
            ("cdc-service", f"http://127.0.0.1:{self.ports['cdc-service']}/metrics  /healthz  /readyz"),
            ("bronze-writer", f"http://127.0.0.1:{self.ports['bronze-writer']}/metrics  /healthz  /readyz"),
            ("dbt runner", f"http://127.0.0.1:{self.ports['spark-jobs']}/metrics  /healthz  /readyz"),
            ("lake", self.lake_root),
            ("logs", str(s.logs_dir.resolve())),
            ("configuration", f"{s.env_file} (set -a; . {s.env_file}; set +a)"),
        ]
        for label, value in rows:
            self.console.print(f"  {label:16} {value}", highlight=False)
        self.console.print("  the runbook (docs/runbook.md) works against this stack", highlight=False)

    def shutdown(self) -> None:
        """Stop every child (newest first), then the stand-in and the broker the demo started."""
        self.stop_sampler()
        for name, process in reversed(list(self.processes.items())):
            if process.running():
                code = process.stop(timeout=90 if name == "dbt" else 60)
                self.say(f"stopped {name} (exit {code})")
            else:
                process.stop()
        self.processes.clear()
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
            self.say("stopped the MongoDB stand-in")
        if self.broker is not None:
            self.broker.stop(keep_logs=True)
            self.broker = None
            self.say("stopped Kafka")
        if self.object_store is not None:
            self.object_store.stop(keep_logs=True)
            self.object_store = None
            self.say("stopped the object store")

    # ------------------------------------------------------------------ helpers

    def _kafka_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.kafka_bootstrap}

    def mongo_counts(self) -> dict[str, int]:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=15000)
        try:
            return MongoWriter(client[self.settings.database]).counts()
        finally:
            client.close()


class _DbtLogFollower:
    """Reads the runner's JSON log as it grows: nodes finished, problems, the latest node."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.done = 0
        self.problems = 0
        self.latest = ""

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        for line in chunk[:complete].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            status = record.get("dbt_node_status")
            if record.get("dbt_event") in ("LogModelResult", "LogTestResult", "LogSnapshotResult", "LogSeedResult"):
                self.done += 1
                parts = str(record.get("dbt_node") or "").split(".")  # resource.project.name[.hash]
                self.latest = parts[2] if len(parts) > 2 else parts[-1]
            if status in ("error", "fail", "runtime error") or record.get("level") == "ERROR":
                self.problems += 1

    def latest_text(self) -> str:
        latest = self.latest if len(self.latest) <= 60 else self.latest[:57] + "..."
        return f", latest {latest}" if latest else ""


__all__ = ["REAL_REPLICA_SET", "STANDIN", "DemoConfigurationError", "DemoError", "DemoInterrupted", "DemoRun"]
