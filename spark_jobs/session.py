"""The one Spark session factory: Spark with Delta, for the jobs, dbt and the tests.

Delta's jars come from the cache ``make setup`` filled (``spark.jars``), so Spark never
downloads anything at start. The same configuration is written as
``spark-defaults.conf`` for processes that build their own session (dbt's ``session``
method does), so every session in the project sees the same catalog and warehouse.

For a lake on an S3-compatible store, ``spark_conf`` takes the lake's storage options
(deltalake's names) and adds S3A's: hadoop-aws and the AWS SDK bundle on the driver's and
executors' class path (``s3_jars_dir``), endpoint, credentials and path style, and ``s3://``
mapped to S3A so Spark opens the tables by the URIs bronze_writer wrote. Every location
is a setting with a default (``lakehouse_common.paths``): nothing here depends on the
local development stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from lakehouse_common.errors import ConfigError
from lakehouse_common.object_store import S3A_SECRET_PROPERTIES, s3a_properties
from lakehouse_common.paths import SOURCE_ROOT, jvm_component_dir
from lakehouse_common.settings import FrozenModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _default_jars_dir() -> Path:
    return jvm_component_dir("delta") / "jars"


def _default_s3_jars_dir() -> Path:
    return jvm_component_dir("s3") / "jars"


class SparkSettings(FrozenModel):
    """Where Spark runs and where it keeps tables."""

    master: str = Field("local[*]", description="Spark master URL: local[N], spark://host:7077, k8s://...")
    app_name: str = Field("lakehouse", description="Spark application name.")
    warehouse_dir: Path = Field(
        SOURCE_ROOT / "build" / "lake" / "warehouse", description="Directory of managed (silver, gold) tables."
    )
    metastore_dir: Path = Field(
        SOURCE_ROOT / "build" / "lake" / "metastore",
        description="Directory of the local Derby metastore (one process at a time; use a real metastore on a cluster).",
    )
    delta_jars_dir: Path = Field(default_factory=_default_jars_dir, description="Directory holding Delta's jars.")
    s3_jars_dir: Path = Field(
        default_factory=_default_s3_jars_dir,
        description="Directory holding hadoop-aws and the AWS SDK bundle, put on the class path for an object-store lake.",
    )
    driver_memory: str = Field("2g", description="spark.driver.memory.")
    driver_java_options: str = Field(
        "", description="Extra JVM options for the driver (for example -XX:TieredStopAtLevel=1 for small local runs)."
    )
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions.")
    extra_conf: dict[str, str] = Field(default_factory=dict, description="Any other Spark properties, as given.")


def delta_jars(settings: SparkSettings) -> list[Path]:
    jars = sorted(settings.delta_jars_dir.glob("*.jar"))
    if not any(jar.name.startswith("delta-spark") for jar in jars):
        raise ConfigError(f"Delta's jars are not in {settings.delta_jars_dir}: run `make setup` first")
    return jars


def s3_jars(settings: SparkSettings) -> list[Path]:
    jars = sorted(settings.s3_jars_dir.glob("*.jar"))
    if not any(jar.name.startswith("hadoop-aws") for jar in jars):
        raise ConfigError(f"hadoop-aws is not in {settings.s3_jars_dir}: run `make setup` first")
    return jars


def object_store_conf(settings: SparkSettings, storage_options: Mapping[str, str]) -> dict[str, str]:
    """S3A for an object-store lake: the connector on the class paths, the store's address and credentials."""
    classpath = ":".join(str(jar) for jar in s3_jars(settings))
    conf = {
        # The class path, not spark.jars: executors find the jars where the driver has them
        # (the same image, or this machine), so the 650 MB bundle is never shipped.
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
    }
    conf.update({f"spark.hadoop.{key}": value for key, value in s3a_properties(storage_options).items()})
    return conf


def spark_conf(settings: SparkSettings, storage_options: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every Spark property the project sets, as strings; ``storage_options`` for an object-store lake."""
    metastore = settings.metastore_dir.resolve()
    conf = {
        "spark.master": settings.master,
        "spark.app.name": settings.app_name,
        "spark.jars": ",".join(str(jar) for jar in delta_jars(settings)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.warehouse.dir": str(settings.warehouse_dir.resolve()),
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={metastore} {settings.driver_java_options}".strip(),
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Delta rebuilds table state with this many tasks (default 50: far too many for local runs).
        "spark.databricks.delta.snapshotPartitions": str(settings.shuffle_partitions),
        # Delta lists files (VACUUM) with this many tasks; Spark's default of 10000 turns a
        # vacuum of a small table into minutes of empty tasks.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.schema.autoMerge.enabled": "true",
        # Silver's MERGE sources read bronze and the target itself: compute each once, not once to
        # find the files to rewrite and again to write them (Delta's `auto` recomputes
        # deterministic sources). A session property, here so every session gets it: dbt's
        # in-process one and each connection to a Thrift Server started with this configuration.
        "spark.databricks.delta.merge.materializeSource": "all",
    }
    if storage_options is not None:
        conf.update(object_store_conf(settings, storage_options))
    conf.update(settings.extra_conf)
    return conf


def write_spark_defaults(settings: SparkSettings, conf_dir: Path, storage_options: Mapping[str, str] | None = None) -> Path:
    """Write ``spark-defaults.conf`` for child processes; point ``SPARK_CONF_DIR`` at ``conf_dir``.

    Owner-only: with an object-store lake it holds the store's credentials.
    """
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / "spark-defaults.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{key} {value}\n" for key, value in spark_conf(settings, storage_options).items()))
    return path


def pyspark_submit_args(settings: SparkSettings) -> str:
    """``PYSPARK_SUBMIT_ARGS`` for these settings: the driver's memory and JVM options are read only at JVM start."""
    conf = spark_conf(settings)
    return (
        f"--driver-memory {conf['spark.driver.memory']} "
        f'--driver-java-options "{conf["spark.driver.extraJavaOptions"]}" pyspark-shell'
    )


def build_spark_session(
    settings: SparkSettings | None = None, storage_options: Mapping[str, str] | None = None
) -> SparkSession:
    """A SparkSession with Delta, built from ``settings`` (or reused if one is active)."""
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    settings.metastore_dir.mkdir(parents=True, exist_ok=True)
    # Spark's launcher reads the driver's memory, JVM options and class path only at JVM start
    # (pyspark passes the builder's properties to it).
    conf = spark_conf(settings, storage_options)
    # pyspark hands the builder's properties to spark-submit's command line: credentials go
    # into the Hadoop configuration once the JVM runs instead, never into argv.
    secrets = {key: conf.pop(f"spark.hadoop.{key}") for key in S3A_SECRET_PROPERTIES if f"spark.hadoop.{key}" in conf}
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", pyspark_submit_args(settings))
    builder = SparkSession.builder.enableHiveSupport()
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    hadoop = session.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for key, value in secrets.items():
        hadoop.set(key, value)
    return session


__all__ = [
    "SparkSettings",
    "build_spark_session",
    "delta_jars",
    "object_store_conf",
    "pyspark_submit_args",
    "s3_jars",
    "spark_conf",
    "write_spark_defaults",
]
