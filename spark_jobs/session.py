"""The one Spark session factory: Spark with Delta, for the jobs, dbt and the tests.

Delta's jars come from the cache ``make setup`` filled (``spark.jars``), so Spark never
downloads anything at start. The same configuration is written as
``spark-defaults.conf`` for processes that build their own session (dbt's ``session``
method does), so every session in the project sees the same catalog and warehouse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from lakehouse_common.errors import ConfigError
from lakehouse_common.settings import FrozenModel
from local_stack.paths import PROJECT_ROOT, jvm_component_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _default_jars_dir() -> Path:
    return jvm_component_dir("delta") / "jars"


class SparkSettings(FrozenModel):
    """Where Spark runs and where it keeps tables."""

    master: str = Field("local[*]", description="Spark master URL: local[N], spark://host:7077, k8s://...")
    app_name: str = Field("lakehouse", description="Spark application name.")
    warehouse_dir: Path = Field(
        PROJECT_ROOT / "build" / "lake" / "warehouse", description="Directory of managed (silver, gold) tables."
    )
    metastore_dir: Path = Field(
        PROJECT_ROOT / "build" / "lake" / "metastore",
        description="Directory of the local Derby metastore (one process at a time; use a real metastore on a cluster).",
    )
    delta_jars_dir: Path = Field(default_factory=_default_jars_dir, description="Directory holding Delta's jars.")
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


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """Every Spark property the project sets, as strings."""
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
    }
    conf.update(settings.extra_conf)
    return conf


def write_spark_defaults(settings: SparkSettings, conf_dir: Path) -> Path:
    """Write ``spark-defaults.conf`` for child processes; point ``SPARK_CONF_DIR`` at ``conf_dir``."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / "spark-defaults.conf"
    path.write_text("".join(f"{key} {value}\n" for key, value in spark_conf(settings).items()))
    return path


def pyspark_submit_args(settings: SparkSettings) -> str:
    """``PYSPARK_SUBMIT_ARGS`` for these settings: the driver's memory and JVM options are read only at JVM start."""
    conf = spark_conf(settings)
    return (
        f"--driver-memory {conf['spark.driver.memory']} "
        f'--driver-java-options "{conf["spark.driver.extraJavaOptions"]}" pyspark-shell'
    )


def build_spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """A SparkSession with Delta, built from ``settings`` (or reused if one is active)."""
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    settings.metastore_dir.mkdir(parents=True, exist_ok=True)
    # Spark's launcher reads the driver's memory and JVM options only at JVM start.
    conf = spark_conf(settings)
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", pyspark_submit_args(settings))
    builder = SparkSession.builder.enableHiveSupport()
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


__all__ = [
    "SparkSettings",
    "build_spark_session",
    "delta_jars",
    "pyspark_submit_args",
    "spark_conf",
    "write_spark_defaults",
]
