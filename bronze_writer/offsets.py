"""Offset discontinuities: when Kafka no longer continues where bronze stopped, say so.

Bronze records, per partition, the last offset it landed (the app transaction) and the
Kafka cluster and topic ids it read them from (the marks). Before reading a partition, and
whenever the consumer finds its position out of range (``auto.offset.reset=error``), the
writer compares that with what Kafka reports now:

- ``behind``: the partition ends below the next offset bronze expects: the topic was
  deleted and recreated, or the writer points at another cluster;
- ``retention``: the partition starts above it: records were deleted by retention before
  they were landed (a writer stopped for too long);
- ``topic_replaced`` / ``cluster_replaced``: the ids differ, even though the offsets fit.

Each one is logged at ERROR with both offsets and counted (``bronze_offset_discontinuities_total``);
then ``consumer.offset_discontinuity`` decides: ``fail`` (default) stops the writer with the
command that resets the partition, ``accept`` records the reset and lands from the
partition's first available offset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from lakehouse_common.lake import HighWaterMark

logger = logging.getLogger(__name__)

RESET_COMMAND = "bronze-writer reset-offsets"


@dataclass(frozen=True)
class KafkaIdentity:
    """Which cluster and which incarnation of a topic offsets belong to (None: unknown)."""

    cluster_id: str | None
    topic_id: str | None


class DiscontinuityKind(StrEnum):
    BEHIND = "behind"
    RETENTION = "retention"
    TOPIC_REPLACED = "topic_replaced"
    CLUSTER_REPLACED = "cluster_replaced"


_EXPLANATIONS = {
    DiscontinuityKind.BEHIND: "the partition now ends below it: the topic was deleted and recreated, or this is "
    "another Kafka cluster",
    DiscontinuityKind.RETENTION: "the partition now starts above it: records were deleted (retention) before bronze "
    "landed them; `cdc-service replay --from-bronze` publishes them again",
    DiscontinuityKind.TOPIC_REPLACED: "the topic has another id than the one bronze read from: it was deleted and "
    "recreated",
    DiscontinuityKind.CLUSTER_REPLACED: "the Kafka cluster has another id than the one bronze read from",
}


@dataclass(frozen=True)
class Discontinuity:
    """One partition whose offsets do not continue from what bronze landed."""

    topic: str
    partition: int
    kind: DiscontinuityKind
    next_offset: int  # the offset bronze expects to read next (last landed + 1)
    low: int  # the partition's first available offset now
    high: int  # the partition's end offset now (the next offset to be written)
    recorded: KafkaIdentity
    current: KafkaIdentity

    @property
    def reset_command(self) -> str:
        return f"{RESET_COMMAND} --topic {self.topic} --partition {self.partition} --to earliest"

    def describe(self) -> str:
        identity = ""
        if self.kind is DiscontinuityKind.TOPIC_REPLACED:
            identity = f" (topic id {self.recorded.topic_id} -> {self.current.topic_id})"
        elif self.kind is DiscontinuityKind.CLUSTER_REPLACED:
            identity = f" (cluster id {self.recorded.cluster_id} -> {self.current.cluster_id})"
        return (
            f"offset discontinuity on {self.topic}[{self.partition}]: bronze landed up to offset {self.next_offset - 1} "
            f"(next {self.next_offset}), Kafka now has offsets {self.low} to {self.high - 1}{identity}; "
            f"{_EXPLANATIONS[self.kind]}"
        )

    def log_fields(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "kind": self.kind.value,
            "bronze_next_offset": self.next_offset,
            "kafka_low_offset": self.low,
            "kafka_high_offset": self.high,
            "recorded_cluster_id": self.recorded.cluster_id,
            "cluster_id": self.current.cluster_id,
            "recorded_topic_id": self.recorded.topic_id,
            "topic_id": self.current.topic_id,
        }


def find_discontinuity(
    topic: str,
    partition: int,
    next_offset: int,
    mark: HighWaterMark | None,
    watermarks: tuple[int, int],
    current: KafkaIdentity,
) -> Discontinuity | None:
    """The discontinuity of one partition bronze has landed before, or None when Kafka continues it."""
    low, high = watermarks
    recorded = KafkaIdentity(mark.cluster_id if mark else None, mark.topic_id if mark else None)
    kind: DiscontinuityKind | None = None
    if recorded.cluster_id and current.cluster_id and recorded.cluster_id != current.cluster_id:
        kind = DiscontinuityKind.CLUSTER_REPLACED
    elif recorded.topic_id and current.topic_id and recorded.topic_id != current.topic_id:
        kind = DiscontinuityKind.TOPIC_REPLACED
    elif high < next_offset:
        kind = DiscontinuityKind.BEHIND
    elif low > next_offset:
        kind = DiscontinuityKind.RETENTION
    if kind is None:
        return None
    return Discontinuity(topic, partition, kind, next_offset, low, high, recorded, current)


class KafkaInspector:
    """Asks the cluster for its id, topic ids and partition watermarks, batched per call."""

    def __init__(self, admin: AdminClient, timeout: float = 15.0) -> None:
        self._admin = admin
        self._timeout = timeout

    def identities(self, topics: Iterable[str]) -> dict[str, KafkaIdentity]:
        names = sorted(set(topics))
        if not names:
            return {}
        self._admin.poll(0)  # serves the client's queued log lines and errors
        cluster_id = self._answer(self._admin.describe_cluster(request_timeout=self._timeout)).cluster_id
        futures = self._admin.describe_topics(TopicCollection(names), request_timeout=self._timeout)
        return {name: KafkaIdentity(cluster_id, str(self._answer(futures[name]).topic_id)) for name in names}

    def watermarks(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(first available offset, end offset) per partition."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        self._admin.poll(0)
        bounds: dict[tuple[str, int], list[int]] = {key: [0, 0] for key in wanted}
        for index, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
            futures = self._admin.list_offsets(
                {TopicPartition(topic, partition): spec for topic, partition in wanted}, request_timeout=self._timeout
            )
            for topic_partition, future in futures.items():
                bounds[(topic_partition.topic, topic_partition.partition)][index] = self._answer(future).offset
        return {key: (low, high) for key, (low, high) in bounds.items()}

    def _answer(self, future: Future[Any]) -> Any:
        """A future's result; no answer in time (a broker down or paused) is a ``KafkaException`` like any other."""
        try:
            return future.result(self._timeout)
        except TimeoutError as error:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"Kafka did not answer within {self._timeout:.0f}s")) from error


def inspect_partitions(
    inspector: KafkaInspector,
    topics: Iterable[str],
    expected: Mapping[tuple[str, int], tuple[int, HighWaterMark | None]],
) -> tuple[dict[str, KafkaIdentity], list[Discontinuity]]:
    """Identities of the topics, and the discontinuities among ``expected`` (partition -> next offset, mark).

    Raises ``KafkaException`` when Kafka does not answer; the caller decides.
    """
    identities = inspector.identities({*topics, *(topic for topic, _partition in expected)})
    watermarks = inspector.watermarks(expected)
    found = []
    for (topic, partition), (next_offset, mark) in sorted(expected.items()):
        discontinuity = find_discontinuity(
            topic, partition, next_offset, mark, watermarks[(topic, partition)], identities[topic]
        )
        if discontinuity is not None:
            found.append(discontinuity)
    return identities, found


__all__ = [
    "RESET_COMMAND",
    "Discontinuity",
    "DiscontinuityKind",
    "KafkaIdentity",
    "KafkaInspector",
    "find_discontinuity",
    "inspect_partitions",
]
