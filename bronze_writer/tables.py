"""Stage 3: exactly-once commits to the bronze, dead-letter and ingest-log Delta tables.

Every bronze commit carries one app transaction per Kafka partition (version = last
landed offset) and, in its commit info, ``lakehouse.batch`` and the cumulative
``lakehouse.high_water_marks`` (lakehouse_common/lake.py). A commit is attempted on top
of exactly the snapshot it was computed from (``max_commit_retries=0``): deltalake would
otherwise rebase a non-conflicting append onto a newer version and the cumulative marks
would miss what the other writer landed. On a conflict the table is reloaded, the batch
is filtered again against the new offsets and marks, retyped against the new schema,
and committed again. So replicas, zombies after a rebalance, replays and restarts can
neither lose nor duplicate an event.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from deltalake import ColumnProperties, CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import Transaction

from bronze_writer.decode import DeadLetter, DecodedTopic
from bronze_writer.schema import ENVELOPE, PAYLOAD_COLUMNS, ColumnType, resolve, table_columns
from bronze_writer.settings import LakeSettings
from lakehouse_common import lake
from lakehouse_common.errors import FatalError
from lakehouse_common.lake import HighWaterMark

logger = logging.getLogger(__name__)

# A new bronze table starts with the envelope; document columns arrive by schema merge.
_ENVELOPE_FOR_DELTA = pa.schema(
    [field.with_type(pa.string()) if field.type == pa.large_utf8() else field for field in ENVELOPE]
)
INGEST_LOG_SCHEMA = pa.schema(
    [
        ("table_uri", pa.large_utf8()),
        ("database", pa.large_utf8()),
        ("collection", pa.large_utf8()),
        ("table_version", pa.int64()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("duration_ms", pa.float64()),
        ("offset_ranges", pa.large_utf8()),
        ("first_event_id", pa.large_utf8()),
        ("last_event_id", pa.large_utf8()),
        ("max_lag_seconds", pa.float64()),
        ("writer_id", pa.large_utf8()),
        ("duplicates_dropped", pa.int64()),
        ("rescued_values", pa.int64()),
        ("new_columns", pa.large_utf8()),
    ]
)
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("topic", pa.large_utf8()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("key", pa.large_binary()),
        ("value", pa.large_binary()),
        ("headers", pa.large_utf8()),
        ("error_type", pa.large_utf8()),
        ("error", pa.large_utf8()),
        ("dead_lettered_at", pa.timestamp("us", tz="UTC")),
    ]
)


def namespace_for_topic(topic: str, prefix: str, overrides: Mapping[str, str]) -> tuple[str, str]:
    """The (db, collection) whose bronze table a topic lands in.

    Topics follow ``<prefix>.<db>.<collection>`` (db names cannot hold dots, collection
    names can); ``overrides`` maps topics named otherwise. Names sanitized for Kafka map
    to the same table path, because the path uses the same safe character set.
    """
    if topic in overrides:
        database, _, collection = overrides[topic].partition(".")
        return database, collection
    rest = topic.removeprefix(f"{prefix}.") if prefix else topic
    database, _, collection = rest.partition(".")
    if not collection or (prefix and not topic.startswith(f"{prefix}.")):
        return "_topics", topic
    return database, collection


def open_or_create(uri: str, schema: pa.Schema, storage_options: dict[str, str], name: str) -> DeltaTable:
    """Load a table, creating it empty first if needed.

    Data is never written by the creating commit: deltalake rebases a losing creator's
    commit onto the winner's table even with ``max_commit_retries=0`` (measured: both of
    two racing creators "succeed"), which would land a batch twice. An empty create that
    races is harmless; every append then runs on a loaded snapshot.
    """
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        pass
    try:
        DeltaTable.create(uri, schema, mode="ignore", name=name, storage_options=storage_options)
    except DeltaError:  # a racing creator won ("already exists", "protocol changed"): load theirs
        try:
            return DeltaTable(uri, storage_options=storage_options)
        except TableNotFoundError:
            pass
        raise
    return DeltaTable(uri, storage_options=storage_options)


def latest_marks(table: DeltaTable, newer_than: int = -1) -> dict[str, HighWaterMark] | None:
    """The marks of the newest commit that has them, among versions above ``newer_than`` (None: none).

    Reads the history backwards in growing steps, so a table with a long log costs only
    what it takes to reach its last bronze commit.
    """
    limit = 16
    while True:
        history = table.history(limit=limit)
        for commit in history:
            if commit["version"] <= newer_than:
                return None
            marks = commit.get(lake.HIGH_WATER_MARKS_KEY)
            if marks:
                return lake.decode_high_water_marks(marks)
        if len(history) < limit:
            return None
        limit *= 8


@dataclass
class CommitResult:
    """What one bronze commit landed."""

    table_uri: str
    database: str
    collection: str
    version: int
    rows: int
    bytes: int
    duration_seconds: float
    committed_at: datetime
    offsets: dict[str, tuple[int, int]]
    event_ids: dict[str, tuple[str, str]]
    max_lag_seconds: float | None
    duplicates_dropped: int
    rescued: dict[str, int]
    new_columns: dict[str, ColumnType]
    conflicts: int


class BronzeTable:
    """One collection's bronze table: its offsets, marks, schema, and the commit loop."""

    def __init__(self, lake_settings: LakeSettings, database: str, collection: str) -> None:
        self.settings = lake_settings
        self.database = database
        self.collection = collection
        self.uri = lake.bronze_table_uri(lake_settings.root, database, collection)
        self._storage_options = lake_settings.deltalake_options()
        self._table: DeltaTable | None = None
        self._marks: dict[str, HighWaterMark] = {}
        self._marks_version = -1
        plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
        self._writer_properties = WriterProperties(
            compression=lake_settings.compression, column_properties=dict.fromkeys(PAYLOAD_COLUMNS, plain)
        )
        self.refresh()

    @property
    def version(self) -> int | None:
        return None if self._table is None else self._table.version()

    @property
    def marks(self) -> dict[str, HighWaterMark]:
        return dict(self._marks)

    def refresh(self) -> None:
        """Load the newest snapshot, its marks included."""
        if self._table is None:
            try:
                self._table = DeltaTable(self.uri, storage_options=self._storage_options)
            except TableNotFoundError:
                return
        else:
            self._table.update_incremental()
        version = self._table.version()
        if version != self._marks_version:
            marks = latest_marks(self._table, self._marks_version)
            if marks is not None:
                self._marks = marks
            self._marks_version = version

    def landed_offset(self, topic: str, partition: int) -> int | None:
        """The last offset of ``topic``/``partition`` this table holds (its app transaction)."""
        if self._table is None:
            return None
        return self._table.transaction_version(lake.app_id(topic, partition))

    def columns(self) -> dict[str, ColumnType]:
        return table_columns(self._table.schema() if self._table is not None else None)

    def _pending(self, decoded: DecodedTopic) -> tuple[pl.DataFrame, dict[int, int], int]:
        """Rows not landed yet, partitions whose offsets advance, and how many duplicates were dropped."""
        topic = decoded.topic
        landed = {partition: self.landed_offset(topic, partition) for partition in decoded.last_offsets}
        advancing = {
            partition: last
            for partition, last in decoded.last_offsets.items()
            if landed[partition] is None or last > landed[partition]  # type: ignore[operator]
        }
        frame = decoded.frame.filter(pl.col("__kafka_partition").is_in(list(advancing)))
        bounds = pl.DataFrame(
            {
                "__kafka_partition": list(advancing),
                "__landed_offset": [landed[partition] if landed[partition] is not None else -1 for partition in advancing],
                "__landed_event_id": [
                    self._marks[f"{topic}/{partition}"].event_id if f"{topic}/{partition}" in self._marks else ""
                    for partition in advancing
                ],
            },
            schema={"__kafka_partition": pl.Int32, "__landed_offset": pl.Int64, "__landed_event_id": pl.String},
        )
        frame = frame.join(bounds, on="__kafka_partition", how="left")
        before = frame.height
        # Event ids only grow within a partition: keep an event only when its id is above
        # the landed mark and above every id before it in this batch (producer retries, replays).
        # (Strings have no cum_max: compare dense ranks, computed once over the whole batch.)
        frame = frame.with_columns(pl.col("__event_id").rank("dense").alias("__rank"))
        frame = frame.filter(
            (pl.col("__kafka_offset") > pl.col("__landed_offset"))
            & (pl.col("__event_id") > pl.col("__landed_event_id"))
            & (pl.col("__rank") > pl.col("__rank").cum_max().shift(1, fill_value=0).over("__kafka_partition"))
        ).drop("__landed_offset", "__landed_event_id", "__rank")
        return frame, advancing, before - frame.height

    def land(self, decoded: DecodedTopic, writer_id: str) -> CommitResult | None:
        """Commit the topic's new events and offsets; None when every partition had already landed."""
        conflicts = 0
        if self._table is None:
            self._table = open_or_create(
                self.uri, _ENVELOPE_FOR_DELTA, self._storage_options, f"bronze_{self.database}_{self.collection}"
            )
        for attempt in range(self.settings.max_commit_attempts):
            if attempt:
                self.refresh()
            frame, advancing, duplicates = self._pending(decoded)
            if not advancing:
                return None
            ingested_at = datetime.now(UTC)
            columns = self.columns()
            resolved = resolve(
                frame,
                decoded.field_names,
                columns,
                topic=decoded.topic,
                database=self.database,
                collection=self.collection,
                ingested_at=ingested_at,
            )
            summary = frame.group_by("__kafka_partition").agg(
                pl.col("__kafka_offset").min().alias("first_offset"),
                pl.col("__event_id").first().alias("first_id"),
                pl.col("__event_id").last().alias("last_id"),
                pl.col("__resume_token").last().alias("last_token"),
                pl.col("__kafka_offset").last().alias("last_id_offset"),
            )
            marks = dict(self._marks)
            event_ids: dict[str, tuple[str, str]] = {}
            for partition, _first_offset, first_id, last_id, last_token, _last_offset in summary.iter_rows():
                key = f"{decoded.topic}/{partition}"
                event_ids[key] = (first_id, last_id)
                marks[key] = HighWaterMark(decoded.topic, partition, advancing[partition], last_id, last_token)
            for partition, last in advancing.items():
                key = f"{decoded.topic}/{partition}"
                if key in marks and key not in event_ids:
                    previous = marks[key]
                    marks[key] = HighWaterMark(previous.topic, partition, last, previous.event_id, previous.resume_token)
            offsets = {
                f"{decoded.topic}/{partition}": (decoded.first_offsets[partition], last)
                for partition, last in advancing.items()
            }
            metadata = {
                lake.BATCH_KEY: lake.batch_metadata(offsets, event_ids),
                lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(marks),
                "lakehouse.writer": writer_id,
            }
            transactions = [Transaction(lake.app_id(decoded.topic, partition), last) for partition, last in advancing.items()]
            started = time.perf_counter()
            try:
                write_deltalake(
                    self._table,
                    resolved.data,
                    mode="append",
                    schema_mode="merge" if resolved.needs_schema_merge else None,
                    target_file_size=self.settings.target_file_size,
                    writer_properties=self._writer_properties,
                    commit_properties=CommitProperties(
                        custom_metadata=metadata, app_transactions=transactions, max_commit_retries=0
                    ),
                )
            except CommitFailedError as error:
                conflicts += 1
                logger.info(
                    "bronze commit conflicted with another writer; retrying on the new snapshot",
                    extra={"table": self.uri, "attempt": attempt + 1, "error": str(error)},
                )
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))
                continue
            duration = time.perf_counter() - started
            version = self._table.version()
            self._marks = marks
            self._marks_version = version
            committed_at = datetime.now(UTC)
            oldest_cluster_time = frame["__cluster_time_seconds"].min() if frame.height else None
            max_lag = committed_at.timestamp() - oldest_cluster_time if oldest_cluster_time is not None else None
            return CommitResult(
                table_uri=self.uri,
                database=self.database,
                collection=self.collection,
                version=version,
                rows=frame.height,
                bytes=int(frame["__value_bytes"].sum()) if frame.height else 0,
                duration_seconds=duration,
                committed_at=committed_at,
                offsets=offsets,
                event_ids=event_ids,
                max_lag_seconds=max_lag,
                duplicates_dropped=duplicates,
                rescued=resolved.rescued,
                new_columns=resolved.new_columns,
                conflicts=conflicts,
            )
        raise FatalError(
            f"bronze commit to {self.uri} still conflicted after {self.settings.max_commit_attempts} attempts; "
            "too many writers on one table? Raise lake.max_commit_attempts"
        )


