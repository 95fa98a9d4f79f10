"""Table maintenance for bronze, silver and gold: compaction (OPTIMIZE, Z-ORDER) and VACUUM.

Streaming appends leave many small files, and merges leave rewritten ones behind.
OPTIMIZE bin-packs small files, and with Z-ORDER also clusters rows so Delta's file
statistics skip more: bronze by ingestion time (what incremental silver runs filter on),
silver by document id (what each run recomputes). VACUUM then deletes files no version
within the retention needs.

Tables are found by walking the lake (any directory holding ``_delta_log``) and addressed
by path, so the jobs need no metastore and can run while dbt holds the local one.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_jobs.lake_tables import LakeTable, discover_tables
from spark_jobs.settings import MaintenanceSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

# Delta refuses shorter retention unless this check is off: readers of versions older than
# the retention would lose their files.
_SAFE_RETENTION_HOURS = 168.0


def zorder_columns(table: LakeTable, settings: MaintenanceSettings, columns: list[str]) -> list[str]:
    """The Z-ORDER columns configured for the table that it actually has."""
    for pattern, wanted in settings.zorder_by.items():
        if fnmatch.fnmatchcase(table.key, pattern):
            return [column for column in wanted if column in columns]
    return []


def _quoted(uri: str) -> str:
    return "delta.`" + uri.replace("`", "``") + "`"


def optimize(spark: SparkSession, table: LakeTable, settings: MaintenanceSettings) -> dict[str, Any]:
    """Compact one table, Z-ordered where configured; returns OPTIMIZE's metrics."""
    columns = spark.read.format("delta").load(table.uri).columns
    zorder = zorder_columns(table, settings, columns)
    statement = f"OPTIMIZE {_quoted(table.uri)}"
    if zorder:
        statement += " ZORDER BY (" + ", ".join(f"`{column}`" for column in zorder) + ")"
    metrics = spark.sql(statement).collect()[0]["metrics"].asDict()
    return {
        "zorder_by": zorder,
        "files_added": metrics.get("numFilesAdded"),
        "files_removed": metrics.get("numFilesRemoved"),
    }


def vacuum(spark: SparkSession, table: LakeTable, retention_hours: float) -> dict[str, Any]:
    """Delete files older than the retention that no retained version needs."""
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", str(retention_hours >= _SAFE_RETENTION_HOURS).lower())
    spark.conf.set("spark.databricks.delta.vacuum.logging.enabled", "true")
    spark.sql(f"VACUUM {_quoted(table.uri)} RETAIN {retention_hours:g} HOURS").collect()
    history = spark.sql(f"DESCRIBE HISTORY {_quoted(table.uri)} LIMIT 1").collect()
    metrics = history[0]["operationMetrics"] if history and history[0]["operation"] == "VACUUM END" else {}
    return {"retention_hours": retention_hours, "files_deleted": int(metrics.get("numDeletedFiles", 0))}


def maintain(
    spark: SparkSession,
    lake_root: str,
    settings: MaintenanceSettings,
    *,
    compact: bool = True,
    clean: bool = True,
    storage_options: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Compact and/or vacuum every table of the configured layers; one report per table.

    A table that fails is reported with its error and the others still run. ``storage_options``
    (an object-store lake's) are for listing the lake; Spark has its own S3A settings.
    """
    if settings.retention_hours < _SAFE_RETENTION_HOURS and clean:
        logger.warning(
            "vacuum retention below 7 days: queries reading older versions (time travel, long-running readers) may fail",
            extra={"retention_hours": settings.retention_hours},
        )
    reports = []
    for table in discover_tables(lake_root, settings.layers, storage_options):
        report: dict[str, Any] = {"table": table.key, "uri": table.uri}
        started = time.monotonic()
        try:
            if compact:
                report["optimize"] = optimize(spark, table, settings)
            if clean:
                report["vacuum"] = vacuum(spark, table, settings.retention_hours)
        except Exception as error:  # one broken table must not stop the others' maintenance
            report["error"] = f"{type(error).__name__}: {error}"
            logger.error("maintenance failed", extra={"table": table.key, "error": report["error"]})
        report["seconds"] = round(time.monotonic() - started, 3)
        if "error" not in report:
            logger.info("table maintained", extra=report)
        reports.append(report)
    return reports


__all__ = ["maintain", "optimize", "vacuum", "zorder_columns"]
