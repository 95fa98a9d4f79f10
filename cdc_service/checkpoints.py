"""Checkpoints in a compacted Kafka topic, keyed by stream (as Kafka Connect stores offsets).

Four kinds of record, JSON values:

- ``<service>/stream/<stream id>``, a stream checkpoint: the position after the last
  acknowledged event (or the post-batch token of a quiet stream: a heartbeat);
- ``<service>/snapshot/<stream id>``, a snapshot's header: the position it was taken at,
  its id and whether it completed;
- ``<service>/snapshot-collection/["<stream id>","<namespace>"]``, one per collection of a
  snapshot: whether its copy finished, and the highest copy attempt ever begun for it (so
  an interrupted snapshot resumes without copying finished collections again, and a new
  attempt never reuses an earlier attempt's ids);
- ``<service>/copy/"<namespace>"``, a collection's chunked copy while streaming (on signal,
  or for a collection that came into scope): the cursor after its last durable chunk (the
  last ``_id`` in BSON order), chunks and documents so far, its filter, its signal, and the
  first chunk's low watermark (every record of the copy sorts above it). Written in the
  commit that makes the chunk durable, so a crash re-reads one chunk at most.

A snapshot of any number of collections therefore writes records of a few hundred bytes
each, far below the checkpoint topic's ``max.message.bytes``, and each commit rewrites
only the collections that changed. A collection record of another snapshot than its
header's (the header was replaced) still counts for its attempt number, never for "done".

Records are written by the publisher only after the events they cover are acknowledged
(at-least-once) or in the same transaction as those events (exactly-once). Reading uses
``read_committed``, so aborted transactions never move a checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cdc_service.positions import Position
from lakehouse_common.errors import TransientError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointKind(StrEnum):
    """What moved a stream checkpoint (the ``kind`` of its record and the metrics label)."""

    EVENT = "event"  # acknowledged events
    HEARTBEAT = "heartbeat"  # a quiet stream's post-batch token
    SNAPSHOT = "snapshot"  # the position a finished snapshot was taken at
    START = "start"  # where a stream without a checkpoint began
    REPLAY = "replay"  # written by `cdc-service replay`
    MANUAL = "manual"  # written by `cdc-service checkpoints set`


@dataclass(frozen=True)
class StreamCheckpoint:
    """Where one stream resumes."""

    stream_id: str
    position: Position
    kind: CheckpointKind
    event_id: str | None = None
    cluster_time: tuple[int, int] | None = None
    events_published: int = 0
    written_at: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": CHECKPOINT_FORMAT_VERSION,
                "type": "stream",
                "stream": self.stream_id,
                "position": self.position.to_dict(),
                "kind": str(self.kind),
                "event_id": self.event_id,
                "cluster_time": self.cluster_time,
                "events_published": self.events_published,
                "written_at": self.written_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamCheckpoint:
        cluster_time = data.get("cluster_time")
        return cls(
            stream_id=data["stream"],
            position=Position.from_dict(data["position"]),
            kind=CheckpointKind(data.get("kind", CheckpointKind.EVENT)),
            event_id=data.get("event_id"),
            cluster_time=(int(cluster_time[0]), int(cluster_time[1])) if cluster_time else None,
            events_published=int(data.get("events_published", 0)),
            written_at=float(data.get("written_at", 0.0)),
        )


@dataclass(frozen=True)
class CollectionProgress:
    """One collection's copy within a snapshot."""

    done: bool = False
    attempt: int = 0
    copied: int = 0


