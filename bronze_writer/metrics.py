"""bronze_writer's Prometheus metrics, in their own registry (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class BronzeMetrics:
    """Every metric the writer exports; label ``table`` is ``<db>.<collection>``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rows = Counter("bronze_rows", "Change events landed in bronze.", ["table"], registry=r)
        self.bytes = Counter("bronze_bytes", "Kafka value bytes of the events landed.", ["table"], registry=r)
        self.commits = Counter("bronze_commits", "Bronze Delta commits.", ["table"], registry=r)
        self.commit_conflicts = Counter(
            "bronze_commit_conflicts", "Bronze commits retried because another writer committed first.", ["table"], registry=r
        )
        self.commit_duration = Histogram(
            "bronze_commit_duration_seconds", "Time to write and commit one bronze batch.", ["table"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.end_to_end_lag = Histogram(
            "bronze_end_to_end_lag_seconds",
            "Commit time minus the oldest cluster time in the commit (MongoDB to bronze).",
            ["table"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.last_end_to_end_lag = Gauge(
            "bronze_last_end_to_end_lag_seconds", "End-to-end lag of the table's latest commit.", ["table"], registry=r
        )
        self.consumer_lag = Gauge(
            "bronze_consumer_lag_messages", "Messages in Kafka not landed yet.", ["topic", "partition"], registry=r
        )
        self.dead_letters = Counter(
            "bronze_dead_letters", "Records sent to the dead-letter table.", ["topic", "error_type"], registry=r
        )
        self.rescued_values = Counter(
            "bronze_rescued_values", "Values kept in __rescued_data because their type differs from the column's.",
            ["table", "field"], registry=r,
        )
        self.duplicates_dropped = Counter(
            "bronze_duplicates_dropped",
            "Events dropped because the table holds their exact event id, or the batch repeats it.",
            ["table"], registry=r,
        )
        self.already_landed = Counter(
            "bronze_already_landed",
            "Records dropped because the table had landed their offset already (another writer landed them).",
            ["table"], registry=r,
        )
        self.ids_looked_up = Counter(
            "bronze_dedupe_ids_looked_up", "Event ids at or below their partition's mark, looked up in the table.",
            ["table"], registry=r,
        )
        self.dedupe_files_read = Counter(
            "bronze_dedupe_files_read", "Data files whose event ids the dedupe had to read (not cached).",
            ["table"], registry=r,
        )
        self.offset_discontinuities = Counter(
            "bronze_offset_discontinuities",
            "Partitions whose offsets did not continue from what bronze landed, by kind (see docs/bronze_writer.md).",
            ["topic", "partition", "kind"], registry=r,
        )
        self.claims_resolved = Counter(
            "bronze_claims_resolved",
            "Claim records (events too large for their topic) resolved from the claim store and landed.",
            ["table"], registry=r,
        )
        self.consumer_recreations = Counter(
            "bronze_consumer_recreations",
            "Kafka consumers closed and opened again because the group fenced this static member (group.instance.id).",
            registry=r,
        )
        self.new_columns = Counter("bronze_new_columns", "Columns added by schema merge.", ["table"], registry=r)
        self.flushes = Counter("bronze_flushes", "Micro-batches flushed, by the limit that triggered them.", ["reason"], registry=r)
        self.batch_rows = Histogram(
            "bronze_batch_rows", "Records per micro-batch.", buckets=(10, 100, 1000, 10_000, 100_000, 1_000_000), registry=r
        )
        self.buffered_bytes = Gauge("bronze_buffered_bytes", "Value bytes buffered, not yet handed to the writer.", registry=r)
        self.paused = Gauge("bronze_paused_partitions", "Partitions paused for backpressure.", registry=r)
        self.assigned = Gauge("bronze_assigned_partitions", "Partitions assigned to this replica.", registry=r)
        self.maintenance = Counter(
            "bronze_maintenance_runs", "Scheduled compactions and vacuums.", ["operation"], registry=r
        )


__all__ = ["BronzeMetrics"]
