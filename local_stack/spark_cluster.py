"""A standalone Spark cluster and the Spark Thrift Server on 127.0.0.1, for dbt's ``cluster`` target.

All three are pyspark's own classes, started from the jars pyspark ships (no download):

- the master, ``org.apache.spark.deploy.master.Master``;
- one worker, ``org.apache.spark.deploy.worker.Worker``, which launches the executors;
- the Thrift Server, ``org.apache.spark.sql.hive.thriftserver.HiveThriftServer2``
  (``spark-hive-thriftserver`` is among pyspark 4.2's jars), a Spark application on that
  master that dbt-spark's ``thrift`` method connects to.

The Thrift Server's properties come from ``spark_jobs.session.spark_conf``, the same as
every other session in the project: Delta, its warehouse and Derby metastore, the
object-store lake's S3A settings, and the session settings every connection must get
(``spark.databricks.delta.merge.materializeSource``): a new Thrift session starts from the
application's configuration, so they reach each connection, not only the one running
dbt's ``on-run-start`` hook. The properties file is owner-only (it may hold the store's
keys). Logs stay in ``<work_dir>/logs`` and are kept when something fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lakehouse_common.errors import StackError
from local_stack.paths import java_executable
from local_stack.processes import free_port, port_open, stop_process, tail
from spark_jobs.session import SparkSettings, spark_conf

logger = logging.getLogger(__name__)

THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"

_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
logger.thrift.name = org.apache.spark.sql.hive.thriftserver
logger.thrift.level = info
logger.master.name = org.apache.spark.deploy
logger.master.level = info
logger.hive.name = org.apache.hadoop.hive
logger.hive.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""


def spark_home() -> Path:
    """pyspark's installation: its ``jars`` and ``bin`` are a Spark distribution's."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class SparkCluster:
    """A running master, worker and Thrift Server."""

    work_dir: Path
    master_port: int
    master_ui_port: int
    thrift_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def thrift_host(self) -> str:
        return "127.0.0.1"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def dbt_environment(self) -> dict[str, str]:
        """What dbt's ``cluster`` target reads (dbt/profiles.yml)."""
        return {"SPARK_THRIFT_HOST": self.thrift_host, "SPARK_THRIFT_PORT": str(self.thrift_port)}

    def stop(self, keep_logs: bool = False, timeout: float = 30.0) -> None:
        """The Thrift Server first (it is the master's application), then the worker and the master."""
        for name in ("thrift-server", "worker", "master"):
            process = self.processes.get(name)
            exit_code = stop_process(process, timeout=timeout)
            if exit_code not in (None, 0, 143, -15, 130):
                keep_logs = True
                logger.warning("Spark %s exited with %s; logs kept in %s", name, exit_code, self.logs_dir)
        if not keep_logs:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _environment(work_dir: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK_", "SPARK_"))}
    environment.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(work_dir / "conf"),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(work_dir / "logs"),
            # pyspark's layout is no release directory: without it, the worker's launcher looks
            # for a source build to tell the Scala version of the executors' class path.
            "SPARK_SCALA_VERSION": "2.13",
        }
    )
    java = Path(java_executable()).resolve()
    environment["JAVA_HOME"] = str(java.parent.parent)
    return environment


