"""Checkpoints in a compacted Kafka topic, keyed by stream (as Kafka Connect stores offsets).

Two kinds of record, JSON values, keyed ``<service>/stream/<stream id>`` and
``<service>/snapshot/<stream id>``:

- a stream checkpoint: the position after the last acknowledged event (or the post-batch
  token of a quiet stream: a heartbeat);
- a snapshot state: the position the snapshot was taken at and, per collection, whether
  its copy finished and which attempt is running (so an interrupted snapshot resumes
  without copying finished collections again).

Records are written by the publisher only after the events they cover are acknowledged
(at-least-once) or in the same transaction as those events (exactly-once). Reading uses
``read_committed``, so aborted transactions never move a checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cdc_service.positions import Position
from lakehouse_common.errors import TransientError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StreamCheckpoint:
    """Where one stream resumes."""

    stream_id: str
    position: Position
    kind: str  # event, heartbeat, snapshot, start, replay, manual
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
                "kind": self.kind,
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
            kind=data.get("kind", "event"),
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

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": CHECKPOINT_FORMAT_VERSION,
                "type": "snapshot",
                "stream": self.stream_id,
                "position": self.position.to_dict(),
                "collections": {
                    name: {"done": p.done, "attempt": p.attempt, "copied": p.copied}
                    for name, p in sorted(self.collections.items())
                },
                "cluster_time": list(self.cluster_time),
                "completed": self.completed,
                "started_at": self.started_at,
                "snapshot_id": self.snapshot_id,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotState:
        return cls(
            stream_id=data["stream"],
            position=Position.from_dict(data["position"]),
            collections={name: CollectionProgress(**value) for name, value in data.get("collections", {}).items()},
            cluster_time=tuple(data.get("cluster_time") or (0, 0)),  # type: ignore[arg-type]
            completed=bool(data.get("completed")),
            started_at=float(data.get("started_at", 0.0)),
            snapshot_id=str(data.get("snapshot_id", "")),
        )


@dataclass
class Checkpoints:
    """Everything the checkpoint topic holds for one service."""

    streams: dict[str, StreamCheckpoint] = field(default_factory=dict)
    snapshots: dict[str, SnapshotState] = field(default_factory=dict)


def stream_key(service: str, stream_id: str) -> bytes:
    return f"{service}/stream/{stream_id}".encode()


def snapshot_key(service: str, stream_id: str) -> bytes:
    return f"{service}/snapshot/{stream_id}".encode()


def load_checkpoints(
    consumer_config: Mapping[str, str], topic: str, service: str, timeout: float = 30.0
) -> Checkpoints:
    """Read the checkpoint topic to its end (committed records only); the last record per key wins."""
    config = {
        **consumer_config,
        "group.id": f"cdc-checkpoint-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    }
    consumer = Consumer(config)
    prefix = f"{service}/".encode()
    checkpoints = Checkpoints()
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None:
            return checkpoints
        partitions = []
        for partition in topic_metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                partitions.append(TopicPartition(topic, partition, low))
        if not partitions:
            return checkpoints
        consumer.assign(partitions)
        remaining = {tp.partition for tp in partitions}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise TransientError(f"reading checkpoint topic {topic} timed out")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise TransientError(f"reading checkpoint topic {topic}: {message.error()}")
            key = message.key() or b""
            if not key.startswith(prefix):
                continue
            _apply(checkpoints, key[len(prefix) :].decode(), message.value())
    finally:
        consumer.close()
    return checkpoints


def _apply(checkpoints: Checkpoints, suffix: str, value: bytes | None) -> None:
    kind, _, stream_id = suffix.partition("/")
    target: dict[str, Any] = checkpoints.streams if kind == "stream" else checkpoints.snapshots
    if kind not in ("stream", "snapshot"):
        return
    if value is None:
        target.pop(stream_id, None)
        return
    try:
        data = json.loads(value)
        if kind == "stream":
            checkpoints.streams[stream_id] = StreamCheckpoint.from_dict(data)
        else:
            checkpoints.snapshots[stream_id] = SnapshotState.from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        logger.error("ignoring an unreadable checkpoint record", extra={"key": suffix, "error": str(error)})


__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "Checkpoints",
    "CollectionProgress",
    "SnapshotState",
    "StreamCheckpoint",
    "load_checkpoints",
    "snapshot_key",
    "stream_key",
]
