"""Prometheus metrics of cdc_service (served on /metrics by lakehouse_common.observability)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CdcMetrics:
    """Every metric the service exports, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_read = Counter(
            "cdc_events_read_total", "Change events read from MongoDB.", ["operation", "namespace"], registry=r
        )
        self.events_published = Counter(
            "cdc_events_published_total",
            "Events acknowledged by Kafka (at-least-once) or committed (exactly-once).",
            ["operation", "namespace"],
            registry=r,
        )
        self.events_skipped = Counter(
            "cdc_events_skipped_total", "Events of namespaces outside the scope, dropped.", registry=r
        )
        self.dead_letters = Counter(
            "cdc_dead_letters_total", "Events sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.claimed_events = Counter(
            "cdc_claimed_events_total",
            "Events too large for their topic, kept in the claim store and published as references.",
            registry=r,
        )
        self.claimed_bytes = Counter(
            "cdc_claimed_bytes_total", "Bytes of the events kept in the claim store.", registry=r
        )
        self.publish_latency = Histogram(
            "cdc_publish_latency_seconds",
            "From producing a batch to its acknowledgement (or transaction commit).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge("cdc_lag_seconds", "Now minus the cluster time of the stream's latest event.", ["stream"], registry=r)
        self.checkpoint_age = Gauge(
            "cdc_checkpoint_age_seconds", "Seconds since the stream's checkpoint was last written.", ["stream"], registry=r
        )
        self.checkpoints_written = Counter(
            "cdc_checkpoints_written_total", "Checkpoint records written.", ["stream", "kind"], registry=r
        )
        self.errors = Counter("cdc_errors_total", "Errors by kind.", ["kind"], registry=r)
        self.restarts = Counter("cdc_restarts_total", "Pipeline restarts after a failure.", registry=r)
        self.snapshot_documents = Counter(
            "cdc_snapshot_documents_total", "Documents copied by snapshots.", ["namespace"], registry=r
        )
        self.snapshot_collections_remaining = Gauge(
            "cdc_snapshot_collections_remaining", "Collections still to copy.", registry=r
        )
        self.streams = Gauge("cdc_streams", "Change streams running.", registry=r)
        self.copy_documents = Counter(
            "cdc_copy_documents_total",
            "Documents published by chunked copies while streaming (snapshots on signal), once durable.",
            ["namespace"],
            registry=r,
        )
        self.copy_superseded = Counter(
            "cdc_copy_superseded_total",
            "Documents a chunk read but did not publish: the stream changed them between the chunk's "
            "watermarks and carries their state.",
            ["namespace"],
            registry=r,
        )
        self.copy_chunks = Counter(
            "cdc_copy_chunks_total", "Chunks of chunked copies made durable.", ["namespace"], registry=r
        )
        self.copy_remaining = Gauge(
            "cdc_copy_documents_remaining",
            "Documents a running chunked copy has still to read (from the collection's estimated count).",
            ["namespace"],
            registry=r,
        )
        self.copies_running = Gauge("cdc_copies_running", "Chunked copies running.", registry=r)
        self.signals = Counter(
            "cdc_signals_total", "Signal documents read, by type and outcome.", ["type", "outcome"], registry=r
        )
        self._checkpoint_times: dict[str, float] = {}

    def checkpoint_written(self, stream_id: str, kind: str, at: float | None = None) -> None:
        """Record a checkpoint write; the age gauge is computed at scrape time."""
        self.checkpoints_written.labels(stream_id, kind).inc()
        if stream_id not in self._checkpoint_times:
            self.checkpoint_age.labels(stream_id).set_function(self._age_of(stream_id))
        self._checkpoint_times[stream_id] = at or time.time()

    def _age_of(self, stream_id: str) -> Callable[[], float]:
        return lambda: time.time() - self._checkpoint_times.get(stream_id, time.time())


__all__ = ["CdcMetrics"]
