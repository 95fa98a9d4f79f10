"""A single-node Apache Kafka broker in KRaft mode on 127.0.0.1, for tests and the demo.

The broker is the real one (org.apache.kafka:kafka_2.13 from Maven Central): storage
is formatted in a fresh directory, the broker starts on free ports, and ``start``
returns once an admin client sees it. Optionally a SASL_PLAINTEXT listener with SCRAM
users is added, for security tests. Logs stay in ``<work_dir>/logs`` and are kept
when something fails.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from lakehouse_common.errors import StackError
from local_stack.paths import component_jars, java_executable
from local_stack.processes import free_port, port_open, stop_process, tail

logger = logging.getLogger(__name__)

SCRAM_MECHANISM = "SCRAM-SHA-512"

_LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


@dataclass
class KafkaBroker:
    """A running broker. ``bootstrap_servers`` is the PLAINTEXT listener."""

    work_dir: Path
    port: int
    controller_port: int
    sasl_port: int | None
    scram_users: dict[str, str]
    heap: str = "1g"
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.sasl_port is None:
            raise StackError("this broker was started without a SASL listener")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "logs" / "server.log"

    def sasl_client_config(self, user: str) -> dict[str, str]:
        """confluent-kafka settings for one of the SCRAM users on the SASL listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap_servers,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": self.scram_users[user],
        }

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers, as in a network partition."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the broker, as a crashed host would; ``restart()`` brings it back on the same storage."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGCONT)  # a paused process dies only once it runs
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def restart(self, timeout: float = 120.0) -> None:
        """Start the broker again on the same ports and storage (after ``kill()`` or ``stop(keep_logs=True)``)."""
        if self.process is not None and self.process.poll() is None:
            raise StackError("the broker is still running")
        self.process = _launch(self.work_dir, self.heap)
        _wait_until_ready(self, timeout)
        logger.info("Kafka broker restarted on %s", self.bootstrap_servers)

    def _signal(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            raise StackError("the broker is not running")
        os.killpg(self.process.pid, signum)

    def stop(self, keep_logs: bool = False, timeout: float = 30.0) -> None:
        """Shut the broker down cleanly; remove its directory unless logs are to be kept."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        exit_code = stop_process(self.process, timeout=timeout)
        if exit_code not in (None, 0, 143):
            keep_logs = True
            logger.warning("broker exited with %s; logs kept in %s", exit_code, self.log_file.parent)
        if keep_logs:
            shutil.rmtree(self.work_dir / "data", ignore_errors=True)
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _server_properties(
    work_dir: Path, port: int, controller_port: int, sasl_port: int | None, overrides: Mapping[str, str] | None = None
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    extra = []
    if sasl_port is not None:
        listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}")
        advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}")
        protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        extra = [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ]
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"listener.security.protocol.map={','.join(protocol_map)}",
        f"log.dirs={work_dir / 'data'}",
        "num.partitions=1",
        # One broker: every internal topic has one replica.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created on purpose, by the services and the tests, never by accident.
        "auto.create.topics.enable=false",
        "log.retention.hours=-1",
        *extra,
        # Later lines win: a test's own broker limits (message.max.bytes of a managed service, ...).
        *(f"{name}={value}" for name, value in (overrides or {}).items()),
    ]
    return "\n".join(lines) + "\n"


def start_kafka(
    work_dir: Path,
    *,
    scram_users: Mapping[str, str] | None = None,
    heap: str = "1g",
    timeout: float = 120.0,
    broker_properties: Mapping[str, str] | None = None,
) -> KafkaBroker:
    """Format storage in ``work_dir`` and start a broker; raise ``StackError`` with the log tail on failure.

    ``broker_properties`` are added to (and override) the generated server.properties.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "logs").mkdir(exist_ok=True)
    port, controller_port = free_port(), free_port()
    sasl_port = free_port() if scram_users else None
    properties = work_dir / "server.properties"
    properties.write_text(_server_properties(work_dir, port, controller_port, sasl_port, broker_properties))
    log4j = work_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2_PROPERTIES.format(log_file=work_dir / "logs" / "server.log"))
    java = _java_command(work_dir)

    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    # "--cluster-id=" form: an id may start with "-" (1 in 64), which argparse would take for an option.
    format_command = [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(properties)]
    for user, password in (scram_users or {}).items():
        format_command += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
    formatted = subprocess.run(format_command, capture_output=True, text=True)
    if formatted.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{formatted.stdout}\n{formatted.stderr}")

    process = _launch(work_dir, heap)
    broker = KafkaBroker(work_dir, port, controller_port, sasl_port, dict(scram_users or {}), heap, process)
    try:
        _wait_until_ready(broker, timeout)
    except BaseException:
        broker.stop(keep_logs=True, timeout=5)
        raise
    logger.info("Kafka broker ready on %s (logs in %s)", broker.bootstrap_servers, broker.log_file.parent)
    return broker


def _java_command(work_dir: Path) -> list[str]:
    classpath = ":".join(str(jar) for jar in component_jars("kafka"))
    return [java_executable(), f"-Dlog4j2.configurationFile={work_dir / 'log4j2.properties'}", "-cp", classpath]


def _launch(work_dir: Path, heap: str) -> subprocess.Popen[bytes]:
    """Start the broker process on formatted storage, in its own process group (for pause and kill)."""
    java = _java_command(work_dir)
    with open(work_dir / "logs" / "stdout.log", "ab") as stdout:
        return subprocess.Popen(
            [java[0], "-Xms256m", f"-Xmx{heap}", "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(work_dir / "server.properties")],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_until_ready(broker: KafkaBroker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    admin: AdminClient | None = None
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if broker.process is not None and broker.process.poll() is not None:
            raise StackError(
                f"Kafka broker exited with {broker.process.returncode} while starting; "
                f"logs in {broker.log_file.parent}:\n{tail(broker.log_file)}\n{tail(broker.log_file.parent / 'stdout.log')}"
            )
        # Wait for the listener before creating a client, which would log every refused connection.
        if admin is None:
            if not port_open(broker.port):
                time.sleep(0.2)
                continue
            admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "socket.timeout.ms": 2000})
        try:
            metadata = admin.list_topics(timeout=2)
            if metadata.brokers:
                return
        except Exception as error:  # the client raises KafkaException until the broker answers
            last_error = error
        time.sleep(0.3)
    raise StackError(
        f"Kafka broker not ready after {timeout:.0f}s ({last_error}); logs in {broker.log_file.parent}:\n"
        f"{tail(broker.log_file)}"
    )


__all__ = ["SCRAM_MECHANISM", "KafkaBroker", "start_kafka"]
