"""Publishing change events to Kafka in the event contract, and checkpointing them.

One producer for the whole service: idempotent, ``acks=all``, compressed. Delivery
reports are requested for failures only (``delivery.report.only.error``), so a success
costs no Python call: an event counts as acknowledged once a ``flush`` returned with no
failure reported, which is when its checkpoint may be written. In exactly-once mode the
events and the checkpoint records share one Kafka transaction instead.

No Python code runs per event: the native codec serializes a batch in one call into columns
(keys, values, the contract headers, each event's namespace, counts per operation), topics
are resolved once per namespace of the batch, and ``itertools.starmap`` hands the columns to
``produce`` with positional arguments (the cheapest call form: confluent-kafka parses no
keywords) at C speed. Only the rare event that cannot go that way (out of scope, without a
collection, oversize, refused) takes a Python path, in its place in the batch's order.

Oversize events take the claim check: the event is written to the lake's claim store
(lakehouse_common.claims) under its content address, durably, and only then is the record
produced, carrying the reference (contract: Claim checks), which bronze-writer resolves. An
event is oversize when it exceeds the smaller of its topic's ``max.message.bytes`` and the
producer's own ``message.max.bytes``; should ``produce()`` still refuse a record for its
size, that record takes the claim check the same way instead of failing the pipeline (which
would fail again on the same event, forever). With ``claims.enabled`` false, or when even
the reference would not fit, an oversize event is dead-lettered as a reference instead.

Every record, event, fan-out copy, dead letter or checkpoint, goes through ``_send``: when
librdkafka's local queue is full it waits for room instead of raising ``BufferError``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat, starmap
from operator import length_hint
from typing import Any, Literal

from bson.raw_bson import RawBSONDocument
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdc_service.actions import record_too_large
from cdc_service.errors import DeliveryFailedError, ProducerFencedError
from cdc_service.settings import CdcSettings
from lakehouse_common.claims import ClaimStore
from lakehouse_common.contract import (
    EncodedEvent,
    EventColumns,
    ProducedHeaders,
    ValueFormat,
    claim_headers,
    claim_record_value,
    encode_event_columns,
    topic_collision_key,
    topic_name,
)
from lakehouse_common.errors import ConfigError, FatalError, PoisonMessageError, TransientError
from lakehouse_common.kafka_connection import KafkaConnection

logger = logging.getLogger(__name__)

# Room kept below max.message.bytes for the record's own framing and headers.
RECORD_OVERHEAD_BYTES = 512
# The checkpoint topic's max.message.bytes: its records are a few hundred bytes (checkpoints.py).
CHECKPOINT_TOPIC_MAX_MESSAGE_BYTES = 1024 * 1024
# produce()'s positional parameters after the key: partition (librdkafka's RD_KAFKA_PARTITION_UA,
# the default: its partitioner places the record by key), callback, on_delivery (None: the
# producer's on_delivery), timestamp (0: now), then the headers. The same record as the keywords.
_PARTITION_UNASSIGNED = -1
_DEFAULT_TIMESTAMP = 0


@dataclass
class PublishResult:
    """What one batch did: events read and produced per (operation, namespace), the last event."""

    produced: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    claimed: int = 0  # produced as claim references (counted in produced too)
    claimed_bytes: int = 0
    by_operation: dict[tuple[str, str], int] = field(default_factory=dict)
    published: dict[tuple[str, str], int] = field(default_factory=dict)
    last_event_id: str | None = None


@dataclass
class EncodedBatch:
    """A batch serialized for Kafka, and the events that could not be (with the reason)."""

    events: EventColumns
    rejected: list[tuple[bytes, str]] = field(default_factory=list)


def encode_batch(events: bytes | Sequence[bytes | RawBSONDocument], value_format: ValueFormat) -> EncodedBatch:
    """Serialize a batch in one native call; thread-safe, so readers do it off the publishing thread.

    A batch holding an undecodable event is tried one event at a time, to keep the good
    ones (encoded again together) and hand the bad ones to the dead-letter topic.
    """
    if not isinstance(events, bytes):
        events = _owned_bytes(events)
    try:
        return EncodedBatch(encode_event_columns(events, value_format))
    except BaseException as error:  # noqa: BLE001 - a native panic is a BaseException; a record must not crash us
        if _interrupt(error):
            raise
    good: list[bytes | RawBSONDocument] = []
    rejected: list[tuple[bytes, str]] = []
    documents: list[bytes | RawBSONDocument] = [events] if isinstance(events, bytes) else list(events)
    for document in documents:
        try:
            encode_event_columns([document], value_format)
            good.append(document)
        except BaseException as error:  # noqa: BLE001 - as above, one event at a time
            if _interrupt(error):
                raise
            raw = document.raw if isinstance(document, RawBSONDocument) else bytes(document)
            reason = str(error) if isinstance(error, PoisonMessageError) else f"{type(error).__name__}: {error}"
            rejected.append((raw, reason))
    return EncodedBatch(encode_event_columns(good, value_format), rejected)


def _owned_bytes(events: Sequence[bytes | RawBSONDocument]) -> Sequence[bytes | RawBSONDocument]:
    """The batch with every document's bytes as ``bytes``, which is all the codec takes.

    pymongo 4.18+ hands documents of 4 KB and more, decoded from a reply, as memoryview
    slices of it (``RawBSONDocument.raw``); the codec refuses those, which made every such
    event undecodable. The check runs in C (``map``); only a batch holding one is copied.
    """
    raws = list(map(getattr, events, repeat("raw"), events))
    if memoryview not in set(map(type, raws)):
        return events
    return [bytes(raw) if type(raw) is memoryview else raw for raw in raws]


def _interrupt(error: BaseException) -> bool:
    return isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit))


class TopicManager:
    """Creates missing topics (partitions, replication, max.message.bytes) and knows each one's size limit.

    A topic's limit is the smaller of its ``max.message.bytes`` and ``producer_limit`` (the
    producer's ``message.max.bytes``): a record passing the first but not the second would
    be refused by ``produce()``.
    """

    def __init__(
        self, admin: AdminClient, settings: CdcSettings, *, producer_limit: int | None = None, timeout: float = 60.0
    ) -> None:
        self.admin = admin
        self.settings = settings
        self.timeout = timeout  # the longest wait for one answer of the admin API
        self.producer_limit = producer_limit or int(producer_config(settings)["message.max.bytes"])
        self._limits: dict[str, int] = {}

    def limit(self, topic: str) -> int:
        return self._limits[topic]

    def ensure(
        self, topic: str, *, compacted: bool = False, partitions: int | None = None, replication: int | None = None
    ) -> int:
        """Create ``topic`` if missing; return the largest record it and the producer accept."""
        if topic in self._limits:
            return self._limits[topic]
        settings = self.settings.topics
        config = {"max.message.bytes": str(settings.max_message_bytes), **settings.config}
        if compacted:
            config = {
                "cleanup.policy": "compact",
                "min.compaction.lag.ms": "0",
                "max.message.bytes": str(CHECKPOINT_TOPIC_MAX_MESSAGE_BYTES),
            }
        new_topic = NewTopic(
            topic,
            num_partitions=partitions or settings.partitions,
            replication_factor=replication if replication is not None else settings.replication_factor,
            config=config,
        )
        try:
            _answer(self.admin.create_topics([new_topic], operation_timeout=30)[topic], self.timeout, f"creating topic {topic}")
            logger.info("created topic", extra={"topic": topic, "partitions": new_topic.num_partitions, "config": config})
            topic_limit = int(config["max.message.bytes"])
        except KafkaException as error:
            code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
            if code == KafkaError.TOPIC_EXCEPTION:  # an invalid name, or one colliding with an existing topic
                raise ConfigError(
                    f"Kafka refuses topic {topic}: {error}; name another topic for its collection with topics.mapping "
                    "(CDC_TOPICS__MAPPING)"
                ) from error
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransientError(f"cannot create topic {topic}: {error}") from error
            topic_limit = self._describe_limit(topic)
        self._limits[topic] = min(topic_limit, self.producer_limit)
        return self._limits[topic]

    def _describe_limit(self, topic: str) -> int:
        """An existing topic's max.message.bytes (retried while a new topic's metadata spreads)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        for attempt in range(20):
            try:
                configs = _answer(self.admin.describe_configs([resource])[resource], self.timeout, f"describing topic {topic}")
                entry = configs.get("max.message.bytes")
                return int(entry.value) if entry is not None and entry.value else 1024 * 1024
            except KafkaException as error:
                if attempt == 19:
                    raise TransientError(f"cannot describe topic {topic}: {error}") from error
                time.sleep(0.25)
        raise AssertionError("unreachable")


