"""One pipeline attempt: snapshot, then change streams, published to Kafka and checkpointed.

An attempt owns everything it starts: the MongoDB client, the producer, a bounded queue,
the stop event of its readers, the reader threads, the snapshot workers and the progress
display. ``__enter__`` opens the clients and declares every resource in an ``ExitStack``;
``__exit__`` unwinds them in order: stop the readers and copies, wait for the threads,
close the progress display, abort or flush the producer, close the client.

Reader threads (one per change stream) and snapshot workers only read MongoDB and put raw
batches on the attempt's queue; one loop publishes them, so the producer, the transaction
and the checkpoints have a single owner. A reader blocked in a getMore can outlive its
attempt's join (up to ``max_await_ms`` + 30 s): it still holds only its own attempt's
queue and stop event, which is set, so nothing it reads reaches a later attempt.

Any failure ends the attempt: the open transaction is aborted or the unacknowledged events
are dropped; ``CdcService.run`` decides what comes next (``cdc_service.actions``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cdc_service.change_stream import (
    ChangeStreamReader,
    ReadBatch,
    StreamOptions,
    current_position,
    split_events_supported,
)
from cdc_service.checkpoints import (
    Checkpoints,
    CollectionProgress,
    SnapshotState,
    StreamCheckpoint,
    load_checkpoints,
    stream_key,
)
from cdc_service.errors import HistoryLostError
from cdc_service.metrics import CdcMetrics
from cdc_service.planning import build_info, covered_collections, mongo_client, plan_streams, server_hello
from cdc_service.positions import Position, timestamp_text
from cdc_service.publisher import EncodedBatch, EventPublisher, PublishResult, client_config, encode_batch
from cdc_service.scope import NamespaceFilter, StreamSpec, choose_layout
from cdc_service.settings import CdcSettings, SnapshotMode, StreamLayout
from cdc_service.snapshot import CopyTask, SnapshotBatch, SnapshotCopied, SnapshotProgress, copy_collection
from lakehouse_common.errors import FatalError
from lakehouse_common.kafka_connection import KafkaConnection
from lakehouse_common.observability import Status

logger = logging.getLogger(__name__)

QUEUE_SIZE = 16
# How long the end of an attempt waits for each reader thread (a getMore may take longer).
READER_JOIN_TIMEOUT_S = 5.0
# A collection found by discovery (snapshot mode never) is streamed from the previous look,
# less this margin for the difference between this host's clock and the cluster's.
DISCOVERY_CLOCK_MARGIN_S = 5


@dataclass
class ServiceState:
    """What outlives an attempt: the run's request and health, owned by ``CdcService``."""

    snapshot_only: bool = False
    force_snapshot: set[str] | None = field(default_factory=set)  # None: every stream
    ready: Status = field(default_factory=lambda: Status(False, "starting"))
    loop_tick: float = field(default_factory=time.monotonic)
    consecutive_failures: int = 0
    kafka: KafkaConnection = field(default_factory=KafkaConnection)  # one log line per Kafka connection change

    def forced(self, stream_id: str) -> bool:
        return self.force_snapshot is None or stream_id in self.force_snapshot


class StreamSource(Protocol):
    """What a reader thread reads: a change stream (``ChangeStreamReader``)."""

    position: Position | None

    def open(self) -> Position | None: ...

    def read(self) -> ReadBatch: ...

    def close(self) -> None: ...


@dataclass
class LiveBatch:
    stream_id: str
    batch: ReadBatch
    encoded: EncodedBatch | None = None


@dataclass
class SourceFailed:
    stream_id: str
    error: BaseException


@dataclass
class StreamRuntime:
    """What the publishing loop knows about one stream."""

    spec: StreamSpec
    durable: StreamCheckpoint | None = None
    pending: Position | None = None
    pending_kind: str | None = None
    pending_event_id: str | None = None
    pending_cluster_time: tuple[int, int] | None = None
    last_written: float = 0.0
    events_published: int = 0
    snapshot: SnapshotState | None = None
    snapshot_dirty: bool = False
    dirty_collections: set[str] = field(default_factory=set)
    reader_started: bool = False
    topics: set[str] = field(default_factory=set)


