"""Publishing change events to Kafka in the event contract, and checkpointing them.

One producer for the whole service: idempotent, ``acks=all``, compressed. Delivery
reports are requested for failures only (``delivery.report.only.error``), so a success
costs no Python call: an event counts as acknowledged once a ``flush`` returned with no
failure reported, which is when its checkpoint may be written. In exactly-once mode the
events and the checkpoint records share one Kafka transaction instead.

The per-event work left in Python is one ``produce`` call: the batch is serialized by the
native codec in one call, topics come from a per-namespace cache, and oversize events take
the claim check: the event is written to the lake's claim store (lakehouse_common.claims)
under its content address, durably, and only then is the record produced, carrying the
reference (contract: Claim checks), which bronze-writer resolves. An event is oversize when
it exceeds the smaller of its topic's ``max.message.bytes`` and the producer's own
``message.max.bytes``; should ``produce()`` still refuse a record for its size, that record
takes the claim check the same way instead of failing the pipeline (which would fail again
on the same event, forever). With ``claims.enabled`` false, or when even the reference
would not fit, an oversize event is dead-lettered as a reference instead.

Every record, event, fan-out copy, dead letter or checkpoint, goes through ``_send``: when
librdkafka's local queue is full it waits for room instead of raising ``BufferError``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal

from bson.raw_bson import RawBSONDocument
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdc_service.actions import record_too_large
from cdc_service.errors import DeliveryFailedError, ProducerFencedError
from cdc_service.settings import CdcSettings
from lakehouse_common.claims import ClaimStore
from lakehouse_common.contract import (
    CONTRACT_VERSION,
    HEADER_CONTRACT_VERSION,
    HEADER_EVENT_ID,
    HEADER_OPERATION,
    HEADER_VALUE_FORMAT,
    EncodedEvent,
    ProducedHeaders,
    ValueFormat,
    claim_headers,
    claim_record_value,
    encode_events,
    headers_for,
    topic_collision_key,
    topic_name,
)
from lakehouse_common.errors import ConfigError, FatalError, PoisonMessageError, TransientError
from lakehouse_common.kafka_connection import KafkaConnection

logger = logging.getLogger(__name__)

_LABEL = itemgetter(3, 4, 5)  # (operation, database, collection) of an EncodedEvent

# Room kept below max.message.bytes for the record's own framing and headers.
RECORD_OVERHEAD_BYTES = 512
# The checkpoint topic's max.message.bytes: its records are a few hundred bytes (checkpoints.py).
CHECKPOINT_TOPIC_MAX_MESSAGE_BYTES = 1024 * 1024
_VERSION_HEADER = b"%d" % CONTRACT_VERSION


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

    events: list[EncodedEvent]
    rejected: list[tuple[bytes, str]] = field(default_factory=list)


def encode_batch(events: bytes | Sequence[bytes | RawBSONDocument], value_format: ValueFormat) -> EncodedBatch:
    """Serialize a batch in one native call; thread-safe, so readers do it off the publishing thread.

    A batch holding an undecodable event is encoded one event at a time, to keep the
    good ones and hand the bad ones to the dead-letter topic.
    """
    if not isinstance(events, bytes):
        events = _owned_bytes(events)
    try:
        return EncodedBatch(encode_events(events, value_format))
    except BaseException as error:  # noqa: BLE001 - a native panic is a BaseException; a record must not crash us
        if _interrupt(error):
            raise
    batch = EncodedBatch([])
    documents: list[bytes | RawBSONDocument] = [events] if isinstance(events, bytes) else list(events)
    for document in documents:
        try:
            batch.events.extend(encode_events([document], value_format))
        except BaseException as error:  # noqa: BLE001 - as above, one event at a time
            if _interrupt(error):
                raise
            raw = document.raw if isinstance(document, RawBSONDocument) else bytes(document)
            reason = str(error) if isinstance(error, PoisonMessageError) else f"{type(error).__name__}: {error}"
            batch.rejected.append((raw, reason))
    return batch


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
        self._format_header = self.value_format.value.encode()
        self._operation_headers: dict[str, tuple[str, bytes]] = {}
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
        encoded = events.events
        self._begin_if_needed()
        for raw, reason in events.rejected:
            self.dead_letter_raw(raw, reason="undecodable_event", detail=reason)
            result.dead_lettered += 1
        produce = self.producer.produce
        routes = self._routes
        version_header = (HEADER_CONTRACT_VERSION, _VERSION_HEADER)
        format_header = (HEADER_VALUE_FORMAT, self._format_header)
        operation_headers = self._operation_headers
        # Counted in C, per (operation, db, collection); events not produced are subtracted below.
        read = Counter(map(_LABEL, encoded))
        published = Counter(read)
        produced = 0
        # The hot loop: per event, one route lookup, one size check and one produce call.
        for event in encoded:
            key, value, event_id, operation, database, collection, _ = event
            route: tuple[str, int] | None | Literal[False] = routes.get((database, collection), False)
            if route is False:
                route = self._first_route(event, in_scope)
            if route is None:
                label = (operation, database, collection)
                published[label] -= 1
                if collection is not None:
                    result.skipped += 1
                    continue
                # No single collection (invalidate, dropDatabase): every topic of the stream hears it.
                for topic in fallback_topics(database) if fallback_topics else ():
                    if self._send_event(event, topic, self.topics.ensure(topic), headers_for(event, self.value_format)):
                        produced += 1
                        published[label] += 1
                    else:
                        result.dead_lettered += 1
                continue
            topic, limit = route
            if len(value) + (len(key) if key else 0) + RECORD_OVERHEAD_BYTES > limit:
                if self.publish_oversize(event, topic, limit):
                    produced += 1
                else:
                    result.dead_lettered += 1
                    published[(operation, database, collection)] -= 1
                continue
            operation_header = operation_headers.get(operation)
            if operation_header is None:
                operation_header = operation_headers[operation] = (HEADER_OPERATION, operation.encode())
            headers: ProducedHeaders = [version_header, format_header, (HEADER_EVENT_ID, event_id.encode()), operation_header]
            try:
                produce(topic, value, key, headers=headers)
            except (BufferError, KafkaException):  # a full local queue, or a record refused: the slow path
                if not self._send_event(event, topic, limit, headers):
                    result.dead_lettered += 1
                    published[(operation, database, collection)] -= 1
                    continue
            produced += 1
        result.produced = produced
        result.claimed = self._claimed[0] - claimed_before[0]
        result.claimed_bytes = self._claimed[1] - claimed_before[1]
        result.by_operation = {(op, f"{db}.{coll}"): n for (op, db, coll), n in read.items()}
        result.published = {(op, f"{db}.{coll}"): n for (op, db, coll), n in published.items() if n > 0}
        if encoded:
            result.last_event_id = encoded[-1].event_id
        self.producer.poll(0)
        self.pending_events += produced
        return result

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

    def _first_route(self, event: EncodedEvent, in_scope: Any) -> tuple[str, int] | None:
        if event.database is None or event.collection is None:
            return None
        if in_scope is not None and not in_scope(event.database, event.collection):
            self.exclude(event.database, event.collection)
            return None
        return self.route(event.database, event.collection)

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
