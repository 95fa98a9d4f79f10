"""What the demo reads to know where the pipeline stands: MongoDB, Kafka, the lake.

"Bronze has caught up" means two things at once: every record of every CDC topic partition
is landed (the Kafka end offset against the offset the bronze table recorded in its Delta
commit metadata, ``lakehouse_common.lake``), and the bronze tables, replayed event by event,
hold exactly the documents MongoDB holds now (latest event per document, deletes removed).
The first alone would pass while cdc_service still reads; the second alone could pass by
coincidence while records are in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from confluent_kafka import Consumer, KafkaException, TopicPartition
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lakehouse_common.lake import bronze_table_uri, read_high_water_marks
from spark_jobs.lake_tables import layer_counts

TOPIC_PREFIX = "cdc"
# Events of a copy, not of a change: their cluster time is the copy's position, so they have no lag.
COPY_OPERATIONS = ("snapshot", "snapshotComplete")


# Every reader takes the lake root (a local path or an s3:// URI) and its storage options.
Options = Mapping[str, str] | None


def _bronze_frame(
    lake_root: Path | str, database: str, collection: str, columns: list[str], storage_options: Options = None
) -> pl.DataFrame | None:
    try:
        table = DeltaTable(bronze_table_uri(str(lake_root), database, collection), storage_options=dict(storage_options or {}))
    except TableNotFoundError:
        return None
    return pl.from_arrow(table.to_pyarrow_table(columns=columns))  # type: ignore[return-value]


def bronze_rows(
    lake_root: Path | str, database: str, collections: Iterable[str], storage_options: Options = None
) -> dict[str, int]:
    """Rows (change events) per bronze table; 0 for a table not created yet."""
    counts = {}
    for collection in collections:
        try:
            table = DeltaTable(
                bronze_table_uri(str(lake_root), database, collection), storage_options=dict(storage_options or {})
            )
        except TableNotFoundError:
            counts[collection] = 0
            continue
        counts[collection] = table.to_pyarrow_dataset().count_rows()
    return counts


def bronze_documents(
    lake_root: Path | str, database: str, collections: Iterable[str], storage_options: Options = None
) -> dict[str, int]:
    """Documents per collection as bronze's events say they are now (what silver will hold)."""
    counts = {}
    for collection in collections:
        frame = _bronze_frame(lake_root, database, collection, ["__document_id", "__event_id", "__operation"], storage_options)
        if frame is None or frame.is_empty():
            counts[collection] = 0
            continue
        latest = (
            frame.filter(pl.col("__document_id").is_not_null())
            .sort("__event_id")
            .group_by("__document_id")
            .agg(pl.col("__operation").last())
        )
        counts[collection] = latest.filter(pl.col("__operation") != "delete").height
    return counts


def lake_counts(lake_root: Path | str, storage_options: Options = None) -> dict[str, dict[str, int]]:
    """Rows per silver (current state, history) and gold table that dbt has committed.

    A table dbt is creating right now, or failed to create, is left out rather than failing
    the count (the summary then reports it missing).
    """
    root = lake_root if isinstance(lake_root, str) else str(lake_root.resolve())
    return layer_counts(root, storage_options, skip_uncommitted=True)


def silver_documents(lake_root: Path | str, storage_options: Options = None) -> dict[str, int]:
    """Rows of each silver current-state table (what the live status line shows)."""
    return lake_counts(lake_root, storage_options)["silver"]


@dataclass
class LandingState:
    """Per CDC topic partition: records in Kafka and how far bronze has landed them."""

    end_offsets: dict[str, int] = field(default_factory=dict)
    landed: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # partitions Kafka could not answer for (no leader yet)

    @property
    def unlanded(self) -> int:
        """Records in Kafka that no bronze commit covers yet."""
        return sum(max(0, end - (self.landed.get(key, -1) + 1)) for key, end in self.end_offsets.items())

    @property
    def complete(self) -> bool:
        return self.unlanded == 0 and not self.unknown


def landing_state(
    kafka_config: Mapping[str, str],
    lake_root: Path | str,
    database: str,
    collections: Iterable[str],
    storage_options: Options = None,
) -> LandingState:
    """Kafka end offsets of the database's CDC topics against bronze's recorded offsets."""
    consumer = Consumer({**kafka_config, "group.id": "lakehouse-demo-observer", "enable.auto.commit": False})
    state = LandingState()
    try:
        metadata = consumer.list_topics(timeout=10)
        prefix = f"{TOPIC_PREFIX}.{database}."
        for name, topic in metadata.topics.items():
            if not name.startswith(prefix):
                continue
            for partition in topic.partitions:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                except KafkaException:  # a topic created a moment ago may have no leader yet
                    state.unknown.append(f"{name}/{partition}")
                    continue
                state.end_offsets[f"{name}/{partition}"] = high
    finally:
        consumer.close()
    for collection in collections:
        for key, mark in read_high_water_marks(bronze_table_uri(str(lake_root), database, collection), storage_options).items():
            state.landed[key] = mark.offset
    return state


def _seconds(value: object) -> float | None:
    """A lag figure to the millisecond; None where there is none (polars types aggregates loosely)."""
    return round(float(value), 3) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Lag:
    """End-to-end lag, MongoDB write (cluster time) to bronze commit (ingest time), in seconds.

    ``last_write_seconds`` is the lag of the most recent change; the percentiles cover every
    change event (snapshot records excluded: they are copies, not writes). Cluster times
    have one-second resolution, so each figure is good to about a second.
    """

    last_write_seconds: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None
    events: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "last_write_seconds": self.last_write_seconds,
            "p50_seconds": self.p50_seconds,
            "p95_seconds": self.p95_seconds,
            "max_seconds": self.max_seconds,
            "events": self.events,
        }


def end_to_end_lag(lake_root: Path | str, database: str, collections: Iterable[str], storage_options: Options = None) -> Lag:
    frames = []
    for collection in collections:
        frame = _bronze_frame(
            lake_root,
            database,
            collection,
            ["__operation", "__cluster_time", "__cluster_time_increment", "__ingested_at"],
            storage_options,
        )
        if frame is not None and not frame.is_empty():
            frames.append(frame)
    if not frames:
        return Lag(None, None, None, None, 0)
    changes = pl.concat(frames).filter(~pl.col("__operation").is_in(COPY_OPERATIONS))
    if changes.is_empty():
        return Lag(None, None, None, None, 0)
    changes = changes.with_columns(
        ((pl.col("__ingested_at") - pl.col("__cluster_time")).dt.total_milliseconds() / 1000).clip(lower_bound=0).alias("lag")
    )
    last = changes.sort(["__cluster_time", "__cluster_time_increment"]).row(-1, named=True)
    return Lag(
        last_write_seconds=_seconds(last["lag"]),
        p50_seconds=_seconds(changes["lag"].quantile(0.5)),
        p95_seconds=_seconds(changes["lag"].quantile(0.95)),
        max_seconds=_seconds(changes["lag"].max()),
        events=changes.height,
    )


__all__ = [
    "Lag",
    "LandingState",
    "bronze_documents",
    "bronze_rows",
    "end_to_end_lag",
    "lake_counts",
    "landing_state",
    "silver_documents",
]