def _daemon(work_dir: Path, name: str, main_class: str, *arguments: str, heap: str = "256m") -> subprocess.Popen[bytes]:
    """A master or worker JVM on pyspark's jars, logging to ``logs/<name>.log``."""
    log4j = work_dir / "conf" / f"log4j2-{name}.properties"
    log4j.write_text(_LOG4J2.format(log_file=work_dir / "logs" / f"{name}.log"))
    command = [
        java_executable(), f"-Xmx{heap}", f"-Dlog4j2.configurationFile={log4j}",
        "-cp", f"{work_dir / 'conf'}:{spark_home() / 'jars'}/*", main_class, *arguments,
    ]  # fmt: skip
    with open(work_dir / "logs" / f"{name}.out", "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_environment(work_dir), start_new_session=True)


def start_spark_cluster(
    work_dir: Path,
    spark: SparkSettings,
    storage_options: Mapping[str, str] | None = None,
    *,
    worker_cores: int = 2,
    worker_memory: str = "2g",
    executor_memory: str = "1g",
    timeout: float = 300.0,
) -> SparkCluster:
    """Start the master, a worker and the Thrift Server; returns once the Thrift Server answers a query.

    ``spark`` gives the Thrift Server's configuration (its master is replaced by this
    cluster's); ``storage_options`` an object-store lake's, as everywhere else.
    """
    for directory in ("conf", "logs", "worker"):
        (work_dir / directory).mkdir(parents=True, exist_ok=True)
    cluster = SparkCluster(work_dir, free_port(), free_port(), free_port())
    try:
        cluster.processes["master"] = _daemon(
            work_dir, "master", "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(cluster.master_port), "--webui-port", str(cluster.master_ui_port),
        )  # fmt: skip
        _wait_for(lambda: port_open(cluster.master_port), cluster, "master", timeout)
        cluster.processes["worker"] = _daemon(
            work_dir, "worker", "org.apache.spark.deploy.worker.Worker",
            "--host", "127.0.0.1", "--webui-port", str(free_port()), "--cores", str(worker_cores),
            "--memory", worker_memory, "--work-dir", str(work_dir / "worker"), cluster.master_url,
        )  # fmt: skip
        _wait_for(lambda: _alive_workers(cluster) > 0, cluster, "worker", timeout)
        cluster.processes["thrift-server"] = _thrift_server(cluster, spark, storage_options, executor_memory, worker_cores)
        _wait_for(lambda: _thrift_answers(cluster), cluster, "thrift-server", timeout)
    except BaseException:
        cluster.stop(keep_logs=True, timeout=10)
        raise
    logger.info("Spark cluster %s and Thrift Server on port %s ready", cluster.master_url, cluster.thrift_port)
    return cluster


def _thrift_server(
    cluster: SparkCluster,
    spark: SparkSettings,
    storage_options: Mapping[str, str] | None,
    executor_memory: str,
    cores: int,
) -> subprocess.Popen[bytes]:
    work_dir = cluster.work_dir
    spark.warehouse_dir.mkdir(parents=True, exist_ok=True)
    spark.metastore_dir.mkdir(parents=True, exist_ok=True)
    conf = spark_conf(spark.model_copy(update={"master": cluster.master_url, "app_name": "lakehouse-thrift-server"}), storage_options)
    # Delta's jars on the class paths, not spark.jars: the Thrift Server runs each session's
    # statements in its own class loader, which does not see jars added at submit time.
    classpath = ":".join([conf.pop("spark.jars").replace(",", ":"), *filter(None, [conf.get("spark.driver.extraClassPath")])])
    conf.update(
        {
            "spark.driver.extraClassPath": classpath,
            "spark.executor.extraClassPath": classpath,
            "spark.executor.memory": executor_memory,
            "spark.cores.max": str(cores),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        }
    )
    properties = work_dir / "conf" / "thrift-server.properties"
    properties.touch(mode=0o600)
    properties.chmod(0o600)
    properties.write_text("".join(f"{key} {value}\n" for key, value in conf.items()))
    (work_dir / "conf" / "log4j2.properties").write_text(_LOG4J2.format(log_file=work_dir / "logs" / "thrift-server.log"))
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--properties-file", str(properties),
        "--class", THRIFT_SERVER_CLASS,
        "spark-internal",
        "--hiveconf", f"hive.server2.thrift.port={cluster.thrift_port}",
        "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1",
    ]  # fmt: skip
    with open(work_dir / "logs" / "thrift-server.out", "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=_environment(work_dir), cwd=work_dir, start_new_session=True
        )


def _alive_workers(cluster: SparkCluster) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.master_ui_port}/json/", timeout=2) as response:
            state = json.loads(response.read())
    except (OSError, ValueError):
        return 0
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


def _thrift_answers(cluster: SparkCluster) -> bool:
    if not port_open(cluster.thrift_port):
        return False
    from pyhive import hive

    try:
        connection = hive.connect(host=cluster.thrift_host, port=cluster.thrift_port, username="lakehouse")
        try:
            cursor = connection.cursor()
            cursor.execute("select 1")
            return cursor.fetchall() == [(1,)]
        finally:
            connection.close()
    except Exception:  # the server accepts connections before its session manager is up
        return False


def _wait_for(ready: object, cluster: SparkCluster, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = cluster.processes.get(name)
        if process is not None and process.poll() is not None:
            raise StackError(
                f"Spark {name} exited with {process.returncode} while starting; logs in {cluster.logs_dir}:\n"
                f"{tail(cluster.logs_dir / f'{name}.log')}\n{tail(cluster.logs_dir / f'{name}.out')}"
            )
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise StackError(f"Spark {name} not ready after {timeout:.0f}s; logs in {cluster.logs_dir}:\n{tail(cluster.logs_dir / f'{name}.log')}")


__all__ = ["THRIFT_SERVER_CLASS", "SparkCluster", "spark_home", "start_spark_cluster"]