def _answer(future: Future[Any], timeout: float, action: str) -> Any:
    """An admin future's result; no answer in time (the broker is down or paused) is transient."""
    try:
        return future.result(timeout=timeout)
    except TimeoutError as error:  # concurrent.futures' timeout, a plain TimeoutError since Python 3.11
        raise TransientError(f"{action}: Kafka did not answer within {timeout:.0f}s") from error


def client_config(settings: CdcSettings, connection: KafkaConnection | None = None) -> dict[str, Any]:
    """Connection settings for every Kafka client; errors and librdkafka's log go through ``connection``.

    ``connection`` is the service's (one log line per connection state change, librdkafka's
    lines as JSON); one-off clients get their own.
    """
    return {**settings.kafka.librdkafka_config(), **(connection or KafkaConnection()).client_config()}


def producer_config(settings: CdcSettings, connection: KafkaConnection | None = None) -> dict[str, Any]:
    """librdkafka settings shared by the service and the benchmark's raw baseline."""
    producer = settings.producer
    config: dict[str, Any] = {
        **client_config(settings, connection),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": producer.compression,
        "linger.ms": producer.linger_ms,
        "batch.size": producer.batch_size_bytes,
        "delivery.timeout.ms": producer.delivery_timeout_ms,
        "message.max.bytes": max(settings.topics.max_message_bytes + RECORD_OVERHEAD_BYTES, 1_000_000),
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    return config


class EventPublisher:
    """Serializes batches, produces them, and writes checkpoints once they are durable."""

    def __init__(
        self,
        settings: CdcSettings,
        *,
        producer: Producer | None = None,
        admin: AdminClient | None = None,
        connection: KafkaConnection | None = None,
    ) -> None:
        self.settings = settings
        self.value_format: ValueFormat = settings.producer.value_format
        self.exactly_once = settings.exactly_once
        self.connection = connection or KafkaConnection()
        config = producer_config(settings, self.connection)
        config["delivery.report.only.error"] = True
        config["on_delivery"] = self._on_delivery
        if self.exactly_once:
            config["transactional.id"] = settings.transactional_id
            config["transaction.timeout.ms"] = settings.producer.transaction_timeout_ms
            # librdkafka requires a message to time out before its transaction does.
            config["delivery.timeout.ms"] = min(settings.producer.delivery_timeout_ms, settings.producer.transaction_timeout_ms)
        try:
            self.producer = producer or Producer(config)
        except KafkaException as error:
            raise ConfigError(f"the Kafka producer rejected its configuration: {error}") from error
        self.admin = admin or AdminClient(client_config(settings, self.connection))
        self.topics = TopicManager(self.admin, settings, producer_limit=int(config["message.max.bytes"]))
        self._routes: dict[tuple[str | None, str | None], tuple[str, int] | None] = {}
        # Who owns each topic name, by Kafka's collision rule: one namespace, or a service topic.
        self._topic_owners: dict[str, str] = {
            topic_collision_key(settings.topics.dead_letter_topic): "the dead-letter topic (topics.dead_letter_topic)",
            topic_collision_key(settings.topics.checkpoint_topic): "the checkpoint topic (topics.checkpoint_topic)",
        }
        self._failures: list[str] = []
        self._in_transaction = False
        self.pending_events = 0
        self._claims: ClaimStore | None = None  # opened at the first oversize event
        self._claimed = (0, 0)  # events and bytes claimed so far
        if self.exactly_once:
            try:
                self.producer.init_transactions(60)
            except KafkaException as error:
                raise _kafka_error("initializing transactions", error) from error

    # -- routing -------------------------------------------------------------------------

    def route(self, database: str, collection: str) -> tuple[str, int]:
        """The topic of a namespace (created if missing) and its size limit."""
        key = (database, collection)
        route = self._routes.get(key)
        if route is None:
            topic = self.claim_topic(database, collection)
            route = (topic, self.topics.ensure(topic))
            self._routes[key] = route
        return route

    def claim_topic(self, database: str, collection: str) -> str:
        """The topic of a namespace, refused (``ConfigError``) when another namespace already has it.

        Two namespaces never share a topic: not by a mapping onto another's name, not by
        names Kafka considers the same ('.' and '_' collide), not by a hash that met.
        """
        namespace = f"{database}.{collection}"
        settings = self.settings.topics
        try:
            topic = topic_name(settings.prefix, database, collection, settings.mapping)
        except ValueError as error:
            raise ConfigError(f"{error}: name a shorter topic for it with topics.mapping (CDC_TOPICS__MAPPING)") from None
        key = topic_collision_key(topic)
        owner = self._topic_owners.setdefault(key, namespace)
        if owner != namespace:
            raise ConfigError(
                f"{owner!r} and {namespace!r} would share topic {topic!r} (Kafka treats '.' and '_' alike): each "
                f"collection needs its own topic; give one of them another with topics.mapping, for example "
                f'CDC_TOPICS__MAPPING=\'{{"{namespace}": "{topic}-2"}}\''
            )
        return topic

    def exclude(self, database: str, collection: str) -> None:
        """Events of this namespace are skipped (out of scope)."""
        self._routes[(database, collection)] = None

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        events: EncodedBatch | bytes | Sequence[bytes | RawBSONDocument],
        *,
        fallback_topics: Callable[[str | None], Iterable[str]] | None = None,
        in_scope: Callable[[str, str], bool] | None = None,
    ) -> PublishResult:
        """Produce one batch of change events (BSON, or already encoded by ``encode_batch``).

        ``fallback_topics(db)`` names the topics that hear events without a collection
        (invalidate, dropDatabase); ``in_scope(db, coll)`` decides about namespaces seen
        for the first time (out of scope: skipped).
        """
        result = PublishResult()
        claimed_before = self._claimed
        if not isinstance(events, EncodedBatch):
            if not events:
                return result
            events = encode_batch(events, self.value_format)
        columns = events.events
        self._begin_if_needed()
        for raw, reason in events.rejected:
            self.dead_letter_raw(raw, reason="undecodable_event", detail=reason)
            result.dead_lettered += 1
        routes = [self._namespace_route(database, collection, in_scope) for database, collection in columns.namespaces]
        # Counted by the codec per (operation, namespace index); events not produced are subtracted.
        published = {(operation, namespace): count for operation, namespace, count in columns.counts}
        produced = 0
        start = 0
        for index in [*self._special_events(columns, routes), len(columns)]:
            if index > start:
                produced += self._produce_run(columns, routes, start, index, published, result)
            if index < len(columns):
                produced += self._publish_special(columns, routes, index, published, result, fallback_topics)
            start = index + 1
        result.produced = produced
        result.claimed = self._claimed[0] - claimed_before[0]
        result.claimed_bytes = self._claimed[1] - claimed_before[1]
        labels = [f"{database}.{collection}" for database, collection in columns.namespaces]
        result.by_operation = {(operation, labels[namespace]): count for operation, namespace, count in columns.counts}
        result.published = {
            (operation, labels[namespace]): count for (operation, namespace), count in published.items() if count > 0
        }
        if len(columns):
            result.last_event_id = columns.event_id(len(columns) - 1)
        self.producer.poll(0)
        self.pending_events += produced
        return result

    def _namespace_route(self, database: str | None, collection: str | None, in_scope: Any) -> tuple[str, int] | None:
        """A namespace's topic and size limit; None when its events are skipped or fanned out."""
        route: tuple[str, int] | None | Literal[False] = self._routes.get((database, collection), False)
        if route is not False:
            return route
        if database is None or collection is None:
            return None
        if in_scope is not None and not in_scope(database, collection):
            self.exclude(database, collection)
            return None
        return self.route(database, collection)

    @staticmethod
    def _special_events(columns: EventColumns, routes: list[tuple[str, int] | None]) -> list[int]:
        """The events that cannot be produced as they are: without a route, or too large for their topic."""
        limits = [route[1] for route in routes if route is not None]
        if not routes or (len(limits) == len(routes) and columns.largest + RECORD_OVERHEAD_BYTES <= min(limits)):
            return []  # the usual batch: every event routed and within its topic's limit
        namespaces = columns.namespace_of if columns.namespace_of is not None else repeat(0)
        special = []
        for index, (namespace, key, value) in enumerate(zip(namespaces, columns.keys, columns.values, strict=False)):
            route = routes[namespace]
            if route is None or len(value) + (len(key) if key else 0) + RECORD_OVERHEAD_BYTES > route[1]:
                special.append(index)
        return special

    def _produce_run(
        self,
        columns: EventColumns,
        routes: list[tuple[str, int] | None],
        start: int,
        end: int,
        published: dict[tuple[str, int], int],
        result: PublishResult,
    ) -> int:
        """Produce events ``start`` to ``end`` (all routed, none oversize) at C speed; the number produced.

        ``produce`` runs under ``starmap``, driven by a zero-length deque: no bytecode per
        event. A call that raises (a full local queue, a record refused) stops the run; the
        event is known by how far the value iterator got, takes the slow path, and the run
        resumes after it.
        """
        whole = start == 0 and end == len(columns)
        values = iter(columns.values if whole else columns.values[start:end])
        keys = columns.keys if whole else columns.keys[start:end]
        headers = columns.headers if whole else columns.headers[start:end]
        names = [route[0] if route else "" for route in routes]  # a run holds routed events only
        topics: Iterator[str]
        if columns.namespace_of is None:
            topics = repeat(names[0])
        else:
            topics = map(names.__getitem__, columns.namespace_of if whole else columns.namespace_of[start:end])
        calls = starmap(
            self.producer.produce,
            zip(
                topics,
                values,
                keys,
                repeat(_PARTITION_UNASSIGNED),
                repeat(None),
                repeat(None),
                repeat(_DEFAULT_TIMESTAMP),
                headers,
            ),
        )
        produced = end - start
        while True:
            try:
                deque(calls, maxlen=0)
                return produced
            except (BufferError, KafkaException):  # a full local queue, or a record refused: the slow path
                index = end - length_hint(values) - 1
                route = routes[self._namespace_index(columns, index)]
                assert route is not None  # a run holds routed events only
                if not self._send_column_event(columns, index, *route):
                    produced -= 1
                    result.dead_lettered += 1
                    published[(columns.operation(index), self._namespace_index(columns, index))] -= 1

    def _publish_special(
        self,
        columns: EventColumns,
        routes: list[tuple[str, int] | None],
        index: int,
        published: dict[tuple[str, int], int],
        result: PublishResult,
        fallback_topics: Callable[[str | None], Iterable[str]] | None,
    ) -> int:
        """One event ``_special_events`` named: skipped, fanned out, claimed or dead-lettered; the number of records produced."""
        namespace = self._namespace_index(columns, index)
        label = (columns.operation(index), namespace)
        route = routes[namespace]
        published[label] -= 1
        database, collection = columns.namespaces[namespace]
        if route is None:
            if collection is not None:
                result.skipped += 1
                return 0
            # No single collection (invalidate, dropDatabase): every topic of the stream hears it.
            produced = 0
            event = columns.event(index)
            for topic in fallback_topics(database) if fallback_topics else ():
                if self._send_event(event, topic, self.topics.ensure(topic), list(columns.headers[index])):
                    produced += 1
                    published[label] += 1
                else:
                    result.dead_lettered += 1
            return produced
        topic, limit = route
        if self.publish_oversize(columns.event(index), topic, limit):
            published[label] += 1
            return 1
        result.dead_lettered += 1
        return 0

    @staticmethod
    def _namespace_index(columns: EventColumns, index: int) -> int:
        return columns.namespace_of[index] if columns.namespace_of is not None else 0

    def _send_column_event(self, columns: EventColumns, index: int, topic: str, limit: int) -> bool:
        """The slow path of one routed event: wait for room; one Kafka refused for its size takes the
        oversize path (False: dead-lettered)."""
        try:
            self._send(topic, columns.values[index], columns.keys[index], columns.headers[index])
            return True
        except KafkaException as error:
            if not record_too_large(error):
                raise
            return self.publish_oversize(columns.event(index), topic, limit, detail=str(error))

    def known_topics(self, database: str | None) -> list[str]:
        """Topics of the namespaces routed so far (of one database, or all)."""
        return sorted({route[0] for (db, _), route in self._routes.items() if route and (database is None or db == database)})

    def _send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any] | None = None) -> None:
        """Produce one record, waiting for room while librdkafka's local queue is full (Kafka is slower than MongoDB)."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _send_event(self, event: EncodedEvent, topic: str, limit: int, headers: ProducedHeaders) -> bool:
        """Produce one event; when Kafka refuses it for its size, take the oversize path (False: dead-lettered)."""
        try:
            self._send(topic, event.value, event.key, headers)
            return True
        except KafkaException as error:
            if not record_too_large(error):
                raise
            return self.publish_oversize(event, topic, limit, detail=str(error))

    # -- oversize events and dead letters --------------------------------------------------

    def publish_oversize(self, event: EncodedEvent, topic: str, limit: int, *, detail: str = "") -> bool:
        """An event too large for its topic: claimed and referenced (True), or dead-lettered as a reference (False).

        The claim is durable before its reference is produced, so no checkpoint can cover a
        record whose event is not in the claim store. A claim store that cannot take it
        raises (``TransientError``: the attempt restarts from its checkpoint and tries again).
        """
        reference_bytes = len(event.key or b"") + RECORD_OVERHEAD_BYTES + 256
        if not self.settings.claims.enabled or reference_bytes > limit:
            if self.settings.claims.enabled:
                detail = detail or f"even its claim reference ({reference_bytes} bytes with the key) exceeds the topic's limit"
            self.dead_letter_oversize(event, topic, limit, detail=detail)
            return False
        if self._claims is None:
            self._claims = ClaimStore(self.settings.claims.root, self.settings.claims.revealed_options())
        started = time.monotonic()
        reference = self._claims.put(event.value)
        self._send(topic, claim_record_value(reference), event.key, claim_headers(event, self.value_format))
        self._claimed = (self._claimed[0] + 1, self._claimed[1] + len(event.value))
        logger.info(
            "event too large for its topic: kept in the claim store, its reference published",
            extra={
                "topic": topic,
                "event_id": event.event_id,
                "operation": event.operation,
                "value_bytes": len(event.value),
                "limit_bytes": limit,
                "claim": self._claims.uri(reference.digest),
                "claim_write_seconds": round(time.monotonic() - started, 3),
            },
        )
        return True

    def dead_letter_oversize(self, event: EncodedEvent, topic: str, limit: int, *, detail: str = "") -> None:
        """A reference to an event too large for its topic: what, where, how large, how to find it."""
        reference = {
            "reason": "event_exceeds_topic_max_message_bytes",
            "topic": topic,
            "event_id": event.event_id,
            "operation": event.operation,
            "namespace": f"{event.database}.{event.collection}",
            "document_key": json.loads(event.key) if event.key else None,
            "cluster_time": event.cluster_time,
            "value_bytes": len(event.value),
            "limit_bytes": limit,
            "value_format": self.value_format.value,
            **({"kafka_error": detail} if detail else {}),
        }
        logger.error("event too large for its topic: published a reference to the dead-letter topic", extra=reference)
        self._produce_dead_letter(
            json.dumps(reference).encode(), event.key, "event_exceeds_topic_max_message_bytes", event.event_id
        )

    def dead_letter_raw(self, raw: bytes, *, reason: str, detail: str) -> None:
        logger.error("unpublishable event sent to the dead-letter topic", extra={"reason": reason, "detail": detail})
        self._produce_dead_letter(raw, None, reason, "", detail=detail)

    def _produce_dead_letter(self, value: bytes, key: bytes | None, reason: str, event_id: str, detail: str = "") -> None:
        topic = self.settings.topics.dead_letter_topic
        limit = self.topics.ensure(topic)
        if len(value) + RECORD_OVERHEAD_BYTES > limit:
            value = json.dumps({"reason": reason, "detail": detail, "truncated": True, "bytes": len(value)}).encode()
        self._begin_if_needed()
        self._send(
            topic,
            value,
            key,
            [
                ("lakehouse.dead_letter.reason", reason.encode()),
                ("lakehouse.event.id", event_id.encode()),
                ("lakehouse.dead_letter.detail", detail.encode()[:1000]),
            ],
        )

    # -- durability ------------------------------------------------------------------------

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}[{message.partition()}]: {error}")

    def _begin_if_needed(self) -> None:
        if self.exactly_once and not self._in_transaction:
            try:
                self.producer.begin_transaction()
            except KafkaException as error:
                raise _kafka_error("beginning a transaction", error) from error
            self._in_transaction = True

    def produce_checkpoint(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Queue one checkpoint record: part of the transaction, or written after the flush.

        A record too large for the checkpoint topic stops the service (``FatalError``):
        librdkafka would fail its delivery on every attempt. None is: snapshot states are
        split per collection (checkpoints.py).
        """
        limit = self.topics.ensure(
            topic, compacted=True, partitions=1, replication=self.settings.topics.checkpoint_replication_factor
        )
        size = len(key) + len(value or b"") + RECORD_OVERHEAD_BYTES
        if size > limit:
            raise FatalError(f"checkpoint record {key!r} of {size} bytes exceeds the checkpoint topic's limit of {limit}")
        self._begin_if_needed()
        self._send(topic, value, key)

    def commit(self, records: Mapping[bytes, bytes | None], checkpoint_topic: str, timeout: float) -> None:
        """Make everything produced so far durable, then the checkpoint records with it.

        At-least-once: flush (every event acknowledged), then write the records and flush
        again. Exactly-once: the records join the open transaction, which commits.
        Raises ``DeliveryFailedError`` (restart from the last checkpoint) or a fatal error.
        """
        if self.exactly_once:
            if not self._in_transaction and not records:
                return
            for key, value in records.items():
                self.produce_checkpoint(checkpoint_topic, key, value)
            try:
                self.producer.commit_transaction(timeout)
            except KafkaException as error:
                self._in_transaction = False
                raise _kafka_error("committing a transaction", error) from error
            self._in_transaction = False
            self.connection.reachable()
        else:
            self._flush(timeout)
            if records:
                for key, value in records.items():
                    self.produce_checkpoint(checkpoint_topic, key, value)
                self._flush(timeout)
        self.pending_events = 0

    def _flush(self, timeout: float) -> None:
        remaining = self.producer.flush(timeout)
        if self._failures:
            failures, self._failures = self._failures[:5], []
            raise DeliveryFailedError(f"Kafka did not acknowledge {len(failures)}+ record(s): {'; '.join(failures)}")
        if remaining:
            raise DeliveryFailedError(f"{remaining} record(s) still unacknowledged after {timeout:.0f}s")
        self.connection.reachable()

    def abort(self) -> None:
        """Drop what is not durable (exactly-once: abort the open transaction)."""
        if self.exactly_once and self._in_transaction:
            try:
                self.producer.abort_transaction(10)
            except KafkaException as error:
                logger.warning("aborting the transaction failed", extra={"error": str(error)})
            self._in_transaction = False
        self.pending_events = 0

    def close(self, timeout: float = 10.0) -> None:
        if not self.exactly_once:
            self.producer.flush(timeout)


def _kafka_error(action: str, error: KafkaException) -> Exception:
    kafka_error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
    if kafka_error is not None and kafka_error.fatal():
        if kafka_error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
            return ProducerFencedError(f"{action}: another instance uses this transactional id ({kafka_error})")
        return FatalError(f"{action}: {kafka_error}")
    return DeliveryFailedError(f"{action}: {error}")


__all__ = [
    "CHECKPOINT_TOPIC_MAX_MESSAGE_BYTES",
    "RECORD_OVERHEAD_BYTES",
    "EncodedBatch",
    "EventPublisher",
    "PublishResult",
    "TopicManager",
    "client_config",
    "encode_batch",
    "producer_config",
]