class PipelineAttempt:
    """One attempt of the pipeline; use as a context manager, then ``run()``."""

    def __init__(
        self,
        settings: CdcSettings,
        metrics: CdcMetrics,
        namespaces: NamespaceFilter,
        state: ServiceState,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.namespaces = namespaces
        self.state = state
        self.stop = stop  # the service's: ends the loop, which then drains
        self.readers_stop = threading.Event()  # this attempt's: ends its readers and copies
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_SIZE)
        self.threads: list[threading.Thread] = []
        self.streams: dict[str, StreamRuntime] = {}
        self._client: MongoClient | None = None
        self._publisher: EventPublisher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._progress: SnapshotProgress | None = None
        self._options: StreamOptions | None = None
        self._layout = StreamLayout.COLLECTION
        self._checkpoints = Checkpoints()
        self._published_pending: Counter[tuple[str, str]] = Counter()
        self._batch_started: list[float] = []
        self._clean_exit = False
        self._resources = ExitStack()

    # -- resources -------------------------------------------------------------------------

    def __enter__(self) -> PipelineAttempt:
        """Open the clients and declare, in order, everything to close when the attempt ends."""
        resources = self._resources
        try:
            self._client = mongo_client(self.settings)
            resources.callback(self._client.close)
            self._publisher = EventPublisher(self.settings, connection=self.state.kafka)
            resources.callback(self._close_publisher)
            resources.callback(self._close_progress)
            resources.callback(self._join_readers)
            resources.callback(self._shut_down_copies)
            resources.callback(self.readers_stop.set)
        except BaseException:
            resources.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._resources.close()

    @property
    def client(self) -> MongoClient:
        if self._client is None:
            raise RuntimeError("enter the attempt before using it")
        return self._client

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            raise RuntimeError("enter the attempt before using it")
        return self._publisher

    def _close_publisher(self) -> None:
        publisher = self.publisher
        if not self._clean_exit:
            publisher.abort()
        publisher.close()

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()

    def _join_readers(self) -> None:
        for thread in self.threads:
            thread.join(timeout=READER_JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning(
                    "a reader is still waiting for MongoDB; it ends on its own and cannot reach a later attempt",
                    extra={"reader": thread.name},
                )

    def _shut_down_copies(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the attempt -----------------------------------------------------------------------

    def run(self) -> None:
        """Plan and start the streams, publish until the service stops, then drain and checkpoint."""
        settings = self.settings
        publisher = self.publisher
        publisher.topics.ensure(
            settings.topics.checkpoint_topic,
            compacted=True,
            partitions=1,
            replication=settings.topics.checkpoint_replication_factor,
        )
        self._checkpoints = load_checkpoints(
            client_config(settings, self.state.kafka), settings.topics.checkpoint_topic, settings.name
        )
        layout = choose_layout(settings.stream.layout, server_hello(self.client), self.namespaces)
        split = settings.stream.split_large_events and split_events_supported(build_info(self.client))
        self._options = StreamOptions(settings.stream, self.namespaces, split_supported=split)
        self._layout = layout
        self.metrics.streams.set(0)
        logger.info(
            "pipeline starting",
            extra={"layout": layout.value, "split_large_events": split, "delivery": settings.producer.delivery.value,
                   "value_format": settings.producer.value_format.value,
                   "checkpointed_streams": len(self._checkpoints.streams)},
        )
        specs = plan_streams(self.client, layout, self.namespaces)
        self._claim_topics(specs)
        for spec in specs:
            self._add_stream(spec)
        self._commit(force=True)
        self.state.ready = Status(True)
        self._loop()
        self._clean_exit = True

    def _claim_topics(self, specs: Iterable[StreamSpec]) -> None:
        """Refuse, before anything is published, two namespaces that would share a topic."""
        for spec in specs:
            for namespace in covered_collections(self.client, spec, self.namespaces):
                self.publisher.claim_topic(*namespace.split(".", 1))

    def _loop(self) -> None:
        settings = self.settings
        last_commit = time.monotonic()
        last_discovery = time.monotonic()
        last_look = time.time()
        while not self.stop.is_set():
            self.state.loop_tick = time.monotonic()
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            now = time.monotonic()
            if self.publisher.pending_events >= settings.max_batch_events or now - last_commit >= settings.checkpoint_interval_s:
                self._commit()
                last_commit = now
            if self.state.snapshot_only and self._snapshots_finished():
                self._commit(force=True)
                logger.info("snapshot finished; stream checkpoints recorded")
                return
            if self._layout is not StreamLayout.DEPLOYMENT and now - last_discovery >= settings.stream.discovery_interval_s:
                last_discovery = now
                look = time.time()
                for spec in plan_streams(self.client, self._layout, self.namespaces):
                    if spec.stream_id not in self.streams:
                        logger.info("new stream in scope", extra={"stream": spec.stream_id})
                        self._claim_topics([spec])
                        self._add_stream(spec, seen_since=last_look)
                last_look = look
        self._drain()

    def _drain(self) -> None:
        """Stop reading, publish what was already read, flush and checkpoint, within the bound."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.readers_stop.set()
        self.state.ready = Status(False, "stopping")
        while time.monotonic() < deadline:
            try:
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                if not any(thread.is_alive() for thread in self.threads):
                    break
                continue
            if isinstance(item, SourceFailed):
                continue
            self._handle(item)
        self._commit(force=True, timeout=max(1.0, deadline - time.monotonic()))
        logger.info("stopped after draining; checkpoints written")

    # -- streams ---------------------------------------------------------------------------

    def _add_stream(self, spec: StreamSpec, *, seen_since: float | None = None) -> None:
        """Start a stream: from its checkpoint, by a snapshot, or (snapshot mode never) from now,
        or for a collection found by discovery, from the previous look (``seen_since``), so its
        first events are not missed."""
        runtime = StreamRuntime(spec)
        self.streams[spec.stream_id] = runtime
        forced = self.state.forced(spec.stream_id)
        checkpoint = None if forced else self._checkpoints.streams.get(spec.stream_id)
        if spec.layout is StreamLayout.COLLECTION:
            assert spec.database is not None and spec.collection is not None
            runtime.topics.add(self.publisher.route(spec.database, spec.collection)[0])
        if self.state.snapshot_only and not forced:
            return
        if checkpoint is not None:
            runtime.durable = checkpoint
            runtime.last_written = time.monotonic()
            self._start_reader(runtime, checkpoint.position)
        elif self.settings.snapshot.mode is SnapshotMode.NEVER and not forced:
            start = None if seen_since is None else Position.from_time((int(seen_since) - DISCOVERY_CLOCK_MARGIN_S, 0))
            self._start_reader(runtime, start)
            if start is not None:
                runtime.pending, runtime.pending_kind = start, "start"
        else:
            self._begin_snapshot(runtime, self._checkpoints.snapshots.get(spec.stream_id), resume=not forced)

    def _start_reader(self, runtime: StreamRuntime, position: Position | None) -> None:
        assert self._options is not None
        reader = ChangeStreamReader(self.client, runtime.spec, self._options, position, stop=self.readers_stop)
        runtime.reader_started = True
        self.spawn_reader(runtime.spec.stream_id, reader, fresh=position is None)
        self.metrics.streams.set(sum(1 for r in self.streams.values() if r.reader_started))
        logger.info(
            "streaming",
            extra={"stream": runtime.spec.stream_id, "from": position.describe() if position else "now"},
        )

    def spawn_reader(self, stream_id: str, reader: StreamSource, *, fresh: bool) -> threading.Thread:
        """A thread reading ``reader`` into this attempt's queue until this attempt's readers stop."""
        thread = threading.Thread(
            target=self._read_stream, args=(stream_id, reader, fresh), name=f"stream-{stream_id}", daemon=True
        )
        self.threads.append(thread)
        thread.start()
        return thread

    def _read_stream(self, stream_id: str, reader: StreamSource, fresh: bool) -> None:
        idle = self.settings.stream.idle_poll_interval_s
        value_format = self.settings.producer.value_format
        try:
            if fresh:
                start = reader.open()
                if start is not None:
                    self._put(LiveBatch(stream_id, ReadBatch([], start)))
            last_position = reader.position
            while not self.readers_stop.is_set():
                started = time.monotonic()
                batch = reader.read()
                if self.readers_stop.is_set():
                    return  # the attempt ended while this read waited: what it brought is read again later
                if batch.events or (batch.position is not None and batch.position != last_position):
                    last_position = batch.position or last_position
                    # Serialized here, off the publishing thread (the native codec releases the GIL).
                    encoded = encode_batch(batch.events, value_format) if batch.events else None
                    if not self._put(LiveBatch(stream_id, batch, encoded)):
                        return
                if not batch.events and time.monotonic() - started < idle:
                    self.readers_stop.wait(idle)
        except BaseException as error:  # noqa: BLE001 - handed to the loop, which decides
            self._put(SourceFailed(stream_id, error))
        finally:
            reader.close()

    def _put(self, item: Any) -> bool:
        """Hand an item to this attempt's loop; False once this attempt's readers are stopped."""
        while not self.readers_stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # -- snapshots -------------------------------------------------------------------------

    def _begin_snapshot(self, runtime: StreamRuntime, previous: SnapshotState | None, *, resume: bool) -> None:
        """Copy the stream's collections: resume ``previous`` if it is unfinished (and ``resume``),
        else take a new position. Every attempt number of a collection is above all earlier ones."""
        spec = runtime.spec
        if resume and previous is not None and not previous.completed:
            state = previous
            for namespace in covered_collections(self.client, spec, self.namespaces):
                if namespace not in state.collections:
                    state = state.with_collection(namespace, CollectionProgress())
            logger.info("resuming an interrupted snapshot", extra={"stream": spec.stream_id,
                        "done": sorted(n for n, p in state.collections.items() if p.done)})
        else:
            # The position first, then the list: a collection created in between is listed and
            # copied, and its changes after the position are streamed. Listed first, it would be
            # neither (its creation and first writes would lie before the position).
            assert self._options is not None
            start = current_position(self.client, spec, self._options)
            namespaces = covered_collections(self.client, spec, self.namespaces)
            earlier = previous.collections if previous is not None else {}
            cluster_time = start.operation_time or (int(time.time()), 0)
            state = SnapshotState(
                spec.stream_id, start.position,
                {namespace: CollectionProgress(attempt=earlier.get(namespace, CollectionProgress()).attempt)
                 for namespace in namespaces},
                cluster_time=cluster_time,
            )
            logger.info("snapshot starting", extra={"stream": spec.stream_id, "position": start.position.describe(),
                                                   "collections": len(namespaces)})
        # Each attempt is recorded before it copies anything: its ids sort above the last one's.
        state = replace(
            state,
            collections={
                name: progress if progress.done else CollectionProgress(False, progress.attempt + 1, 0)
                for name, progress in state.collections.items()
            },
        )
        runtime.snapshot = state
        runtime.snapshot_dirty = True
        runtime.dirty_collections.update(state.collections)
        self._commit(force=True)
        position_id = state.position.event_id
        if position_id is None:
            raise FatalError(f"stream {spec.stream_id}: snapshot position has no resume token")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.snapshot.parallelism, thread_name_prefix="snapshot")
        if self._progress is None:
            self._progress = SnapshotProgress(self.settings.progress_bar, self.settings.snapshot.progress_log_interval_s)
        todo = [name for name, progress in state.collections.items() if not progress.done]
        for namespace in todo:
            database, collection = namespace.split(".", 1)
            runtime.topics.add(self.publisher.route(database, collection)[0])
            task = CopyTask(spec.stream_id, database, collection, position_id,
                            state.collections[namespace].attempt, state.cluster_time)
            try:
                estimate = self.client[database][collection].estimated_document_count()
            except PyMongoError:
                estimate = 0
            self._progress.begin(namespace, estimate)
            self._executor.submit(self._copy, task)
        self.metrics.snapshot_collections_remaining.inc(len(todo))
        if not todo:
            self._snapshot_complete(runtime)

    def _copy(self, task: CopyTask) -> None:
        try:
            copy_collection(
                self.client, task, self._put, self.readers_stop, self.settings.snapshot.batch_size,
                self.settings.producer.value_format,
            )
        except BaseException as error:  # noqa: BLE001 - handed to the loop
            self._put(SourceFailed(task.stream_id, error))

    def _snapshot_complete(self, runtime: StreamRuntime) -> None:
        assert runtime.snapshot is not None
        runtime.snapshot = replace(runtime.snapshot, completed=True)
        runtime.snapshot_dirty = True
        runtime.pending = runtime.snapshot.position
        runtime.pending_kind = "snapshot"
        runtime.pending_event_id = runtime.snapshot.position.event_id
        runtime.pending_cluster_time = runtime.snapshot.cluster_time
        logger.info("snapshot complete", extra={"stream": runtime.spec.stream_id})

    def _snapshots_finished(self) -> bool:
        return all(
            runtime.snapshot is None or (runtime.snapshot.completed and not runtime.snapshot_dirty)
            for runtime in self.streams.values()
        )

    # -- publishing ------------------------------------------------------------------------

    def _handle(self, item: Any) -> None:
        if isinstance(item, SourceFailed):
            error = item.error
            if isinstance(error, HistoryLostError):
                runtime = self.streams.get(item.stream_id)
                durable = runtime.durable if runtime else None
                raise HistoryLostError(
                    describe_history_lost(error, durable),
                    stream_id=error.stream_id,
                    code=error.code,
                    checkpoint_kind=durable.kind if durable else None,
                ) from error
            raise error
        publisher = self.publisher
        if isinstance(item, LiveBatch):
            runtime = self.streams[item.stream_id]
            batch = item.batch
            if item.encoded is not None:
                result = publisher.publish(
                    item.encoded, fallback_topics=self._fallback_topics(runtime),
                    in_scope=self.namespaces.collection_in_scope,
                )
                self._account(result, runtime)
                runtime.pending_kind = "event"
            elif runtime.pending_kind is None:
                runtime.pending_kind = "heartbeat" if runtime.durable is not None else "start"
            if batch.position is not None:
                runtime.pending = batch.position
                runtime.pending_event_id = batch.position.event_id
            now = time.time()
            if batch.last_cluster_time is not None:
                runtime.pending_cluster_time = batch.last_cluster_time
                self.metrics.lag.labels(item.stream_id).set(max(0.0, now - batch.last_cluster_time[0]))
            elif batch.operation_time is not None:
                self.metrics.lag.labels(item.stream_id).set(max(0.0, now - batch.operation_time[0]))
        elif isinstance(item, SnapshotBatch):
            runtime = self.streams[item.task.stream_id]
            result = publisher.publish(item.events)
            self._account(result, runtime)
            self.metrics.snapshot_documents.labels(item.task.namespace).inc(len(item.events.events))
            if self._progress is not None:
                self._progress.advance(item.task.namespace, item.copied)
        elif isinstance(item, SnapshotCopied):
            runtime = self.streams[item.task.stream_id]
            assert runtime.snapshot is not None
            runtime.snapshot = runtime.snapshot.with_collection(
                item.task.namespace, CollectionProgress(True, item.task.attempt, item.copied)
            )
            runtime.snapshot_dirty = True
            runtime.dirty_collections.add(item.task.namespace)
            self.metrics.snapshot_collections_remaining.dec()
            if self._progress is not None:
                self._progress.finish(item.task.namespace, item.copied)
            if all(progress.done for progress in runtime.snapshot.collections.values()):
                self._snapshot_complete(runtime)

    def _fallback_topics(self, runtime: StreamRuntime) -> Callable[[str | None], Iterable[str]]:
        """Where events without a collection go: the stream's own topic(s)."""
        spec = runtime.spec
        if spec.layout is StreamLayout.COLLECTION:
            return lambda database: runtime.topics
        return lambda database: self.publisher.known_topics(database or spec.database)

    def _account(self, result: PublishResult, runtime: StreamRuntime) -> None:
        for (operation, namespace), count in result.by_operation.items():
            self.metrics.events_read.labels(operation, namespace).inc(count)
        self._published_pending.update(result.published)
        runtime.events_published += result.produced
        if result.skipped:
            self.metrics.events_skipped.inc(result.skipped)
        if result.dead_lettered:
            self.metrics.dead_letters.labels("unpublishable").inc(result.dead_lettered)
        if result.claimed:
            self.metrics.claimed_events.inc(result.claimed)
            self.metrics.claimed_bytes.inc(result.claimed_bytes)
        if result.produced:
            self._batch_started.append(time.monotonic())

    def _commit(self, *, force: bool = False, timeout: float | None = None) -> None:
        """Make produced events durable, then checkpoint the streams they advanced."""
        settings = self.settings
        now = time.monotonic()
        records: dict[bytes, bytes | None] = {}
        written: list[tuple[StreamRuntime, StreamCheckpoint | None]] = []
        for runtime in self.streams.values():
            if runtime.snapshot_dirty and runtime.snapshot is not None:
                records.update(runtime.snapshot.records(settings.name, runtime.dirty_collections))
                written.append((runtime, None))
            if runtime.pending is None or runtime.pending_kind is None:
                continue
            if runtime.pending_kind == "heartbeat" and not force and now - runtime.last_written < settings.heartbeat_interval_s:
                continue
            if runtime.durable is not None and runtime.durable.position == runtime.pending and runtime.pending_kind == "heartbeat":
                runtime.pending_kind = None
                continue
            checkpoint = StreamCheckpoint(
                runtime.spec.stream_id,
                runtime.pending,
                runtime.pending_kind,
                event_id=runtime.pending_event_id,
                cluster_time=runtime.pending_cluster_time,
                events_published=runtime.events_published,
            )
            records[stream_key(settings.name, runtime.spec.stream_id)] = checkpoint.to_json()
            written.append((runtime, checkpoint))
        publisher = self.publisher
        if not records and not publisher.pending_events and not force:
            return
        publisher.commit(records, settings.topics.checkpoint_topic, timeout or settings.producer.delivery_timeout_ms / 1000)
        self.state.consecutive_failures = 0
        acknowledged = time.monotonic()
        for started in self._batch_started:
            self.metrics.publish_latency.observe(acknowledged - started)
        self._batch_started.clear()
        for (operation, namespace), count in self._published_pending.items():
            self.metrics.events_published.labels(operation, namespace).inc(count)
        self._published_pending.clear()
        start_readers: list[StreamRuntime] = []
        for runtime, durable in written:
            if durable is None:
                runtime.snapshot_dirty = False
                runtime.dirty_collections.clear()
                continue
            runtime.durable = durable
            runtime.last_written = acknowledged
            runtime.pending_kind = None
            self.metrics.checkpoint_written(runtime.spec.stream_id, durable.kind)
            if durable.kind == "snapshot":
                if self.state.force_snapshot is not None and not self.state.snapshot_only:
                    self.state.force_snapshot.discard(runtime.spec.stream_id)
                if not runtime.reader_started and not self.state.snapshot_only:
                    start_readers.append(runtime)
        for runtime in start_readers:
            # Live events only after every snapshot record of the stream is durable.
            self._start_reader(runtime, runtime.durable.position if runtime.durable else None)


def describe_history_lost(error: HistoryLostError, checkpoint: StreamCheckpoint | None) -> str:
    """The actionable message for a lost resume point: what, when, and the command to recover."""
    since = timestamp_text(checkpoint.cluster_time) if checkpoint else "unknown"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f"{error} -- changes of stream {error.stream_id} between {since} and {now} are no longer in the oplog "
        f"and cannot be streamed. Copy its collections again and continue from there with "
        f"`cdc-service snapshot --stream {error.stream_id}` then `cdc-service run`, or set "
        f"CDC_ON_HISTORY_LOST=resnapshot to do this automatically."
    )


__all__ = [
    "DISCOVERY_CLOCK_MARGIN_S",
    "READER_JOIN_TIMEOUT_S",
    "PipelineAttempt",
    "ServiceState",
    "StreamSource",
    "describe_history_lost",
]
