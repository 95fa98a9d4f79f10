"""One lane's services, run as an operator runs them: the console scripts as child processes.

Each start of a service is an *incarnation* with its own JSON log file
(``<lane>/logs/<service>.<n>.log``), so what one run of a service did can be read, and
excerpted, on its own. A kill is SIGKILL to the child's process group: no drain, no
final checkpoint, as a crashed host would leave it.

The environment below is everything the services read (``CDC_*``, ``BRONZE_*``,
``SPARK_JOBS_*``). What chaos needs beyond the defaults, and why, is in docs/chaos.md:
a short producer delivery timeout (so a broker pause outlasts it), a short retry backoff
for cdc-service, and static group membership for bronze-writer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cdc_service.settings import DeliveryMode
from chaos.settings import ChaosSettings
from demo.processes import ManagedProcess, console_script
from local_stack.paths import PROJECT_ROOT

SERVICES = ("cdc-service", "bronze-writer")
WRITER_INSTANCE_ID = "chaos-writer-0"


@dataclass(frozen=True)
class Lane:
    """Where one delivery mode's pipeline keeps everything: its database, topics, lake and logs."""

    mode: DeliveryMode
    work_dir: Path

    @property
    def database(self) -> str:
        return f"chaos_{self.mode.value}"

    @property
    def lake_root(self) -> Path:
        return self.work_dir / "lake"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def topic_prefix(self) -> str:
        return "cdc"

    def topic(self, collection: str) -> str:
        return f"{self.topic_prefix}.{self.database}.{collection}"