@dataclass(frozen=True)
class SnapshotState:
    """A stream's snapshot: its position and each collection's progress."""

    stream_id: str
    position: Position
    collections: dict[str, CollectionProgress]
    cluster_time: tuple[int, int] = (0, 0)
    completed: bool = False
    started_at: float = field(default_factory=time.time)
    snapshot_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def with_collection(self, namespace: str, progress: CollectionProgress) -> SnapshotState:
        return replace(self, collections={**self.collections, namespace: progress})

    def header_json(self) -> bytes:
        """The header record: everything but the collections (they have a record each)."""
        return json.dumps(
            {
                "version": CHECKPOINT_FORMAT_VERSION,
                "type": "snapshot",
                "stream": self.stream_id,
                "position": self.position.to_dict(),
                "collection_count": len(self.collections),
                "cluster_time": list(self.cluster_time),
                "completed": self.completed,
                "started_at": self.started_at,
                "snapshot_id": self.snapshot_id,
            },
            separators=(",", ":"),
        ).encode()

    def collection_json(self, namespace: str) -> bytes:
        progress = self.collections[namespace]
        return json.dumps(
            {
                "version": CHECKPOINT_FORMAT_VERSION,
                "type": "snapshot-collection",
                "stream": self.stream_id,
                "namespace": namespace,
                "snapshot_id": self.snapshot_id,
                "done": progress.done,
                "attempt": progress.attempt,
                "copied": progress.copied,
            },
            separators=(",", ":"),
        ).encode()

    def records(self, service: str, namespaces: Iterable[str] | None = None) -> dict[bytes, bytes | None]:
        """The header and the records of ``namespaces`` (all collections when None), keyed for the topic."""
        records: dict[bytes, bytes | None] = {}
        for namespace in sorted(self.collections if namespaces is None else namespaces):
            records[snapshot_collection_key(service, self.stream_id, namespace)] = self.collection_json(namespace)
        records[snapshot_key(service, self.stream_id)] = self.header_json()  # last: after its collections
        return records

    def to_json(self) -> bytes:
        """The whole state in one document, for people and ``checkpoint show --json``."""
        data = json.loads(self.header_json())
        data["collections"] = {
            name: {"done": p.done, "attempt": p.attempt, "copied": p.copied} for name, p in sorted(self.collections.items())
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotState:
        """A header (collections come from their own records) or a state of the former one-record format."""
        return cls(
            stream_id=data["stream"],
            position=Position.from_dict(data["position"]),
            collections={name: CollectionProgress(**value) for name, value in data.get("collections", {}).items()},
            cluster_time=tuple(data.get("cluster_time") or (0, 0)),
            completed=bool(data.get("completed")),
            started_at=float(data.get("started_at", 0.0)),
            snapshot_id=str(data.get("snapshot_id", "")),
        )


class CopyState(StrEnum):
    """Where a chunked copy stands."""

    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class CopyProgress:
    """One collection's chunked copy while streaming (``cdc_service.incremental``).

    ``bracket`` and ``last_id`` are the cursor: the BSON type bracket being read and the
    last ``_id`` read in it (``{_id: ...}`` as base64 BSON, exact for every type; None at a
    bracket's start). ``attempt`` numbers the copies of the namespace (its records' ids
    carry it); ``start_position`` is the first durable chunk's low watermark, and
    ``start_cluster_time`` its cluster time: where and when the copy's snapshot-complete
    marker sits.
    """

    namespace: str
    stream_id: str
    copy_id: str
    attempt: int
    reason: str  # signal, new-collection
    filter: str | None = None  # canonical Extended JSON of the query document
    signal_id: str | None = None  # canonical Extended JSON of the signal document's _id
    bracket: int = 0
    last_id: str | None = None
    chunks: int = 0
    copied: int = 0
    superseded: int = 0
    estimate: int | None = None
    start_position: str | None = None
    start_cluster_time: tuple[int, int] | None = None
    state: str = CopyState.RUNNING.value
    detail: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state == CopyState.RUNNING

    def to_json(self) -> bytes:
        return json.dumps({"version": CHECKPOINT_FORMAT_VERSION, "type": "copy", **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CopyProgress:
        names = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in names}
        if values.get("start_cluster_time") is not None:  # a JSON list
            values["start_cluster_time"] = tuple(values["start_cluster_time"])
        return cls(**values)


@dataclass
class Checkpoints:
    """Everything the checkpoint topic holds for one service."""

    streams: dict[str, StreamCheckpoint] = field(default_factory=dict)
    snapshots: dict[str, SnapshotState] = field(default_factory=dict)
    copies: dict[str, CopyProgress] = field(default_factory=dict)


def stream_key(service: str, stream_id: str) -> bytes:
    return f"{service}/stream/{stream_id}".encode()


def snapshot_key(service: str, stream_id: str) -> bytes:
    return f"{service}/snapshot/{stream_id}".encode()


def snapshot_collection_key(service: str, stream_id: str, namespace: str) -> bytes:
    """JSON names the pair unambiguously, whatever characters stream ids and namespaces hold."""
    return f"{service}/snapshot-collection/{json.dumps([stream_id, namespace], ensure_ascii=False)}".encode()


def copy_key(service: str, namespace: str) -> bytes:
    return f"{service}/copy/{json.dumps(namespace, ensure_ascii=False)}".encode()


def load_checkpoints(consumer_config: Mapping[str, str], topic: str, service: str, timeout: float = 30.0) -> Checkpoints:
    """Read the checkpoint topic to its end (committed records only); the last record per key wins.

    The end is where the topic ended when reading began: a running service keeps writing,
    and end-of-partition may then never come.
    """
    config = {
        **consumer_config,
        "group.id": f"cdc-checkpoint-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    consumer = Consumer(config)
    records: list[tuple[bytes, bytes | None]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None:
            return Checkpoints()
        partitions = []
        ends: dict[int, int] = {}
        for partition in topic_metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                partitions.append(TopicPartition(topic, partition, low))
                ends[partition] = high
        if not partitions:
            return Checkpoints()
        consumer.assign(partitions)
        remaining = set(ends)
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"reading checkpoint topic {topic} timed out")
            message = consumer.poll(0.5)
            error = message.error() if message is not None else None
            if message is not None and error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise TransientError(f"reading checkpoint topic {topic}: {error}")
                remaining.discard(cast(int, message.partition()))  # an end-of-partition event names its partition
            elif message is not None:
                records.append((message.key() or b"", message.value()))
            # The position passes transaction markers too, which are never delivered.
            for position in consumer.position([TopicPartition(topic, partition) for partition in remaining]):
                if position.offset >= ends[position.partition]:
                    remaining.discard(position.partition)
    finally:
        consumer.close()
    return fold_records(service, records)


def fold_records(service: str, records: Iterable[tuple[bytes, bytes | None]]) -> Checkpoints:
    """What the records of the checkpoint topic, in topic order, say about ``service``.

    The last record per key wins and a value of None (a tombstone) removes its key, as
    compaction would; records of other services and unreadable ones are skipped (logged).
    """
    prefix = f"{service}/".encode()
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key.startswith(prefix):
            latest[key] = value
    checkpoints = Checkpoints()
    collection_records: dict[str, dict[str, Mapping[str, Any]]] = {}
    for key, value in latest.items():
        if value is None:
            continue
        suffix = key[len(prefix) :].decode(errors="replace")
        kind, _, rest = suffix.partition("/")
        try:
            if kind == "stream":
                checkpoints.streams[rest] = StreamCheckpoint.from_dict(json.loads(value))
            elif kind == "snapshot":
                checkpoints.snapshots[rest] = SnapshotState.from_dict(json.loads(value))
            elif kind == "snapshot-collection":
                stream_id, namespace = json.loads(rest)
                collection_records.setdefault(stream_id, {})[namespace] = json.loads(value)
            elif kind == "copy":
                checkpoints.copies[json.loads(rest)] = CopyProgress.from_dict(json.loads(value))
        except (ValueError, KeyError, TypeError) as error:
            logger.error("ignoring an unreadable checkpoint record", extra={"key": suffix, "error": str(error)})
    for stream_id, state in checkpoints.snapshots.items():
        checkpoints.snapshots[stream_id] = _with_collection_records(state, collection_records.get(stream_id, {}))
    return checkpoints


def _with_collection_records(state: SnapshotState, records: Mapping[str, Mapping[str, Any]]) -> SnapshotState:
    """The snapshot's collections from their records: progress of its own snapshot, attempts of any."""
    collections = dict(state.collections)  # a state of the former one-record format brings them inline
    for namespace, record in records.items():
        previous = collections.get(namespace, CollectionProgress())
        attempt = max(int(record.get("attempt", 0)), previous.attempt)
        if record.get("snapshot_id") == state.snapshot_id:
            collections[namespace] = CollectionProgress(bool(record.get("done")), attempt, int(record.get("copied", 0)))
        else:
            collections[namespace] = replace(previous, attempt=attempt)
    return replace(state, collections=collections)


__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointKind",
    "Checkpoints",
    "CollectionProgress",
    "CopyProgress",
    "CopyState",
    "copy_key",
    "SnapshotState",
    "StreamCheckpoint",
    "fold_records",
    "load_checkpoints",
    "snapshot_collection_key",
    "snapshot_key",
    "stream_key",
]
