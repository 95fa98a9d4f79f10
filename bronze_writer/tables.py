"""Stage 3: exactly-once commits to the bronze, dead-letter and ingest-log Delta tables.

Every bronze commit carries one app transaction per Kafka partition (version = last
landed offset) and, in its commit info, ``lakehouse.batch`` and the cumulative
``lakehouse.high_water_marks`` (lakehouse_common/lake.py). A commit is attempted on top
of exactly the snapshot it was computed from (``max_commit_retries=0``): deltalake would
otherwise rebase a non-conflicting append onto a newer version and the cumulative marks
would miss what the other writer landed. On a conflict the table is reloaded, the batch
is filtered again against the new snapshot (bronze_writer.dedupe: offsets, then exact
event ids), retyped against the new schema, and committed again. So replicas, zombies
after a rebalance, replays and restarts can neither lose nor duplicate an event.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import polars as pl
import pyarrow as pa
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import Transaction

from bronze_writer.decode import DeadLetter, DecodedTopic
from bronze_writer.dedupe import EventIdIndex, Lookup, Pending, pending_rows
from bronze_writer.errors import Action, PoisonRowsError, Stage, classify, describe, isolate_poison
from bronze_writer.files import DataFiles, stats_columns
from bronze_writer.offsets import KafkaIdentity
from bronze_writer.schema import ENVELOPE, PAYLOAD_COLUMNS, ResolvedBatch, resolve
from bronze_writer.settings import LakeSettings
from lakehouse_common import lake
from lakehouse_common.bronze_schema import (
    BRONZE_TABLE_CONFIGURATION,
    DEAD_LETTER_SCHEMA,
    INGEST_LOG_SCHEMA,
    ColumnType,
    table_columns,
)
from lakehouse_common.errors import FatalError
from lakehouse_common.lake import HighWaterMark

logger = logging.getLogger(__name__)

# Bronze commits checkpoint on the writer's own schedule (lake.checkpoint_interval_commits).
_NO_CHECKPOINT_HOOK = PostCommitHookProperties(create_checkpoint=False)

# A new bronze table starts with the envelope; document columns arrive by schema merge.
_ENVELOPE_FOR_DELTA = pa.schema([field.with_type(pa.string()) if field.type == pa.large_utf8() else field for field in ENVELOPE])


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


def open_or_create(
    uri: str, schema: pa.Schema, storage_options: dict[str, str], name: str, configuration: Mapping[str, str] | None = None
) -> DeltaTable:
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
        DeltaTable.create(
            uri, schema, mode="ignore", name=name, configuration=dict(configuration or {}), storage_options=storage_options
        )
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
    """What one bronze commit landed, and what it filtered and why (``version`` None: nothing to commit)."""

    table_uri: str
    database: str
    collection: str
    version: int | None
    rows: int
    bytes: int
    duration_seconds: float
    committed_at: datetime
    offsets: dict[str, tuple[int, int]]
    event_ids: dict[str, tuple[str, str]]
    max_lag_seconds: float | None
    duplicates_dropped: int
    already_landed: int
    ids_looked_up: int
    files_read: int
    rescued: dict[str, int]
    new_columns: dict[str, ColumnType]
    conflicts: int


class BronzeTable:
    """One collection's bronze table: its offsets, marks, schema, and the commit loop."""

    def __init__(self, lake_settings: LakeSettings, database: str, collection: str, index: EventIdIndex | None = None) -> None:
        self.settings = lake_settings
        self.database = database
        self.collection = collection
        self.uri = lake.bronze_table_uri(lake_settings.root, database, collection)
        self._storage_options = lake_settings.deltalake_options()
        self._index = index or EventIdIndex(lake_settings.dedupe_cache_bytes)
        self._table: DeltaTable | None = None
        self._marks: dict[str, HighWaterMark] = {}
        self._marks_version = -1
        plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
        self._writer_properties = WriterProperties(
            compression=lake_settings.compression, column_properties=dict.fromkeys(PAYLOAD_COLUMNS, plain)
        )
        self._files = DataFiles(
            self.uri, self._storage_options, lake_settings.compression, lake_settings.target_file_size, PAYLOAD_COLUMNS
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

    def _open_or_create(self) -> DeltaTable:
        return open_or_create(
            self.uri,
            _ENVELOPE_FOR_DELTA,
            self._storage_options,
            f"bronze_{self.database}_{self.collection}",
            BRONZE_TABLE_CONFIGURATION,
        )

    def landed_offset(self, topic: str, partition: int) -> int | None:
        """The last offset of ``topic``/``partition`` this table holds (its app transaction)."""
        if self._table is None:
            return None
        return self._table.transaction_version(lake.app_id(topic, partition))

    def columns(self) -> dict[str, ColumnType]:
        return table_columns(self._table.schema() if self._table is not None else None)

    def _pending(self, decoded: DecodedTopic) -> Pending:
        """The batch's rows this snapshot does not hold (dedupe.py has the rule)."""
        topic = decoded.topic
        table = self._table

        def lookup(ids: pl.Series) -> Lookup:
            assert table is not None
            return self._index.lookup(table, ids, self._storage_options)

        marks = {
            partition: self._marks[f"{topic}/{partition}"].event_id
            for partition in decoded.last_offsets
            if f"{topic}/{partition}" in self._marks
        }
        landed = {partition: self.landed_offset(topic, partition) for partition in decoded.last_offsets}
        return pending_rows(decoded.frame, decoded.last_offsets, landed, marks, lookup)

    def _typed(self, frame: pl.DataFrame, decoded: DecodedTopic, ingested_at: datetime) -> ResolvedBatch:
        """The rows typed against the table; rows that make typing fail raise ``PoisonRowsError``."""
        columns = self.columns()

        def attempt(rows: list[int] | None = None) -> ResolvedBatch:
            subset = frame if rows is None else frame[rows]
            return resolve(
                subset,
                decoded.field_names,
                columns,
                topic=decoded.topic,
                database=self.database,
                collection=self.collection,
                ingested_at=ingested_at,
            )

        try:
            return attempt()
        except BaseException as error:  # classified: only the records' fault is isolated
            if classify(error, Stage.RECORDS) is not Action.DEAD_LETTER:
                raise
            failure = error
        bad = isolate_poison(range(frame.height), attempt)
        if not bad:
            raise FatalError(f"typing a batch of {self.uri} failed, but no record fails alone: {describe(failure)}") from failure
        positions = frame.select("__kafka_partition", "__kafka_offset").rows()
        raise PoisonRowsError({positions[row]: error for row, error in sorted(bad.items())}) from failure

    def _marks_after(
        self, decoded: DecodedTopic, frame: pl.DataFrame, advancing: Mapping[int, int], identity: KafkaIdentity | None
    ) -> tuple[dict[str, HighWaterMark], dict[str, tuple[str, str]]]:
        """The cumulative marks after landing ``frame``, and this commit's event-id range per partition."""
        summary = frame.group_by("__kafka_partition").agg(
            pl.col("__event_id").min().alias("min_id"),
            pl.col("__event_id").max().alias("max_id"),
            pl.col("__resume_token").sort_by("__event_id").last().alias("max_token"),
        )
        ranges = {partition: (low, high, token) for partition, low, high, token in summary.iter_rows()}
        marks = dict(self._marks)
        event_ids: dict[str, tuple[str, str]] = {}
        for partition, last in advancing.items():
            key = f"{decoded.topic}/{partition}"
            previous = marks.get(key)
            event_id, token = (previous.event_id, previous.resume_token) if previous else ("", "")
            if partition in ranges:
                low, high, max_token = ranges[partition]
                event_ids[key] = (low, high)
                if high > event_id:
                    event_id, token = high, max_token
            elif previous is None:
                continue  # only poison so far: the app transaction records the offset
            marks[key] = HighWaterMark(
                decoded.topic,
                partition,
                last,
                event_id,
                token,
                identity.cluster_id if identity and identity.cluster_id else previous.cluster_id if previous else None,
                identity.topic_id if identity and identity.topic_id else previous.topic_id if previous else None,
            )
        return marks, event_ids

    def land(self, decoded: DecodedTopic, writer_id: str, identity: KafkaIdentity | None = None) -> CommitResult | None:
        """Commit the topic's new events and offsets.

        None when there is nothing to commit and nothing was filtered; a result without a
        version when every record had been landed before (its counts go to the ingest log).
        """
        conflicts = 0
        if self._table is None:
            self._table = self._open_or_create()
        for attempt in range(self.settings.max_commit_attempts):
            if attempt:
                self.refresh()
            pending = self._pending(decoded)
            self._log_rereads(decoded.topic, pending)
            if not pending.advancing:
                return self._result(decoded, pending, None, 0.0, {}, {}, None, conflicts) if pending.already_landed else None
            frame, advancing = pending.frame, pending.advancing
            ingested_at = datetime.now(UTC)
            resolved = self._typed(frame, decoded, ingested_at)
            marks, event_ids = self._marks_after(decoded, frame, advancing, identity)
            offsets = {
                f"{decoded.topic}/{partition}": (decoded.first_offsets[partition], last) for partition, last in advancing.items()
            }
            metadata = {
                lake.BATCH_KEY: lake.batch_metadata(offsets, event_ids),
                lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(marks),
                "lakehouse.writer": writer_id,
            }
            transactions = [Transaction(lake.app_id(decoded.topic, partition), last) for partition, last in advancing.items()]
            started = time.perf_counter()
            commit = CommitProperties(custom_metadata=metadata, app_transactions=transactions, max_commit_retries=0)
            try:
                version = self._commit(resolved, int(frame["__value_bytes"].sum()), commit)
            except CommitFailedError as error:
                conflicts += 1
                logger.info(
                    "bronze commit conflicted with another writer; retrying on the new snapshot",
                    extra={"table": self.uri, "attempt": attempt + 1, "error": str(error)},
                )
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))
                continue
            duration = time.perf_counter() - started
            self._marks = marks
            self._marks_version = version
            self.refresh()  # to the commit (or past it, marks included, if another writer followed)
            self._checkpoint_if_due(version)
            return self._result(decoded, pending, version, duration, offsets, event_ids, resolved, conflicts)
        raise FatalError(
            f"bronze commit to {self.uri} still conflicted after {self.settings.max_commit_attempts} attempts; "
            "too many writers on one table? Raise lake.max_commit_attempts"
        )

    def _commit(self, resolved: ResolvedBatch, size_hint: int, commit: CommitProperties) -> int:
        """Write the files and commit them on the loaded snapshot; returns the new version.

        A batch with new columns goes through deltalake's writer, which merges the schema;
        every other batch is written by pyarrow (bronze_writer.files) and committed as add
        actions. Either way the commit lands on exactly this snapshot or raises
        ``CommitFailedError``.
        """
        assert self._table is not None
        if resolved.needs_schema_merge:
            write_deltalake(
                self._table,
                resolved.data,
                mode="append",
                schema_mode="merge",
                target_file_size=self.settings.target_file_size,
                writer_properties=self._writer_properties,
                commit_properties=commit,
                post_commithook_properties=_NO_CHECKPOINT_HOOK,
            )
            return self._table.version()
        read_version = self._table.version()
        indexed = stats_columns(resolved.data.column_names, self._table.metadata().configuration, frozenset(PAYLOAD_COLUMNS))
        actions = self._files.write(resolved.data, indexed, size_hint)
        self._table.create_write_transaction(
            list(actions),
            "append",
            self._table.schema(),
            commit_properties=commit,
            post_commithook_properties=_NO_CHECKPOINT_HOOK,
        )
        return read_version + 1

    def _checkpoint_if_due(self, version: int) -> None:
        """Checkpoint the log (the loaded snapshot: this version or newer) every ``checkpoint_interval_commits`` versions.

        The commit is durable already, so a failed checkpoint is only logged: the next one
        due covers the same log, and readers replay the JSON commits meanwhile.
        """
        assert self._table is not None
        if version % self.settings.checkpoint_interval_commits:
            return
        try:
            self._table.create_checkpoint()
        except (DeltaError, OSError) as error:
            logger.warning(
                "checkpointing the Delta log failed", extra={"table": self.uri, "version": version, "error": str(error)}
            )
            return
        logger.info("checkpointed the Delta log", extra={"table": self.uri, "version": version})

    def _result(
        self,
        decoded: DecodedTopic,
        pending: Pending,
        version: int | None,
        duration: float,
        offsets: dict[str, tuple[int, int]],
        event_ids: dict[str, tuple[str, str]],
        resolved: ResolvedBatch | None,
        conflicts: int,
    ) -> CommitResult:
        frame = pending.frame if version is not None else pending.frame.clear()
        committed_at = datetime.now(UTC)
        oldest_cluster_time = cast("int | None", frame["__cluster_time_seconds"].min()) if frame.height else None
        if not offsets:  # nothing committed: say which offsets were read again
            offsets = {
                f"{decoded.topic}/{partition}": (first, last) for partition, (_count, first, last) in pending.rereads.items()
            }
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
            max_lag_seconds=committed_at.timestamp() - oldest_cluster_time if oldest_cluster_time is not None else None,
            duplicates_dropped=pending.duplicates,
            already_landed=pending.already_landed,
            ids_looked_up=pending.looked_up,
            files_read=pending.files_read,
            rescued=resolved.rescued if resolved else {},
            new_columns=resolved.new_columns if resolved else {},
            conflicts=conflicts,
        )

    def _log_rereads(self, topic: str, pending: Pending) -> None:
        """Records at offsets already landed: another writer landed them (a zombie, a racing replica)."""
        for partition, (count, first, last) in sorted(pending.rereads.items()):
            logger.warning(
                "records at offsets this table already landed were dropped (landed by another writer?)",
                extra={
                    "table": self.uri,
                    "topic": topic,
                    "partition": partition,
                    "count": count,
                    "first_offset": first,
                    "last_offset": last,
                },
            )

    def reset_offsets(
        self, topic: str, next_offsets: Mapping[int, int], identity: KafkaIdentity | None, reason: str, writer_id: str
    ) -> int:
        """Record that these partitions continue at these offsets: a commit without data.

        Offsets live in the app transactions, so this is the one place they move backwards
        (a recreated topic, another cluster). Marks keep their event ids: the events are
        the same collection's, and the dedupe still finds what the table holds.
        """
        if self._table is None:
            self._table = self._open_or_create()
        for attempt in range(self.settings.max_commit_attempts):
            if attempt:
                self.refresh()
            marks = dict(self._marks)
            changes = {}
            for partition, next_offset in next_offsets.items():
                key = f"{topic}/{partition}"
                previous = marks.get(key)
                changes[key] = {"from": self.landed_offset(topic, partition), "to": next_offset - 1}
                marks[key] = HighWaterMark(
                    topic,
                    partition,
                    next_offset - 1,
                    previous.event_id if previous else "",
                    previous.resume_token if previous else "",
                    identity.cluster_id if identity else None,
                    identity.topic_id if identity else None,
                )
            metadata = {
                lake.HIGH_WATER_MARKS_KEY: lake.encode_high_water_marks(marks),
                lake.OFFSET_RESET_KEY: json.dumps({"reason": reason, "landed_offsets": changes}, sort_keys=True),
                "lakehouse.writer": writer_id,
            }
            transactions = [Transaction(lake.app_id(topic, p), offset - 1) for p, offset in next_offsets.items()]
            assert self._table is not None
            try:
                write_deltalake(
                    self._table,
                    pa.schema(self._table.schema().to_arrow()).empty_table(),
                    mode="append",
                    commit_properties=CommitProperties(
                        custom_metadata=metadata, app_transactions=transactions, max_commit_retries=0
                    ),
                )
            except CommitFailedError:
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))
                continue
            self._marks = marks
            self._marks_version = self._table.version()
            logger.warning(
                "partition offsets reset in the bronze table",
                extra={"table": self.uri, "topic": topic, "reason": reason, "landed_offsets": changes},
            )
            return self._marks_version
        raise FatalError(f"resetting offsets of {self.uri} still conflicted after {self.settings.max_commit_attempts} attempts")


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
                    schema_mode="merge",  # a table written by an older release gains the new columns
                    commit_properties=CommitProperties(
                        app_transactions=transactions or None, max_commit_retries=0 if transactions else None
                    ),
                )
                return
            except CommitFailedError:
                time.sleep(random.uniform(0, 0.2))
        raise FatalError(f"could not append to {self.uri} after 50 attempts")


