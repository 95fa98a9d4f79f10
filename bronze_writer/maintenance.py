"""Table maintenance and status: compaction and vacuum (deltalake's optimize and vacuum), claim collection.

``bronze-writer compact`` / ``vacuum`` / ``status`` call these once; ``bronze-writer run``
calls them on a schedule (``maintenance.*_interval_seconds``) in a background thread. A
vacuum also collects the claims no record can need any more (lakehouse_common.claims).
Compaction commits rewrite files without carrying marks or app transactions, which the
writer allows for: it reads marks from the newest commit that has them, and a bronze
append that loses the race to a compaction is retried on the new snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import TableNotFoundError

from bronze_writer.metrics import BronzeMetrics
from bronze_writer.settings import BronzeSettings
from bronze_writer.tables import IngestLog, latest_marks
from lakehouse_common import lake
from lakehouse_common.claims import ClaimCollection, ClaimStore

if TYPE_CHECKING:
    from bronze_writer.tables import BronzeTable

logger = logging.getLogger(__name__)


def discover_tables(settings: BronzeSettings) -> list[str]:
    """Every bronze table: those the ingest log names, plus any found under a local lake root."""
    uris = set(IngestLog(settings.lake).table_uris())
    root = settings.lake.root
    if "://" not in root or root.startswith("file://"):
        bronze = Path(root.removeprefix("file://")) / "bronze"
        for log in bronze.glob("*/*/_delta_log"):  # the companion tables sit one level up
            uris.add(lake.bronze_table_uri(root, log.parent.parent.name, log.parent.name))
    return sorted(uris)


def compact_table(uri: str, settings: BronzeSettings) -> dict[str, object]:
    """Bin-pack small files towards the target file size."""
    table = DeltaTable(uri, storage_options=settings.lake.deltalake_options())
    metrics = table.optimize.compact(
        target_size=settings.lake.target_file_size,
        writer_properties=WriterProperties(compression=settings.lake.compression),
    )
    logger.info("compacted", extra={"table": uri, "files_added": metrics.get("numFilesAdded"), "files_removed": metrics.get("numFilesRemoved")})
    return metrics


def vacuum_table(uri: str, settings: BronzeSettings, retention_hours: int | None = None, dry_run: bool = False) -> list[str]:
    """Delete files no version within the retention still needs."""
    hours = settings.maintenance.vacuum_retention_hours if retention_hours is None else retention_hours
    table = DeltaTable(uri, storage_options=settings.lake.deltalake_options())
    removed = table.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False)
    logger.info("vacuumed", extra={"table": uri, "files": len(removed), "dry_run": dry_run, "retention_hours": hours})
    return removed


def collect_claims(settings: BronzeSettings, retention_hours: int | None = None, dry_run: bool = False) -> ClaimCollection:
    """Delete claims bronze landed longer than the retention ago, and orphans past theirs (if set)."""
    maintenance = settings.maintenance
    hours = maintenance.claim_retention_hours if retention_hours is None else retention_hours
    orphans = maintenance.orphan_claim_retention_hours
    store = ClaimStore(settings.lake.root, settings.lake.deltalake_options())
    return store.collect(
        timedelta(hours=hours), None if orphans is None else timedelta(hours=orphans), dry_run=dry_run
    )


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    landed_offset: int | None
    last_event_id: str
    high_watermark: int | None = None

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None:
            return None
        return max(0, self.high_watermark - (self.landed_offset + 1 if self.landed_offset is not None else 0))


@dataclass
class TableStatus:
    uri: str
    version: int | None
    partitions: list[PartitionStatus] = field(default_factory=list)
    error: str | None = None


def table_status(uri: str, settings: BronzeSettings) -> TableStatus:
    """A table's version and, for every partition its marks name, the landed offset."""
    try:
        table = DeltaTable(uri, storage_options=settings.lake.deltalake_options())
    except TableNotFoundError:
        return TableStatus(uri, None, error="no table")
    marks = latest_marks(table) or {}
    partitions = [
        PartitionStatus(mark.topic, mark.partition, table.transaction_version(lake.app_id(mark.topic, mark.partition)), mark.event_id)
        for mark in sorted(marks.values(), key=lambda mark: (mark.topic, mark.partition))
    ]
    return TableStatus(uri, table.version(), partitions)


def add_kafka_high_watermarks(statuses: Iterable[TableStatus], settings: BronzeSettings, timeout: float = 10.0) -> None:
    """Fill each partition's high watermark, so status can show the lag."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config = dict(settings.kafka.librdkafka_config())
    config.update({"group.id": f"{settings.consumer.group_id}-status", "enable.auto.commit": False})
    consumer = Consumer(config)
    try:
        for status in statuses:
            for partition in status.partitions:
                try:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(partition.topic, partition.partition), timeout=timeout
                    )
                    partition.high_watermark = high
                except KafkaException as error:
                    logger.warning("no watermark", extra={"topic": partition.topic, "error": str(error)})
    finally:
        consumer.close()


class Maintenance:
    """Runs compaction and vacuum on their intervals in a background thread, one at a time."""

    def __init__(self, settings: BronzeSettings, metrics: BronzeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bronze-maintenance")
        self._running: Future[None] | None = None
        started = time.monotonic()
        self._last = {"compact": started, "vacuum": started}

    def run_due(self, tables: list[BronzeTable]) -> None:
        if self._running is not None and not self._running.done():
            return
        now = time.monotonic()
        intervals = {
            "compact": self.settings.maintenance.compact_interval_seconds,
            "vacuum": self.settings.maintenance.vacuum_interval_seconds,
        }
        due = [operation for operation, interval in intervals.items() if interval and now - self._last[operation] >= interval]
        if not due or not tables:
            return
        operation = min(due, key=lambda name: self._last[name])  # the longest waiting first
        self._last[operation] = now
        uris = [table.uri for table in tables if table.version is not None]
        self._running = self._executor.submit(self._run, operation, uris)

    def _run(self, operation: str, uris: list[str]) -> None:
        for uri in uris:
            try:
                if operation == "compact":
                    compact_table(uri, self.settings)
                else:
                    vacuum_table(uri, self.settings)
                self.metrics.maintenance.labels(operation).inc()
            except Exception:  # maintenance must never stop ingestion; the next run tries again
                logger.exception("scheduled maintenance failed", extra={"operation": operation, "table": uri})
        if operation == "vacuum":
            try:
                collect_claims(self.settings)
                self.metrics.maintenance.labels("claims").inc()
            except Exception:  # as above
                logger.exception("scheduled claim collection failed")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "Maintenance",
    "PartitionStatus",
    "TableStatus",
    "add_kafka_high_watermarks",
    "collect_claims",
    "compact_table",
    "discover_tables",
    "table_status",
    "vacuum_table",
]