class SideTable:
    """An append-only companion table (ingest log, dead letters) created on first use."""

    def __init__(self, uri: str, schema: pa.Schema, lake_settings: LakeSettings) -> None:
        self.uri = uri
        self.schema = schema
        self._storage_options = lake_settings.deltalake_options()
        self._table: DeltaTable | None = None

    def table(self) -> DeltaTable | None:
        """The newest snapshot, or None while the table does not exist."""
        if self._table is None:
            try:
                self._table = DeltaTable(self.uri, storage_options=self._storage_options)
            except TableNotFoundError:
                return None
        else:
            self._table.update_incremental()
        return self._table

    def append(self, build: Callable[[DeltaTable], tuple[pa.Table, list[Transaction]] | None]) -> None:
        """Append what ``build`` makes from the newest snapshot; None means nothing to append.

        With app transactions the commit must land on that exact snapshot (a conflict rebuilds
        from the new one), so a version is never applied twice; without, deltalake may rebase.
        """
        if self._table is None:
            self._table = open_or_create(self.uri, self.schema, self._storage_options, self.uri.rsplit("/", 1)[-1])
        for _attempt in range(50):
            table = self.table()
            assert table is not None
            built = build(table)
            if built is None:
                return
            data, transactions = built
            try:
                write_deltalake(
                    table,
                    data.cast(self.schema),
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=transactions or None, max_commit_retries=0 if transactions else None
                    ),
                )
                return
            except CommitFailedError:
                time.sleep(random.uniform(0, 0.2))
        raise FatalError(f"could not append to {self.uri} after 50 attempts")


