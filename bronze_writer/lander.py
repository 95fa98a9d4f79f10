"""One micro-batch from Kafka records to Delta: decode, then dead letters, bronze commits, ingest log.

The two stages run in two threads (app.py), so one batch is decoded while the previous one
is written: decoding does not depend on any table's state, landing does.

Order matters for exactly once: dead letters first (exact, so a re-read batch does not
repeat them), then each bronze table (whose app transactions are what the writer seeks
to), then the ingest log, then the ``.landed`` markers of the claims the batch resolved
(lakehouse_common.claims: only a marked claim is collected). A record that typing cannot
handle is dead-lettered before the bronze commit that moves its partition past it. Kafka
offsets are committed by the caller, after all of this, for monitoring only.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bronze_writer.decode import DeadLetter, DecodedTopic, Records, decode_guarded
from bronze_writer.dedupe import EventIdIndex
from bronze_writer.errors import Action, PoisonRowsError, Stage, classify, describe
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.offsets import KafkaIdentity
from bronze_writer.settings import BronzeSettings
from bronze_writer.tables import BronzeTable, CommitResult, DeadLetterTable, IngestLog, namespace_for_topic
from lakehouse_common.claims import ClaimStore

logger = logging.getLogger(__name__)


@dataclass
class LandedBatch:
    """What a batch moved: per (topic, partition) the next offset to read, and the commits."""

    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    commits: list[CommitResult] = field(default_factory=list)
    dead_letters: int = 0
    already_landed: list[CommitResult] = field(default_factory=list)  # tables that had every record already


class Lander:
    """Owns the Delta side: one BronzeTable per topic, the dead-letter table and the ingest log."""

    def __init__(self, settings: BronzeSettings, metrics: BronzeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._tables: dict[str, BronzeTable] = {}
        self._index = EventIdIndex(settings.lake.dedupe_cache_bytes)
        self.dead_letters = DeadLetterTable(settings.lake)
        self.ingest_log = IngestLog(settings.lake)
        self.claims = ClaimStore(settings.lake.root, settings.lake.deltalake_options())
        self.identities: dict[str, KafkaIdentity] = {}  # per topic, set on assignment; recorded in the marks

    def table_for(self, topic: str) -> BronzeTable:
        table = self._tables.get(topic)
        if table is None:
            database, collection = namespace_for_topic(
                topic, self.settings.consumer.topic_prefix, self.settings.consumer.topic_tables
            )
            table = BronzeTable(self.settings.lake, database, collection, self._index)
            self._tables[topic] = table
        return table

    def tables(self) -> list[BronzeTable]:
        return list(self._tables.values())

    def start_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """Where each partition resumes: one past the offset its bronze table last landed."""
        table = self.table_for(topic)
        table.refresh()
        offsets: dict[int, int | None] = {}
        for partition in partitions:
            landed = table.landed_offset(topic, partition)
            offsets[partition] = None if landed is None else landed + 1
        return offsets

    def decode(self, batch: Mapping[str, Records]) -> list[DecodedTopic]:
        """Stage one, independent of any table's state: records to frames and dead letters."""
        return [decode_guarded(topic, records, self.claims) for topic, records in batch.items() if len(records)]

    def land(self, decoded: list[DecodedTopic], retry_seconds: float) -> LandedBatch:
        """Stage two: land a decoded batch, retrying storage errors with backoff for up to ``retry_seconds``."""
        deadline = time.monotonic() + retry_seconds
        attempt = 0
        while True:
            try:
                return self._land_once(decoded)
            except BaseException as error:  # classified: only storage hiccups are retried here
                if classify(error, Stage.STORAGE) is not Action.RETRY or time.monotonic() >= deadline:
                    raise
                attempt += 1
                delay = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                logger.warning(
                    "landing failed; retrying",
                    extra={"attempt": attempt, "delay_seconds": round(delay, 2), "error": describe(error)},
                )
                time.sleep(delay)

    def reset_offsets(self, topic: str, next_offsets: Mapping[int, int], reason: str) -> None:
        """Record in the topic's bronze table that these partitions continue at these offsets."""
        table = self.table_for(topic)
        table.refresh()
        table.reset_offsets(topic, next_offsets, self.identities.get(topic), reason, self.settings.replica_name)

    def _land_once(self, decoded: list[DecodedTopic]) -> LandedBatch:
        landed = LandedBatch()
        landed.dead_letters = self._write_dead_letters([letter for topic in decoded for letter in topic.dead_letters])
        for topic in decoded:
            result = self._land_topic(topic, landed)
            for partition, last in topic.last_offsets.items():
                landed.next_offsets[(topic.topic, partition)] = last + 1
            if result is None:
                continue
            if result.version is None:
                landed.already_landed.append(result)
            else:
                landed.commits.append(result)
            self._observe(result)
        self.ingest_log.record(landed.commits + landed.already_landed, self.settings.replica_name)
        self._mark_claims_landed(decoded)
        return landed

    def _mark_claims_landed(self, decoded: list[DecodedTopic]) -> None:
        """Every claim the batch resolved is now in bronze (landed, a duplicate of a landed event, or a dead letter with its bytes)."""
        digests = [digest for topic in decoded for digest in topic.claims]
        if not digests:
            return
        self.claims.mark_landed(digests, {"writer": self.settings.replica_name})
        for topic in decoded:
            if topic.claims:
                table = self.table_for(topic.topic)
                self.metrics.claims_resolved.labels(f"{table.database}.{table.collection}").inc(len(topic.claims))

    def _land_topic(self, topic: DecodedTopic, landed: LandedBatch) -> CommitResult | None:
        """Commit one topic's part; rows typing cannot handle are dead-lettered first, then the rest lands."""
        table = self.table_for(topic.topic)
        while True:
            try:
                return table.land(topic, self.settings.replica_name, self.identities.get(topic.topic))
            except PoisonRowsError as poison:
                landed.dead_letters += self._write_dead_letters(topic.dead_letter(poison.rows))

    def _write_dead_letters(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        written = self.dead_letters.write(letters)
        for letter in letters:
            self.metrics.dead_letters.labels(letter.topic, letter.error_type).inc()
        for letter in letters[:20]:  # each one with its position; a flood is summarized below
            logger.warning(
                "record sent to the dead-letter table",
                extra={"topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
                       "error_type": letter.error_type, "error": letter.error[:500], "table": self.dead_letters.uri},
            )
        if len(letters) > 20:
            logger.warning("more records sent to the dead-letter table", extra={"count": len(letters) - 20})
        return written

    def _observe(self, result: CommitResult) -> None:
        name = f"{result.database}.{result.collection}"
        metrics = self.metrics
        metrics.duplicates_dropped.labels(name).inc(result.duplicates_dropped)
        metrics.already_landed.labels(name).inc(result.already_landed)
        metrics.ids_looked_up.labels(name).inc(result.ids_looked_up)
        metrics.dedupe_files_read.labels(name).inc(result.files_read)
        if result.version is None:
            return
        metrics.rows.labels(name).inc(result.rows)
        metrics.bytes.labels(name).inc(result.bytes)
        metrics.commits.labels(name).inc()
        metrics.commit_duration.labels(name).observe(result.duration_seconds)
        metrics.commit_conflicts.labels(name).inc(result.conflicts)
        metrics.new_columns.labels(name).inc(len(result.new_columns))
        for field_name, count in result.rescued.items():
            metrics.rescued_values.labels(name, field_name).inc(count)
        if result.max_lag_seconds is not None:
            metrics.end_to_end_lag.labels(name).observe(result.max_lag_seconds)
            metrics.last_end_to_end_lag.labels(name).set(result.max_lag_seconds)
        logger.info(
            "bronze commit",
            extra={
                "table": result.table_uri,
                "version": result.version,
                "rows": result.rows,
                "bytes": result.bytes,
                "duplicates_dropped": result.duplicates_dropped,
                "already_landed": result.already_landed or None,
                "ids_looked_up": result.ids_looked_up or None,
                "files_read": result.files_read or None,
                "rescued": result.rescued or None,
                "new_columns": {column: kind.family for column, kind in result.new_columns.items()} or None,
                "conflicts": result.conflicts,
                "duration_ms": round(result.duration_seconds * 1000, 1),
            },
        )


__all__ = ["LandedBatch", "Lander"]
