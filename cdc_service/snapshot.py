"""The initial copy: every existing document as a ``snapshot`` record, consistent with the stream.

The stream's position is taken first (a change stream opened at 'now' reports it as its
post-batch resume token); the collections are then copied, in parallel, and the stream
resumes after that position, so every change made during the copy arrives afterwards as
an event: no gap, no loss. Snapshot records carry ``<position>.<attempt>.<ordinal>`` event
ids (``lakehouse_common.contract``): a collection copied again after a crash is copied under
a higher attempt number, so its records get ids above every record of the interrupted
attempt, however many attempts came before, and none reuses an id of another document.
Once a collection's copy has published every record, a snapshot-complete marker under the
same position and attempt says so (``build_snapshot_complete_event``): silver closes the
documents the copy did not find.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.read_concern import ReadConcern

from cdc_service.change_stream import RAW_CODEC_OPTIONS
from cdc_service.publisher import EncodedBatch, encode_batch
from lakehouse_common.contract import ValueFormat, snapshot_complete_event, snapshot_event

logger = logging.getLogger(__name__)

# BSON element types whose value has a fixed size, in bytes.
_FIXED_SIZES = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}
_ID_NAME = b"_id\x00"


@dataclass(frozen=True)
class CopyTask:
    """One collection to copy for one stream's snapshot."""

    stream_id: str
    database: str
    collection: str
    position_id: str
    attempt: int
    cluster_time: tuple[int, int]

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"


@dataclass
class SnapshotBatch:
    task: CopyTask
    events: EncodedBatch
    copied: int


@dataclass
class SnapshotCopied:
    task: CopyTask
    copied: int


def document_key_bytes(raw: bytes) -> bytes | None:
    """``{_id: ...}`` as BSON, cut from a stored document whose first field is ``_id``.

    MongoDB stores ``_id`` first, so the key comes out of the bytes without decoding the
    document; None means "decode it instead" (an unusual layout or type).
    """
    if raw[5:9] != _ID_NAME:
        return None
    element_type = raw[4]
    start = 9
    if element_type in _FIXED_SIZES:
        end = start + _FIXED_SIZES[element_type]
    elif element_type in (0x02, 0x0D, 0x0E):
        end = start + 4 + int.from_bytes(raw[start : start + 4], "little")
    elif element_type in (0x03, 0x04):
        end = start + int.from_bytes(raw[start : start + 4], "little")
    elif element_type == 0x05:
        end = start + 5 + int.from_bytes(raw[start : start + 4], "little")
    else:
        return None
    element = raw[4:end]
    return (len(element) + 5).to_bytes(4, "little") + element + b"\x00"


_MISSING = object()


def _value_at(document: RawBSONDocument, dotted: str) -> Any:
    """The value at a dotted path, or ``_MISSING`` (an explicit null is a value)."""
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, (RawBSONDocument, dict)) or part not in value:
            return _MISSING
        value = value[part]
    return value


def document_key(raw: RawBSONDocument, shard_key: list[str] | None) -> RawBSONDocument | dict[str, Any]:
    """The ``documentKey`` MongoDB's change events give this document, field for field, in order.

    On a sharded collection that is the shard key's fields in the shard key's order, each
    named by its (dotted) path, leaving out fields the document lacks, then ``_id`` unless
    the shard key holds it already (the server's ``DocumentKey::getShardKeyAndId``). The same
    bytes give the same Kafka key, so a document's snapshot record and its change events
    share a partition.
    """
    if not shard_key:
        fast = document_key_bytes(raw.raw)
        if fast is not None:
            return RawBSONDocument(fast, RAW_CODEC_OPTIONS)
        return {"_id": raw["_id"]}
    key: dict[str, Any] = {}
    for field in shard_key:
        value = _value_at(raw, field)
        if value is not _MISSING:
            key[field] = value
    if "_id" not in shard_key:
        key["_id"] = raw["_id"]
    return key


def shard_key_fields(client: MongoClient, namespace: str) -> list[str] | None:
    """The shard key of a sharded collection (from config.collections), else None."""
    try:
        entry = client["config"]["collections"].find_one({"_id": namespace, "dropped": {"$ne": True}})
    except Exception:  # not a sharded cluster, or no rights on config: unsharded it is
        return None
    if not entry or "key" not in entry:
        return None
    return list(entry["key"].keys())


def build_snapshot_events(
    documents: Iterable[RawBSONDocument], task: CopyTask, first_ordinal: int, shard_key: list[str] | None
) -> list[bytes]:
    """Snapshot records (BSON) for consecutive documents of one copy attempt, numbered from ``first_ordinal``."""
    cluster_time, wall_time = _event_times(task)
    return [
        snapshot_event(
            document,
            database=task.database,
            collection=task.collection,
            document_key=document_key(document, shard_key),
            position=task.position_id,
            ordinal=first_ordinal + index,
            attempt=task.attempt,
            cluster_time=cluster_time,
            wall_time=wall_time,
        )
        for index, document in enumerate(documents)
    ]


