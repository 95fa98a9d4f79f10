"""The bronze_writer service: consume the CDC topics, land micro-batches, exactly once.

A three-stage pipeline. The consumer loop (this thread) collects records into a micro-batch
and hands it over when its latency, row or byte limit is reached; a decoding thread turns
it into frames (lander.decode); a landing thread commits it (lander.land), in batch order.
So Kafka reads, decoding and Delta writes of consecutive batches overlap. When a new batch
is full while two are still in the pipeline, every assigned partition is paused
(backpressure): memory stays within three batches plus librdkafka's prefetch bound.
On start and on every assignment each partition is positioned from its bronze table's app
transaction, never from Kafka's committed offsets; those are committed after each Delta
commit, for lag monitoring only. Before a partition is read, its offsets are checked against
what bronze landed (bronze_writer.offsets), and a position found out of range while running
is checked the same way: a discontinuity is never silent.

``run()`` declares its resources in one ``ExitStack`` (signal handlers, HTTP server,
maintenance, the two stage threads, the consumer), so they unwind in reverse order however
it ends. SIGTERM and SIGINT only set the stop event (``stop_on_signals``); the loop then
lands what it holds, commits, and closes the consumer; a second signal exits at once. Every
error goes through ``_act``, which matches on ``bronze_writer.errors.classify``'s action.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from types import TracebackType

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from bronze_writer.decode import DecodedTopic, Records, collect
from bronze_writer.errors import Action, OffsetDiscontinuityError, Stage, classify, describe, kafka_error_of
from bronze_writer.lander import LandedBatch, Lander
from bronze_writer.maintenance import Maintenance
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.offsets import Discontinuity, KafkaInspector, inspect_partitions
from bronze_writer.settings import BronzeSettings
from lakehouse_common.errors import ConfigError, FatalError
from lakehouse_common.kafka_connection import KafkaConnection
from lakehouse_common.lifecycle import stop_on_signals
from lakehouse_common.observability import ObservabilityServer, Status
from lakehouse_common.redaction import redact_mapping

logger = logging.getLogger(__name__)


class FlushReason(StrEnum):
    """Why a micro-batch was handed to landing (the ``reason`` label of ``bronze_flushes``)."""

    ROWS = "rows"  # batch.max_rows reached
    BYTES = "bytes"  # batch.max_bytes reached, or a partition's buffer is full
    LATENCY = "latency"  # batch.max_latency_seconds since the batch's first message
    OFFSETS = "offsets"  # the consumer's position is out of range: land what is held, then find out why
    REBALANCE = "rebalance"  # partitions are being revoked
    SHUTDOWN = "shutdown"  # the writer is stopping


_CONSUME_CHUNK = 5000
# Batches handed over and not landed yet: one decoding while the one before it is written.
_PIPELINE_DEPTH = 2
_LAG_REFRESH_SECONDS = 5.0
# A fence within this long of the last recreation counts as the same fence coming back: another live
# replica with the same group.instance.id fences us within seconds, a broker outage does so once.
_FENCE_REPEAT_SECONDS = 60.0
# Recreations of a fenced consumer in a row before the writer stops (FAILED).
_MAX_FENCED_RECREATIONS = 3
# librdkafka settings the writer's correctness rests on: client_config may not change them.
_REQUIRED_CONSUMER_CONFIG: dict[str, object] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    # Positions come from the Delta log; one Kafka no longer has is reported, never skipped.
    "auto.offset.reset": "error",
    "isolation.level": "read_committed",
}
# Defaults that BRONZE_KAFKA__CLIENT_CONFIG may override.
_DEFAULT_CONSUMER_CONFIG: dict[str, object] = {
    "topic.metadata.refresh.interval.ms": 10000,  # new CDC topics are found within 10 s
}


@contextmanager
def _fewer_garbage_collections() -> Iterator[None]:
    """Collect less often and never rescan what start-up built, while the writer runs.

    Reading a record's headers allocates about a dozen objects, so with the default
    threshold (700) the collector runs every few dozen records and keeps rescanning the
    long-lived heap; confluent-kafka's ``headers()`` measured 4.1 µs per record that way
    and 1.6 µs without collections. The writer creates no reference cycles on its hot path.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class Batch:
    """Records collected since the last hand-over, as columns per topic, in offset order."""

    def __init__(self) -> None:
        self.topics: dict[str, Records] = {}
        self.rows = 0
        self.bytes = 0
        self.full = False  # records were left for the next batch: hand this one over now
        self.started: float | None = None

    def add(self, collected: Mapping[str, Records], max_bytes: int) -> list[TopicPartition]:
        """Take these records; claims that would take the batch past ``max_bytes`` are left for the
        next batch: returns where to read their partitions again (``Records.extend``)."""
        if self.started is None:
            self.started = time.monotonic()
        again = []
        for topic, records in collected.items():
            held = self.topics.get(topic)
            if held is None:
                held = self.topics[topic] = Records()
            before_bytes, before_rows = held.bytes, len(held)
            limit = max_bytes - (self.bytes - before_bytes)  # what the other topics leave to this one
            deferred = held.extend(records, limit, batch_holds_records=self.rows > 0)
            self.bytes += held.bytes - before_bytes
            self.rows += len(held) - before_rows
            again += [TopicPartition(topic, partition, offset) for partition, offset in deferred.items()]
        self.full = self.full or bool(again)
        return again

    def age(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def drop(self, partitions: set[tuple[str, int]]) -> None:
        """Forget records of partitions this replica no longer owns; their new owner re-reads them."""
        for topic, records in list(self.topics.items()):
            gone = {partition for name, partition in partitions if name == topic}
            if gone:
                self.topics[topic] = records.without(gone)
        self.rows = sum(len(records) for records in self.topics.values())
        self.bytes = sum(records.bytes for records in self.topics.values())


class BronzeWriter:
    """``BronzeWriter(settings).run()`` until ``stop()`` or SIGTERM/SIGINT; raises what stopped it otherwise."""

    def __init__(self, settings: BronzeSettings, metrics: BronzeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or BronzeMetrics()
        # Kafka's connection state: one log line per change, librdkafka's own log as JSON (chaos finding F2).
        self.kafka = KafkaConnection(self.metrics.registry, "bronze")
        self.lander = Lander(settings, self.metrics)
        self.maintenance = Maintenance(settings, self.metrics)
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._inspector: KafkaInspector | None = None
        self._decoding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bronze-decoding")
        self._landing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bronze-landing")
        self._inflight: deque[Future[LandedBatch]] = deque()
        self._landing_failure: BaseException | None = None
        self._batch = Batch()
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._landed_next: dict[tuple[str, int], int] = {}
        self._starts: dict[tuple[str, int], int] = {}  # where each partition was positioned (may be logical)
        self._last_loop = time.monotonic()
        self._rebalanced = False
        self._failure: BaseException | None = None
        self._fenced: BaseException | None = None  # set when the group fenced this static member
        self._recreated_at: float | None = None
        self._repeated_fences = 0
        self._lag_refreshed = 0.0
        self.http_port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to land what it holds and exit (safe from signal handlers and threads)."""
        self._stop.set()

    def run(self) -> None:
        """Consume and land until stopped; a fatal error (also one Kafka reports) is raised after the unwinding."""
        try:
            with ExitStack() as resources:
                resources.enter_context(stop_on_signals(self._stop))
                server = ObservabilityServer(
                    self.metrics.registry, self._liveness, self._readiness, self.settings.http.host, self.settings.http.port
                ).start()
                resources.callback(server.stop)
                self.http_port = server.port
                resources.callback(self.maintenance.shutdown)
                resources.push(self._shut_down_stages)
                self._consumer = self._open_consumer()
                resources.callback(self._close_consumer)
                self._inspector = KafkaInspector(
                    AdminClient({**self.settings.kafka.librdkafka_config(), **self.kafka.client_config()})
                )
                self._subscribe()
                resources.enter_context(_fewer_garbage_collections())
                self._loop()
                self._drain()
        except BaseException as error:
            self._failure = self._failure or error
            raise
        finally:
            logger.info("bronze writer stopped", extra={"failure": describe(self._failure) if self._failure else None})
        if self._failure is not None:
            raise self._failure

    def _open_consumer(self) -> Consumer:
        config = self._consumer_config()
        logger.info(
            "bronze writer starting",
            extra={
                "consumer": redact_mapping(config),
                "lake_root": self.settings.lake.root,
                "topic_pattern": self.settings.consumer.topic_pattern,
                "offset_discontinuity": self.settings.consumer.offset_discontinuity,
            },
        )
        try:
            return Consumer(config)
        except KafkaException as error:
            raise ConfigError(f"the Kafka consumer rejected its configuration: {error}") from error

    def _subscribe(self) -> None:
        assert self._consumer is not None
        self._consumer.subscribe(
            [self.settings.consumer.topic_pattern],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _shut_down_stages(
        self, _type: type[BaseException] | None, error: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        """Let the stage threads finish a clean stop; after a failure, cancel what has not started."""
        failed = error is not None or self._failure is not None
        self._decoding.shutdown(wait=not failed, cancel_futures=True)
        self._landing.shutdown(wait=not failed, cancel_futures=True)

    def _consumer_config(self) -> dict[str, object]:
        """Defaults, then the user's ``kafka.client_config`` over them, then what the writer's settings and correctness fix."""
        consumer = self.settings.consumer
        user = self.settings.kafka.client_config
        conflicts = sorted(
            key
            for key, value in _REQUIRED_CONSUMER_CONFIG.items()
            if key in user and str(user[key]).lower() != str(value).lower()
        )
        if conflicts:
            raise ConfigError(
                f"BRONZE_KAFKA__CLIENT_CONFIG sets {', '.join(conflicts)}, which the writer needs as "
                f"{', '.join(f'{key}={_REQUIRED_CONSUMER_CONFIG[key]}' for key in conflicts)} (positions come from the "
                "Delta log, and only committed records are landed): remove them"
            )
        config: dict[str, object] = {**_DEFAULT_CONSUMER_CONFIG, **self.settings.kafka.librdkafka_config()}
        config.update(
            {
                **_REQUIRED_CONSUMER_CONFIG,
                "group.id": consumer.group_id,
                "client.id": f"bronze-writer-{self.settings.replica_name}",
                "queued.max.messages.kbytes": consumer.fetch_queue_max_kbytes,
                "session.timeout.ms": consumer.session_timeout_ms,
                "on_commit": self._on_commit,
                "error_cb": self._on_kafka_error,
                "logger": self.kafka,
            }
        )
        if consumer.group_instance_id:
            config["group.instance.id"] = consumer.group_instance_id
        return config

    # --- errors ----------------------------------------------------------------------------

    def _act(self, error: BaseException, stage: Stage) -> Action:
        """The one place an error becomes an action (``bronze_writer.errors.classify`` decides which)."""
        action = classify(error, stage)
        match action:
            case Action.RETRY:
                kafka_error = kafka_error_of(error)
                if kafka_error is not None:
                    self.kafka.on_error(kafka_error)  # logged once per outage when the connection is the cause
                else:
                    logger.warning("Kafka error; librdkafka retries", extra={"error": describe(error), "stage": stage.value})
            case Action.RESET:
                if not isinstance(error, OffsetDiscontinuityError):
                    raise error
                self._apply_discontinuity_policy(error.discontinuity)
            case Action.RECREATE:
                self._fenced = self._fenced or error  # the loop replaces the consumer (outside librdkafka's callbacks)
            case Action.DEAD_LETTER | Action.STOP:
                raise error  # records are dead-lettered by the stages; reaching here, it stops the writer
        return action

    def _apply_discontinuity_policy(self, discontinuity: Discontinuity) -> None:
        """Count and log it; then stop (``fail``) or record the reset to the first available offset (``accept``)."""
        policy = self.settings.consumer.offset_discontinuity
        self.metrics.offset_discontinuities.labels(
            discontinuity.topic, str(discontinuity.partition), discontinuity.kind.value
        ).inc()
        logger.error(
            discontinuity.describe(),
            extra={**discontinuity.log_fields(), "policy": policy, "reset_command": discontinuity.reset_command},
        )
        if policy == "fail":
            raise OffsetDiscontinuityError(
                f"{discontinuity.describe()}. Nothing was landed from the new offsets. If they are right, stop the "
                f"writers and run: {discontinuity.reset_command} (or set BRONZE_CONSUMER__OFFSET_DISCONTINUITY=accept)",
                discontinuity,
            )
        self.lander.reset_offsets(discontinuity.topic, {discontinuity.partition: discontinuity.low}, discontinuity.kind.value)
        self._landed_next[(discontinuity.topic, discontinuity.partition)] = discontinuity.low

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._consumer is not None
        limits = self.settings.batch
        while not self._stop.is_set():
            self._last_loop = time.monotonic()
            remaining = max(0.0, limits.max_latency_seconds - self._batch.age()) if self._batch.rows else 0.5
            messages = self._consumer.consume(
                num_messages=max(1, min(_CONSUME_CHUNK, limits.max_rows - self._batch.rows)),
                timeout=min(0.5, remaining) if not self._paused else 0.1,
            )
            if messages:
                collected, errors = collect(messages)
                if errors and self._handle_errors([messages[position] for position in errors]):
                    collected = {}  # the rest came from a consumer the group no longer knows
                if collected:
                    self.kafka.reachable()
                    self._read_again(self._batch.add(collected, limits.max_bytes))
                    self.metrics.buffered_bytes.set(self._batch.bytes)
            if self._fenced is not None:
                self._recreate_consumer()
                continue
            reason = self._flush_reason()
            if reason is not None:
                self._hand_over(reason)
            self._collect_inflight(block=False)
            self.maintenance.run_due(self.lander.tables())
            self._refresh_lag()

    def _recreate_consumer(self) -> None:
        """The group fenced this static member: close the consumer and join again with a new one.

        What is buffered is dropped (the new consumer reads it again from the positions in the
        Delta log); batches already handed over land as usual. A fence that comes back within
        ``_FENCE_REPEAT_SECONDS`` of the last recreation, ``_MAX_FENCED_RECREATIONS`` times in
        a row, is another live replica with the same ``group.instance.id``: the writer stops.
        """
        fence, self._fenced = self._fenced, None
        now = time.monotonic()
        recent = self._recreated_at is not None and now - self._recreated_at < _FENCE_REPEAT_SECONDS
        self._repeated_fences = self._repeated_fences + 1 if recent else 1
        instance = self.settings.consumer.group_instance_id
        if self._repeated_fences > _MAX_FENCED_RECREATIONS:
            raise FatalError(
                f"fenced again after {_MAX_FENCED_RECREATIONS} recreations of the consumer, each within "
                f"{_FENCE_REPEAT_SECONDS:.0f}s of the last: another live consumer of group {self.settings.consumer.group_id!r} "
                f"uses group.instance.id {instance!r}; give every replica its own BRONZE_CONSUMER__GROUP_INSTANCE_ID "
                f"({describe(fence) if fence else 'fenced'})"
            )
        logger.warning(
            "fenced by the consumer group (a static member that rejoined, or another client with its "
            "group.instance.id): closing the consumer and joining again; positions come from the Delta log",
            extra={
                "error": describe(fence) if fence else None,
                "group_instance_id": instance,
                "recreation": self._repeated_fences,
                "buffered_rows_dropped": self._batch.rows,
            },
        )
        self.metrics.consumer_recreations.inc()
        self._batch = Batch()
        self.metrics.buffered_bytes.set(0)
        self._assigned.clear()  # nothing to commit through the fenced consumer
        self._collect_inflight(block=True)
        self._close_consumer()
        self._starts.clear()
        self._paused = False
        self.metrics.paused.set(0)
        self.metrics.assigned.set(0)
        self._rebalanced = False
        self._consumer = self._open_consumer()
        self._subscribe()
        self._recreated_at = time.monotonic()

    def _handle_errors(self, messages: list[Message]) -> bool:
        """The messages that carry an error instead of a record, in order; True when the group
        fenced this consumer (the batch's records are then not to be taken)."""
        for message in messages:
            error = message.error()
            assert error is not None
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                assert topic is not None and partition is not None and offset is not None  # a partition's error
                self._out_of_range(topic, partition, offset)
            elif self._act(KafkaException(error), Stage.KAFKA) is Action.RECREATE:
                return True
        return False

    def _read_again(self, positions: list[TopicPartition]) -> None:
        """Move partitions back to records the batch left out (claims over its byte limit).

        They must be read again before anything after them is landed: a seek, or, where
        librdkafka refuses one, a new assignment.
        """
        assert self._consumer is not None
        for position in positions:
            try:
                self._consumer.seek(position)
            except KafkaException:
                self._reposition(position.topic, position.partition, position.offset)

    def _out_of_range(self, topic: str, partition: int, requested: int) -> None:
        """Kafka no longer has the offset the consumer asked for: land what is held, then find out why."""
        logger.warning(
            "the consumer's position is out of range", extra={"topic": topic, "partition": partition, "offset": requested}
        )
        self._land_everything_held(FlushReason.OFFSETS)
        next_offset = self.lander.start_offsets(topic, [partition])[partition]
        expected = {
            (topic, partition): (
                requested if next_offset is None else next_offset,
                self.lander.table_for(topic).marks.get(f"{topic}/{partition}"),
            )
        }
        assert self._inspector is not None and self._consumer is not None
        try:
            identities, found = inspect_partitions(self._inspector, [topic], expected)
        except KafkaException as error:
            self._act(error, Stage.KAFKA)
            found = []
        else:
            self.lander.identities.update(identities)
        if found:
            self._act(OffsetDiscontinuityError(found[0].describe(), found[0]), Stage.KAFKA)
            next_offset = found[0].low
        self._reposition(
            topic, partition, self._starts.get((topic, partition), OFFSET_BEGINNING) if next_offset is None else next_offset
        )

    def _reposition(self, topic: str, partition: int, offset: int) -> None:
        """Move one partition: librdkafka cannot seek a partition whose fetch failed, but it can assign it again.

        The other partitions keep their positions (everything consumed has just been landed).
        """
        assert self._consumer is not None
        positions = self._consumer.position([TopicPartition(t, p) for t, p in sorted(self._assigned)])
        for position in positions:
            key = (position.topic, position.partition)
            if key == (topic, partition):
                position.offset = offset
            elif position.offset < 0:  # nothing consumed since the assignment
                position.offset = self._starts.get(key, OFFSET_BEGINNING)
        self._starts[(topic, partition)] = offset
        self._consumer.assign(positions)
        if self._paused:
            self._consumer.pause(positions)

    def _flush_reason(self) -> FlushReason | None:
        limits = self.settings.batch
        batch = self._batch
        if not batch.rows:
            return None
        if batch.rows >= limits.max_rows:
            return FlushReason.ROWS
        if batch.bytes >= limits.max_bytes or batch.full:
            return FlushReason.BYTES
        if batch.age() >= limits.max_latency_seconds:
            return FlushReason.LATENCY
        return None

    def _hand_over(self, reason: FlushReason) -> None:
        """Give the batch to the decoding stage, or pause partitions until the pipeline has room."""
        self._collect_inflight(block=False)
        if len(self._inflight) >= _PIPELINE_DEPTH:
            if reason is not FlushReason.LATENCY:
                self._pause()
            return
        batch, self._batch = self._batch, Batch()
        self.metrics.flushes.labels(reason).inc()
        self.metrics.batch_rows.observe(batch.rows)
        self.metrics.buffered_bytes.set(0)
        decoded = self._decoding.submit(self.lander.decode, batch.topics)
        self._inflight.append(self._landing.submit(self._land, decoded))
        self._resume()

    def _land(self, decoded: Future[list[DecodedTopic]]) -> LandedBatch:
        """Landing stage, in batch order; after a failure no later batch may commit past it."""
        if self._landing_failure is not None:
            raise FatalError(f"not landed: an earlier batch failed ({self._landing_failure})")
        try:
            return self.lander.land(decoded.result(), self.settings.landing_retry_seconds)
        except BaseException as error:
            self._landing_failure = error
            raise

    def _collect_inflight(self, block: bool, final: bool = False) -> None:
        """Finish landed batches in order: re-raise a failure, or commit their Kafka offsets (monitoring)."""
        while self._inflight and (block or self._inflight[0].done()):
            landed = self._inflight.popleft().result()  # a failure stops the service; nothing after it committed
            self._landed_next.update(landed.next_offsets)
            owned = [
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in landed.next_offsets.items()
                if (topic, partition) in self._assigned
            ]
            if owned and self._consumer is not None:
                try:
                    if final and not self._inflight:
                        self._consumer.commit(offsets=owned, asynchronous=False)
                    else:
                        self._consumer.commit(offsets=owned, asynchronous=True)
                except KafkaException as error:
                    logger.warning("Kafka offset commit failed (monitoring only)", extra={"error": str(error)})

    def _land_everything_held(self, reason: FlushReason) -> None:
        """Wait for the batches in flight, then land the one being collected."""
        self._collect_inflight(block=True)
        if self._batch.rows:
            self._hand_over(reason)
            self._collect_inflight(block=True)

    def _pause(self) -> None:
        if self._paused or self._consumer is None or not self._assigned:
            return
        partitions = [TopicPartition(topic, partition) for topic, partition in self._assigned]
        self._consumer.pause(partitions)
        self._paused = True
        self.metrics.paused.set(len(partitions))
        logger.info("backpressure: partitions paused until the landing thread catches up", extra={"count": len(partitions)})

    def _resume(self) -> None:
        if not self._paused or self._consumer is None:
            return
        partitions = [TopicPartition(topic, partition) for topic, partition in self._assigned]
        if partitions:
            self._consumer.resume(partitions)
        self._paused = False
        self.metrics.paused.set(0)

    def _drain(self) -> None:
        """Graceful stop: land what is buffered, wait for it, commit."""
        logger.info("stopping: landing buffered records", extra={"rows": self._batch.rows})
        self._collect_inflight(block=True, final=not self._batch.rows)
        if self._batch.rows:
            self._hand_over(FlushReason.SHUTDOWN)
            self._collect_inflight(block=True, final=True)

    # --- rebalancing -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Position each partition from its bronze table, after checking that Kafka still continues it."""
        self._collect_inflight(block=True)
        by_topic: dict[str, list[int]] = defaultdict(list)
        for partition in partitions:
            by_topic[partition.topic].append(partition.partition)
        starts: dict[tuple[str, int], int | None] = {}
        for topic, numbers in by_topic.items():
            for number, offset in self.lander.start_offsets(topic, numbers).items():
                starts[(topic, number)] = offset
        starts.update(self._checked_starts(starts))
        unknown = OFFSET_BEGINNING if self.settings.consumer.start_offset == "earliest" else OFFSET_END
        for partition in partitions:
            offset = starts[(partition.topic, partition.partition)]
            partition.offset = unknown if offset is None else offset
            self._starts[(partition.topic, partition.partition)] = partition.offset
            if offset is not None:
                self._landed_next[(partition.topic, partition.partition)] = offset
        consumer.assign(partitions)
        self.kafka.reachable()  # the group coordinator answered
        self._assigned = {(partition.topic, partition.partition) for partition in partitions}
        self._paused = False
        self._rebalanced = True
        self.metrics.assigned.set(len(self._assigned))
        logger.info(
            "partitions assigned, positioned from the Delta log",
            extra={"partitions": {f"{p.topic}/{p.partition}": p.offset for p in partitions}},
        )

    def _checked_starts(self, starts: dict[tuple[str, int], int | None]) -> dict[tuple[str, int], int]:
        """Discontinuities among the partitions bronze has landed before, handled by the policy; new starts."""
        assert self._inspector is not None
        expected = {
            (topic, partition): (offset, self.lander.table_for(topic).marks.get(f"{topic}/{partition}"))
            for (topic, partition), offset in starts.items()
            if offset is not None
        }
        try:
            identities, found = inspect_partitions(self._inspector, {topic for topic, _ in starts}, expected)
        except KafkaException as error:  # positions stay unverified; out-of-range fetches are still caught
            logger.warning("could not check the partitions' offsets against Kafka", extra={"error": describe(error)})
            return {}
        self.lander.identities.update(identities)
        changed = {}
        for discontinuity in found:
            self._act(OffsetDiscontinuityError(discontinuity.describe(), discontinuity), Stage.KAFKA)
            changed[(discontinuity.topic, discontinuity.partition)] = discontinuity.low
        return changed

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Land everything held before the partitions move to another replica."""
        revoked = {(partition.topic, partition.partition) for partition in partitions}
        logger.info("partitions revoked: landing what is held", extra={"count": len(revoked)})
        self._land_everything_held(FlushReason.REBALANCE)
        self._batch.drop(revoked)
        self._assigned -= revoked
        self.metrics.assigned.set(len(self._assigned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a clean revoke: drop their records; the next owner re-reads them."""
        lost = {(partition.topic, partition.partition) for partition in partitions}
        logger.warning("partitions lost", extra={"count": len(lost)})
        self._batch.drop(lost)
        self._assigned -= lost
        self.metrics.assigned.set(len(self._assigned))

    # --- callbacks and health ----------------------------------------------------------------

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            logger.debug("Kafka offset commit failed (monitoring only)", extra={"error": str(error)})
        else:
            self.kafka.reachable()

    def _on_kafka_error(self, error: KafkaError) -> None:
        """librdkafka's error callback: a fatal error is stored and stops the loop, which then raises it."""
        action = classify(error, Stage.KAFKA)
        if action is Action.RECREATE:
            self._fenced = self._fenced or KafkaException(error)
        elif action is Action.STOP:
            logger.error("fatal Kafka error", extra={"error": str(error)})
            self._failure = self._failure or FatalError(f"fatal Kafka error: {error}")
            self._stop.set()
        else:
            self.kafka.on_error(error)

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if self._consumer is None or now - self._lag_refreshed < _LAG_REFRESH_SECONDS:
            return
        self._lag_refreshed = now
        for topic, partition in list(self._assigned):
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            landed = self._landed_next.get((topic, partition))
            if high >= 0 and landed is not None:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - landed))

    def _liveness(self) -> Status:
        stalled = time.monotonic() - self._last_loop
        if self._failure is not None:
            return Status(False, f"failed: {self._failure}")
        if stalled > max(120.0, self.settings.consumer.session_timeout_ms / 1000):
            return Status(False, f"consumer loop stalled for {stalled:.0f}s")
        return Status(True)

    def _readiness(self) -> Status:
        if self._failure is not None:
            return Status(False, f"failed: {self._failure}")
        if not self._rebalanced:
            return Status(False, "waiting for the consumer group to assign partitions")
        return Status(True, f"{len(self._assigned)} partitions assigned")


__all__ = ["Batch", "BronzeWriter", "FlushReason"]