class DeadLetterTable(SideTable):
    """``<root>/bronze/_dead_letters``: each poison record once, even when its batch is re-read."""

    def __init__(self, lake_settings: LakeSettings) -> None:
        super().__init__(lake.dead_letter_uri(lake_settings.root), DEAD_LETTER_SCHEMA, lake_settings)

    def write(self, dead_letters: list[DeadLetter]) -> int:
        """Append the records not written before (per-partition app transactions); returns how many."""
        written = 0

        def build(table: DeltaTable) -> tuple[pa.Table, list[Transaction]] | None:
            nonlocal written
            fresh = []
            newest: dict[tuple[str, int], int] = {}
            for letter in dead_letters:
                landed = table.transaction_version(lake.app_id(letter.topic, letter.partition))
                if landed is not None and letter.offset <= landed:
                    continue
                fresh.append(letter)
                key = (letter.topic, letter.partition)
                newest[key] = max(newest.get(key, -1), letter.offset)
            written = len(fresh)
            if not fresh:
                return None
            transactions = [Transaction(lake.app_id(topic, partition), offset) for (topic, partition), offset in newest.items()]
            return _dead_letter_table(fresh), transactions

        self.append(build)
        return written


def _dead_letter_table(letters: list[DeadLetter]) -> pa.Table:
    now = datetime.now(UTC)
    return pa.table(
        {
            "topic": [letter.topic for letter in letters],
            "partition": [letter.partition for letter in letters],
            "offset": [letter.offset for letter in letters],
            "kafka_timestamp": [
                datetime.fromtimestamp(letter.kafka_timestamp / 1000, UTC)
                if letter.kafka_timestamp is not None and letter.kafka_timestamp >= 0
                else None
                for letter in letters
            ],
            "key": [letter.key for letter in letters],
            "value": [letter.value for letter in letters],
            "headers": [letter.headers_json() for letter in letters],
            "error_type": [letter.error_type for letter in letters],
            "error": [letter.error for letter in letters],
            "dead_lettered_at": [now] * len(letters),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


class IngestLog(SideTable):
    """``<root>/bronze/_ingest_log``: one row per bronze commit (the seed's logging table)."""

    def __init__(self, lake_settings: LakeSettings) -> None:
        super().__init__(lake.ingest_log_uri(lake_settings.root), INGEST_LOG_SCHEMA, lake_settings)

    def record(self, results: list[CommitResult], writer_id: str) -> None:
        if not results:
            return
        data = pa.table(
            {
                "table_uri": [result.table_uri for result in results],
                "database": [result.database for result in results],
                "collection": [result.collection for result in results],
                "table_version": [result.version for result in results],
                "rows": [result.rows for result in results],
                "bytes": [result.bytes for result in results],
                "committed_at": [result.committed_at for result in results],
                "duration_ms": [result.duration_seconds * 1000 for result in results],
                "offset_ranges": [json.dumps(result.offsets, sort_keys=True) for result in results],
                "first_event_id": [min((ids[0] for ids in result.event_ids.values()), default=None) for result in results],
                "last_event_id": [max((ids[1] for ids in result.event_ids.values()), default=None) for result in results],
                "max_lag_seconds": [result.max_lag_seconds for result in results],
                "writer_id": [writer_id] * len(results),
                "duplicates_dropped": [result.duplicates_dropped for result in results],
                "rescued_values": [sum(result.rescued.values()) for result in results],
                "new_columns": [
                    json.dumps({name: column.family for name, column in result.new_columns.items()}) for result in results
                ],
            },
            schema=INGEST_LOG_SCHEMA,
        )
        self.append(lambda _table: (data, []))

    def table_uris(self) -> list[str]:
        """Every bronze table the log knows, for status and maintenance on any storage."""
        table = self.table()
        if table is None:
            return []
        # Polars' reader, not to_pyarrow_table: pyarrow's dataset threads can abort the process at exit.
        uris = pl.read_delta(table, columns=["table_uri"])["table_uri"].unique().to_list()
        return sorted(uris)


__all__ = [
    "DEAD_LETTER_SCHEMA",
    "INGEST_LOG_SCHEMA",
    "BronzeTable",
    "CommitResult",
    "DeadLetterTable",
    "IngestLog",
    "latest_marks",
    "namespace_for_topic",
]