def service_environment(settings: ChaosSettings, lane: Lane, bootstrap: str, mongo_uri: str) -> dict[str, str]:
    """The configuration of cdc-service, bronze-writer and spark-jobs for one lane."""
    lake = str(lane.lake_root.resolve())
    spark = lane.work_dir.resolve() / "spark"
    name = f"chaos-{lane.mode.value.replace('_', '-')}"
    environment = {
        "CDC_MONGO_URI": mongo_uri,
        "CDC_NAME": name,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CDC_SCOPE__INCLUDE_DATABASES": json.dumps([lane.database]),
        "CDC_TOPICS__PREFIX": lane.topic_prefix,
        "CDC_TOPICS__CHECKPOINT_TOPIC": f"{name}.checkpoints",
        "CDC_TOPICS__DEAD_LETTER_TOPIC": f"{name}.dead-letters",
        "CDC_PRODUCER__DELIVERY": lane.mode.value,
        # A broker pause must outlast the producer's delivery timeout (issue 10: records
        # queued before the pause time out while later ones are delivered).
        "CDC_PRODUCER__DELIVERY_TIMEOUT_MS": str(settings.delivery_timeout_ms),
        "CDC_RETRY_MAX_BACKOFF_S": str(settings.cdc_retry_max_backoff_s),
        "CDC_HEARTBEAT_INTERVAL_S": "2",
        "CDC_PROGRESS_BAR": "never",
        "CDC_HTTP__HOST": "127.0.0.1",
        "CDC_HTTP__PORT": "0",
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRONZE_LAKE__ROOT": lake,
        "BRONZE_CONSUMER__TOPIC_PATTERN": rf"^{re.escape(lane.topic_prefix)}\.{re.escape(lane.database)}\..+",
        "BRONZE_CONSUMER__GROUP_ID": f"{name}-bronze",
        "BRONZE_CONSUMER__SESSION_TIMEOUT_MS": str(settings.writer_session_timeout_ms),
        "BRONZE_BATCH__MAX_LATENCY_SECONDS": "1",
        "BRONZE_WRITER_ID": WRITER_INSTANCE_ID,
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
        "SPARK_JOBS_LAKE_ROOT": lake,
        "SPARK_JOBS_SPARK__MASTER": "local[2]",
        "SPARK_JOBS_SPARK__DRIVER_MEMORY": settings.spark_driver_memory,
        "SPARK_JOBS_SPARK__SHUFFLE_PARTITIONS": "2",
        "SPARK_JOBS_SPARK__WAREHOUSE_DIR": str(spark / "warehouse"),
        "SPARK_JOBS_SPARK__METASTORE_DIR": str(spark / "metastore"),
        "SPARK_JOBS_DBT__SPARK_CONF_DIR": str(spark / "conf"),
        "SPARK_JOBS_DBT__TARGET_PATH": str(lane.work_dir.resolve() / "dbt" / "target"),
        "SPARK_JOBS_DBT__LOG_PATH": str(lane.work_dir.resolve() / "dbt" / "logs"),
        "SPARK_JOBS_DBT__MONGO_DATABASE": lane.database,
        "SPARK_JOBS_DBT__COMMANDS": json.dumps([silver_build_command(settings.collections)]),
        "SPARK_JOBS_HTTP__HOST": "127.0.0.1",
        "SPARK_JOBS_HTTP__PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.static_membership:
        # A restarted writer rejoins under the same member id and gets its partitions back at
        # once, instead of waiting a session timeout for the dead member to be expired.
        environment["BRONZE_CONSUMER__GROUP_INSTANCE_ID"] = WRITER_INSTANCE_ID
    return environment


def silver_build_command(collections: Iterable[str]) -> str:
    """``dbt build`` of the silver models (current state and history) of the workload's collections.

    ``cautious``: only the tests of these models, not those that also read an unbuilt model
    (a relationships test from the intermediate layer would fail on its missing table).
    """
    models = [f"stg_mongo__{name} stg_mongo__{name}_history" for name in collections]
    return "build --indirect-selection cautious --select " + " ".join(models)


@dataclass
class Incarnation:
    """One start of one service: its process, log file and how it ended."""

    service: str
    number: int
    started_at: float  # time.time() just before the process was spawned
    process: ManagedProcess
    ended: str | None = None  # "killed" (by the harness), "stopped" (SIGTERM) or "exited" (on its own)
    exit_code: int | None = None
    events: dict[str, float] = field(default_factory=dict)  # first time each marker message was logged

    @property
    def log_file(self) -> Path:
        return self.process.log_file

    def first_logged(self, message: str) -> float | None:
        """When this incarnation first logged ``message`` (time.time()), from its JSON log."""
        if message in self.events:
            return self.events[message]
        if not self.log_file.exists():
            return None
        with self.log_file.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("message") == message and "ts" in record:
                    logged = datetime.fromisoformat(record["ts"]).timestamp()
                    self.events[message] = logged
                    return logged
        return None


class Services:
    """cdc-service and bronze-writer of one lane; ``kill`` then ``start`` is one crash and restart."""

    def __init__(self, lane: Lane, environment: dict[str, str]) -> None:
        self.lane = lane
        self.environment = {**os.environ, **environment}
        self.incarnations: list[Incarnation] = []
        self._current: dict[str, Incarnation] = {}

    def start(self, service: str) -> Incarnation:
        if service in self._current and self._current[service].ended is None:
            raise RuntimeError(f"{service} of {self.lane.mode.value} is still running")
        number = sum(1 for incarnation in self.incarnations if incarnation.service == service) + 1
        log_file = self.lane.logs_dir / f"{service}.{number:03d}.log"
        started_at = time.time()
        process = ManagedProcess(
            f"{service}#{number}", [console_script(service), "run"], self.environment, log_file, PROJECT_ROOT
        )
        incarnation = Incarnation(service, number, started_at, process)
        self.incarnations.append(incarnation)
        self._current[service] = incarnation
        return incarnation

    def current(self, service: str) -> Incarnation:
        return self._current[service]

    def kill(self, service: str) -> None:
        """SIGKILL the service's process group and wait for it to be gone."""
        incarnation = self._current[service]
        if incarnation.ended is not None:
            return
        incarnation.process.signal(signal.SIGKILL)
        incarnation.process.process.wait(30)
        incarnation.exit_code = incarnation.process.stop()
        incarnation.ended = "killed"

    def exited(self) -> list[Incarnation]:
        """Incarnations that ended on their own since the last call (a crash the harness did not cause)."""
        gone = []
        for incarnation in self._current.values():
            if incarnation.ended is None and incarnation.process.poll() is not None:
                incarnation.exit_code = incarnation.process.stop()
                incarnation.ended = "exited"
                gone.append(incarnation)
        return gone

    def stop(self, service: str, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain, checkpoint, close); SIGKILL after ``timeout``. Returns the exit code."""
        incarnation = self._current.get(service)
        if incarnation is None or incarnation.ended is not None:
            return None if incarnation is None else incarnation.exit_code
        incarnation.exit_code = incarnation.process.stop(timeout)
        incarnation.ended = "stopped"
        return incarnation.exit_code

    def kill_all(self) -> None:
        for service in list(self._current):
            self.kill(service)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "service": incarnation.service,
                "number": incarnation.number,
                "ended": incarnation.ended,
                "exit_code": incarnation.exit_code,
                "log": str(incarnation.log_file),
            }
            for incarnation in self.incarnations
        ]


__all__ = ["SERVICES", "WRITER_INSTANCE_ID", "Incarnation", "Lane", "Services", "service_environment", "silver_build_command"]