def build_snapshot_complete_event(task: CopyTask, documents: int) -> bytes:
    """The marker (BSON) that ``task``'s copy attempt published all its ``documents`` records.

    Under the records' position and attempt, so its absence position sorts below every one of
    them (``lakehouse_common.contract.absence_position``).
    """
    cluster_time, wall_time = _event_times(task)
    return snapshot_complete_event(
        database=task.database,
        collection=task.collection,
        position=task.position_id,
        attempt=task.attempt,
        documents=documents,
        cluster_time=cluster_time,
        wall_time=wall_time,
    )


def _event_times(task: CopyTask) -> tuple[bson.Timestamp, datetime]:
    """A copy's events carry its position's cluster time, and that time as their wall time."""
    return bson.Timestamp(*task.cluster_time), datetime.fromtimestamp(task.cluster_time[0], UTC)


def copy_collection(
    client: MongoClient,
    task: CopyTask,
    emit: Callable[[Any], bool],
    stop: threading.Event,
    batch_size: int,
    value_format: ValueFormat,
) -> None:
    """Copy one collection; ``emit`` hands each serialized batch on (False when the service stops)."""
    # Majority reads: a copied document can never be rolled back after a failover.
    collection = client[task.database].get_collection(
        task.collection, codec_options=RAW_CODEC_OPTIONS, read_concern=ReadConcern("majority")
    )
    shard_key = shard_key_fields(client, task.namespace)
    ordinal = 1
    copied = 0
    cursor = collection.find_raw_batches({}, batch_size=batch_size)
    try:
        for raw_batch in cursor:
            if stop.is_set():
                return
            documents = bson.decode_all(raw_batch, RAW_CODEC_OPTIONS)
            events = build_snapshot_events(documents, task, ordinal, shard_key)
            ordinal += len(events)
            copied += len(events)
            if not emit(SnapshotBatch(task, encode_batch(events, value_format), copied)):
                return
    finally:
        cursor.close()
    emit(SnapshotCopied(task, copied))


class SnapshotProgress:
    """Counts and rate per collection: a rich progress bar on a terminal, log lines otherwise."""

    def __init__(self, mode: str, log_interval: float) -> None:
        use_bar = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self._log_interval = log_interval
        self._started: dict[str, float] = {}
        self._copied: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._last_log = time.monotonic()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if use_bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} docs/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()

    def begin(self, namespace: str, total: int) -> None:
        self._started[namespace] = time.monotonic()
        self._copied[namespace] = 0
        self._totals[namespace] = total
        if self._progress is not None:
            self._tasks[namespace] = self._progress.add_task(namespace, total=total or None, rate="0")
        logger.info("snapshot copy started", extra={"namespace": namespace, "estimated_documents": total})

    def advance(self, namespace: str, copied: int) -> None:
        self._copied[namespace] = copied
        rate = self.rate(namespace)
        if self._progress is not None and namespace in self._tasks:
            self._progress.update(self._tasks[namespace], completed=copied, rate=f"{rate:,.0f}")
        elif time.monotonic() - self._last_log >= self._log_interval:
            self._last_log = time.monotonic()
            for name, count in self._copied.items():
                logger.info(
                    "snapshot progress",
                    extra={
                        "namespace": name,
                        "copied": count,
                        "estimated_documents": self._totals.get(name),
                        "docs_per_second": round(self.rate(name)),
                    },
                )

    def finish(self, namespace: str, copied: int) -> None:
        self.advance(namespace, copied)
        if self._progress is not None and namespace in self._tasks:
            self._progress.update(self._tasks[namespace], total=max(copied, 1), completed=max(copied, 1))
        elapsed = time.monotonic() - self._started.get(namespace, time.monotonic())
        logger.info(
            "snapshot copy finished",
            extra={
                "namespace": namespace,
                "copied": copied,
                "seconds": round(elapsed, 3),
                "docs_per_second": round(self.rate(namespace)),
            },
        )

    def rate(self, namespace: str) -> float:
        elapsed = time.monotonic() - self._started.get(namespace, time.monotonic())
        return self._copied.get(namespace, 0) / elapsed if elapsed > 0 else 0.0

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


__all__ = [
    "CopyTask",
    "SnapshotBatch",
    "SnapshotCopied",
    "SnapshotProgress",
    "build_snapshot_complete_event",
    "build_snapshot_events",
    "copy_collection",
    "document_key",
    "document_key_bytes",
    "shard_key_fields",
]