class DeadLetterTable(SideTable):
    """``<root>/bronze/_dead_letters``: each poison record once, even when its batch is re-read.

    Exact like the bronze dedupe: a letter above its partition's recorded offset (the app
    transaction) is new; one at or below it is looked up by topic, partition, offset and
    value, so letters of one batch may be written in several commits, in any order.
    """

    def __init__(self, lake_settings: LakeSettings) -> None:
        super().__init__(lake.dead_letter_uri(lake_settings.root), DEAD_LETTER_SCHEMA, lake_settings)

    def write(self, dead_letters: list[DeadLetter]) -> int:
        """Append the records not written before; returns how many."""
        written = 0

        def build(table: DeltaTable) -> tuple[pa.Table, list[Transaction]] | None:
            nonlocal written
            fresh: list[DeadLetter] = []
            maybe: list[DeadLetter] = []
            recorded: dict[tuple[str, int], int] = {}
            for letter in dead_letters:
                key = (letter.topic, letter.partition)
                if key not in recorded:
                    landed = table.transaction_version(lake.app_id(letter.topic, letter.partition))
                    recorded[key] = -1 if landed is None else landed
                (maybe if letter.offset <= recorded[key] else fresh).append(letter)
            if maybe:
                held = _held_letters(table, maybe)
                fresh += [letter for letter in maybe if (letter.topic, letter.partition, letter.offset, letter.value) not in held]
            written = len(fresh)
            if not fresh:
                return None
            newest = dict(recorded)
            for letter in fresh:
                key = (letter.topic, letter.partition)
                newest[key] = max(newest[key], letter.offset)
            transactions = [
                Transaction(lake.app_id(topic, partition), offset)
                for (topic, partition), offset in newest.items()
                if offset != recorded[(topic, partition)]
            ]
            return _dead_letter_table(fresh), transactions

        self.append(build)
        return written


def _held_letters(table: DeltaTable, letters: list[DeadLetter]) -> set[tuple[str, int, int, bytes | None]]:
    """Which of these records the dead-letter table holds (a small, statistics-pruned read)."""
    offsets = sorted({letter.offset for letter in letters})
    held = (
        pl.scan_delta(table)
        .filter(
            pl.col("topic").is_in(sorted({letter.topic for letter in letters}))
            & pl.col("offset").is_between(offsets[0], offsets[-1])
            & pl.col("offset").is_in(offsets)
        )
        .select("topic", "partition", "offset", "value")
        .collect()
    )
    return set(held.iter_rows())


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
    """``<root>/bronze/_ingest_log``: one row per bronze commit (the seed's logging table).

    Plus one row, without a table version, for a batch of a table whose every record had
    been landed before: nothing is filtered away without a count here.
    """

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
                "already_landed": [result.already_landed for result in results],
                "ids_looked_up": [result.ids_looked_up for result in results],
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
