"""One pipeline attempt: snapshot, then change streams, published to Kafka and checkpointed.

An attempt owns everything it starts: the MongoDB client, the producer, a bounded queue,
the stop event of its readers, the reader threads, the snapshot and chunk workers, the
chunked copies in flight and the progress display. ``__enter__`` opens the clients and
declares every resource in an ``ExitStack``; ``__exit__`` unwinds them in order: stop the
readers and copies, wait for the threads, close the progress display, abort or flush the
producer, close the client.

Reader threads (one per change stream) and snapshot workers only read MongoDB and put raw
batches on the attempt's queue; one loop publishes them, so the producer, the transaction
and the checkpoints have a single owner. With a signal collection configured, one more
reader follows it: its events are signals and watermarks, consumed by the loop, which runs
the chunked copies while streaming (``cdc_service.incremental``). A reader blocked in a
getMore can outlive its attempt's join (up to ``max_await_ms`` + 30 s): it still holds only its own attempt's
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

from bson import Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cdc_service.actions import copy_refused
from cdc_service.change_stream import (
    ChangeStreamReader,
    ReadBatch,
    StreamOptions,
    current_position,
    split_events_supported,
)
from cdc_service.checkpoints import (
    CheckpointKind,
    Checkpoints,
    CollectionProgress,
    CopyProgress,
    SnapshotState,
    StreamCheckpoint,
    load_checkpoints,
    stream_key,
)
from cdc_service.copy_requests import CopyRequests
from cdc_service.errors import HistoryLostError
from cdc_service.incremental import (
    ChunkRead,
    ChunkTask,
    CopyFailed,
    FinishedChunk,
    IncrementalCopies,
    finished_entry,
    read_between_watermarks,
)
from cdc_service.metrics import CdcMetrics
from cdc_service.planning import build_info, covered_collections, mongo_client, plan_streams, server_hello
from cdc_service.positions import Position, timestamp_text
from cdc_service.publisher import EncodedBatch, EventPublisher, PublishResult, client_config, encode_batch
from cdc_service.scope import NamespaceFilter, StreamSpec, choose_layout
from cdc_service.settings import CdcSettings, SnapshotMode, StreamLayout
from cdc_service.signals import (
    SignalBox,
    decode_document,
    value_of_text,
)
from cdc_service.snapshot import (
    CopyTask,
    SnapshotBatch,
    SnapshotCopied,
    SnapshotProgress,
    build_snapshot_complete_event,
    build_snapshot_events,
    copy_collection,
)
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
class PendingSignals:
    """Signal documents nobody answered yet, read once the signal stream is open (see ``_read_pending_signals``)."""

    documents: list[dict[str, Any]]


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
    pending_kind: CheckpointKind | None = None
    pending_event_id: str | None = None
    pending_cluster_time: tuple[int, int] | None = None
    last_written: float = 0.0
    events_published: int = 0
    snapshot: SnapshotState | None = None
    snapshot_dirty: bool = False
    dirty_collections: set[str] = field(default_factory=set)
    reader_started: bool = False
    topics: set[str] = field(default_factory=set)
    signals: bool = False  # the signal collection's stream: consumed, never published
    read_position: str | None = None  # event id of the last position the loop took from the reader
    # The stream reads from a known point: started at a position, or (started at "now") its
    # reader reported where "now" was. Before that, a change it would miss could fall inside a
    # chunk's window (or a watermark would never come back), so no chunk starts.
    opened: bool = False
    # A copy asked for again (``snapshot --stream``) of a stream that has a checkpoint still in
    # the oplog: once the copy is durable the stream goes on from that checkpoint, not from the
    # copy's position, so no change made in between is skipped (a copy cannot show a delete).
    replay_from: StreamCheckpoint | None = None


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
        snapshot = settings.snapshot
        self._copies = IncrementalCopies(
            settings.name,
            snapshot.chunk_size,
            snapshot.chunk_max_bytes,
            metrics,
            progress_log_interval_seconds=snapshot.progress_log_interval_seconds,
            snapshot_attempt=self._snapshot_attempt,
        )
        self._signal_box: SignalBox | None = None
        self._signals_wanted = bool(settings.snapshot.signal_collection) and not state.snapshot_only
        self._requests: CopyRequests | None = None
        self._chunk_workers: ThreadPoolExecutor | None = None
        self._last_discovery = time.monotonic()
        self._last_look = time.time()

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

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
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
        for executor in (self._executor, self._chunk_workers):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

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
            extra={
                "layout": layout.value,
                "split_large_events": split,
                "delivery": settings.producer.delivery.value,
                "value_format": settings.producer.value_format.value,
                "checkpointed_streams": len(self._checkpoints.streams),
            },
        )
        specs = plan_streams(self.client, layout, self.namespaces)
        self._claim_topics(specs)
        for spec in specs:
            self._add_stream(spec)
        if self._signals_wanted:
            assert settings.snapshot.signal_collection is not None
            self._start_signals(settings.snapshot.signal_collection)
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
        self._last_discovery = time.monotonic()
        self._last_look = time.time()
        while not self.stop.is_set():
            self.state.loop_tick = time.monotonic()
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            now = time.monotonic()
            if (
                self.publisher.pending_events >= settings.max_batch_events
                or now - last_commit >= settings.checkpoint_interval_seconds
            ):
                self._commit()
                last_commit = now
            if self.state.snapshot_only and self._snapshots_finished():
                self._commit(force=True)
                logger.info("snapshot finished; stream checkpoints recorded")
                return
            self._schedule_copies()
            if now - self._last_discovery >= settings.stream.discovery_interval_seconds:
                self._discover()
        self._drain()

    def _discover(self) -> None:
        """New streams (database and collection layouts); with signals, collections new to the scope are copied."""
        self._last_discovery = time.monotonic()
        look = time.time()
        if self._layout is not StreamLayout.DEPLOYMENT:
            for spec in plan_streams(self.client, self._layout, self.namespaces):
                if spec.stream_id not in self.streams:
                    logger.info("new stream in scope", extra={"stream": spec.stream_id})
                    self._claim_topics([spec])
                    self._add_stream(spec, seen_since=self._last_look)
        if self._signal_box is not None:
            self._copy_new_collections()
        self._last_look = look

    def _drain(self) -> None:
        """Stop reading, publish what was already read, flush and checkpoint, within the bound."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
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
        first events are not missed. With signals (and snapshot mode initial) a stream new to a
        service that ran before (a collection added to the include list, found by discovery)
        starts at once and its existing documents are copied in chunks while it streams."""
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
        elif not forced and (self.settings.snapshot.mode is SnapshotMode.NEVER or self._copied_while_streaming(spec, seen_since)):
            start = None if seen_since is None else Position.from_time((int(seen_since) - DISCOVERY_CLOCK_MARGIN_S, 0))
            self._start_reader(runtime, start)
            if start is not None:
                runtime.pending, runtime.pending_kind = start, CheckpointKind.START
            if self.settings.snapshot.mode is SnapshotMode.INITIAL and seen_since is not None:
                for namespace in covered_collections(self.client, spec, self.namespaces):
                    self._copies.begin(namespace, spec.stream_id, reason="new-collection")
            # At start, _start_signals copies the stream's collections once the checkpointed copies are taken up.
        else:
            self._begin_snapshot(runtime, self._checkpoints.snapshots.get(spec.stream_id), resume=not forced)

    def _copied_while_streaming(self, spec: StreamSpec, seen_since: float | None) -> bool:
        """Whether a stream without checkpoint skips the snapshot: its collections are copied in chunks while it streams.

        So it is for a stream found by discovery, and at start for a stream new to a service
        that ran before (a collection added to the include list), unless a snapshot of it was
        interrupted (that one resumes). A service's first start takes the initial snapshot.
        """
        if self.settings.snapshot.mode is not SnapshotMode.INITIAL or not self._signals_wanted:
            return False
        if seen_since is not None:
            return True
        previous = self._checkpoints.snapshots.get(spec.stream_id)
        return bool(self._checkpoints.streams) and (previous is None or previous.completed)

    def _start_reader(self, runtime: StreamRuntime, position: Position | None) -> None:
        assert self._options is not None
        reader = ChangeStreamReader(self.client, runtime.spec, self._options, position, stop=self.readers_stop)
        runtime.reader_started = True
        runtime.opened = position is not None
        if position is not None:
            runtime.read_position = position.event_id
        # Followed from now, the signal stream has not seen the signals written before: read them once it is open.
        after_open = self._read_pending_signals if runtime.signals and position is None else None
        self.spawn_reader(
            runtime.spec.stream_id, reader, fresh=position is None, encode=not runtime.signals, after_open=after_open
        )
        self.metrics.streams.set(sum(1 for r in self.streams.values() if r.reader_started and not r.signals))
        logger.info(
            "streaming",
            extra={"stream": runtime.spec.stream_id, "from": position.describe() if position else "now"},
        )

    def spawn_reader(
        self,
        stream_id: str,
        reader: StreamSource,
        *,
        fresh: bool,
        encode: bool = True,
        after_open: Callable[[], Any] | None = None,
    ) -> threading.Thread:
        """A thread reading ``reader`` into this attempt's queue until this attempt's readers stop
        (``after_open``: what the thread reads and hands on once the stream is open)."""
        thread = threading.Thread(
            target=self._read_stream,
            args=(stream_id, reader, fresh, encode, after_open),
            name=f"stream-{stream_id}",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()
        return thread

    def _read_stream(
        self,
        stream_id: str,
        reader: StreamSource,
        fresh: bool,
        encode: bool = True,
        after_open: Callable[[], Any] | None = None,
    ) -> None:
        idle = self.settings.stream.idle_poll_interval_seconds
        value_format = self.settings.producer.value_format
        try:
            if fresh:
                start = reader.open()
                if start is not None:
                    self._put(LiveBatch(stream_id, ReadBatch([], start)))
            if after_open is not None and not self._put(after_open()):
                return
            last_position = reader.position
            while not self.readers_stop.is_set():
                started = time.monotonic()
                batch = reader.read()
                if self.readers_stop.is_set():
                    return  # the attempt ended while this read waited: what it brought is read again later
                if batch.events or (batch.position is not None and batch.position != last_position):
                    last_position = batch.position or last_position
                    # Serialized here, off the publishing thread (the native codec releases the GIL).
                    encoded = encode_batch(batch.events, value_format) if batch.events and encode else None
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
            logger.info(
                "resuming an interrupted snapshot",
                extra={"stream": spec.stream_id, "done": sorted(n for n, p in state.collections.items() if p.done)},
            )
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
                spec.stream_id,
                start.position,
                {
                    namespace: CollectionProgress(attempt=earlier.get(namespace, CollectionProgress()).attempt)
                    for namespace in namespaces
                },
                cluster_time=cluster_time,
            )
            logger.info(
                "snapshot starting",
                extra={"stream": spec.stream_id, "position": start.position.describe(), "collections": len(namespaces)},
            )
            runtime.replay_from = self._resumable_checkpoint(spec)
        # Each attempt is recorded before it copies anything: its ids sort above the last one's, the
        # chunked copies' too (one attempt counter per collection, so no two records share an id).
        state = replace(
            state,
            collections={
                name: progress
                if progress.done
                else CollectionProgress(False, max(progress.attempt, self._copy_attempt(name)) + 1, 0)
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
            self._progress = SnapshotProgress(self.settings.progress_bar, self.settings.snapshot.progress_log_interval_seconds)
        todo = [name for name, progress in state.collections.items() if not progress.done]
        for namespace in todo:
            database, collection = namespace.split(".", 1)
            runtime.topics.add(self.publisher.route(database, collection)[0])
            task = CopyTask(
                spec.stream_id, database, collection, position_id, state.collections[namespace].attempt, state.cluster_time
            )
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
                self.client,
                task,
                self._put,
                self.readers_stop,
                self.settings.snapshot.batch_size,
                self.settings.producer.value_format,
            )
        except BaseException as error:  # noqa: BLE001 - handed to the loop
            self._put(SourceFailed(task.stream_id, error))

    def _snapshot_attempt(self, namespace: str) -> int:
        """The highest attempt any snapshot of this service began for ``namespace`` (0: none)."""
        states = [*self._checkpoints.snapshots.values(), *(r.snapshot for r in self.streams.values() if r.snapshot)]
        return max((state.collections[namespace].attempt for state in states if namespace in state.collections), default=0)

    def _copy_attempt(self, namespace: str) -> int:
        """The highest attempt any chunked copy of this service began for ``namespace`` (0: none)."""
        copies = [self._copies.progress(namespace), self._checkpoints.copies.get(namespace)]
        return max((progress.attempt for progress in copies if progress is not None), default=0)

    def _resumable_checkpoint(self, spec: StreamSpec) -> StreamCheckpoint | None:
        """The stream's checkpoint, if the oplog still has it (a copy taken again goes on from there)."""
        checkpoint = self._checkpoints.streams.get(spec.stream_id)
        if checkpoint is None:
            return None
        assert self._options is not None
        reader = ChangeStreamReader(self.client, spec, self._options, checkpoint.position)
        try:
            reader.open()
        except HistoryLostError:
            logger.warning(
                "the stream's checkpoint is no longer in the oplog: it goes on from the new copy's position "
                "(documents deleted since the checkpoint stay in the lake until silver closes them by absence)",
                extra={"stream": spec.stream_id, "checkpoint": checkpoint.position.describe()},
            )
            return None
        finally:
            reader.close()
        return checkpoint

    def _snapshot_complete(self, runtime: StreamRuntime) -> None:
        assert runtime.snapshot is not None
        runtime.snapshot = replace(runtime.snapshot, completed=True)
        runtime.snapshot_dirty = True
        resume = runtime.replay_from
        runtime.pending = resume.position if resume else runtime.snapshot.position
        runtime.pending_kind = CheckpointKind.SNAPSHOT
        runtime.pending_event_id = resume.event_id if resume else runtime.snapshot.position.event_id
        runtime.pending_cluster_time = resume.cluster_time if resume else runtime.snapshot.cluster_time
        logger.info(
            "snapshot complete",
            extra={
                "stream": runtime.spec.stream_id,
                "streams_from": "its previous checkpoint (changes since are replayed)" if resume else "the copy's position",
            },
        )

    def _publish_snapshot_complete(self, runtime: StreamRuntime, copy: CopyTask, documents: int) -> None:
        """The marker that a full copy published all its records: after them, by the same producer,
        and in the commit (the transaction) that records the copy done, so the copy is never done
        without it. Silver closes by it the documents the copy did not find."""
        self._account(self.publisher.publish([build_snapshot_complete_event(copy, documents)]), runtime)
        logger.info(
            "snapshot-complete marker published",
            extra={"namespace": copy.namespace, "position": copy.position_id, "attempt": copy.attempt, "documents": documents},
        )

    def _snapshots_finished(self) -> bool:
        return all(
            runtime.snapshot is None or (runtime.snapshot.completed and not runtime.snapshot_dirty)
            for runtime in self.streams.values()
        )

    # -- copies while streaming (signals) ----------------------------------------------------

    def _start_signals(self, namespace: str) -> None:
        """Follow the signal collection (from its checkpoint, else from now) and take up the copies."""
        self._signal_box = SignalBox(self.client, namespace)
        self._copies.restore(self._checkpoints.copies, self._in_scope, self._stream_covering)
        self._requests = CopyRequests(
            self.settings.name,
            self.client,
            self._signal_box,
            self._copies,
            self.metrics,
            in_scope=self._in_scope,
            covering_stream=self._stream_covering,
            discovery_interval_seconds=self.settings.stream.discovery_interval_seconds,
        )
        database, collection = namespace.split(".", 1)
        runtime = StreamRuntime(StreamSpec(StreamLayout.COLLECTION, database, collection), signals=True)
        self.streams[runtime.spec.stream_id] = runtime
        checkpoint = self._checkpoints.streams.get(runtime.spec.stream_id)
        if checkpoint is not None:
            runtime.durable = checkpoint
            runtime.last_written = time.monotonic()
        self._start_reader(runtime, checkpoint.position if checkpoint else None)
        self._copy_new_collections()

    def _signals_lost(self, runtime: StreamRuntime, error: HistoryLostError) -> None:
        logger.error(
            "the signal collection's stream cannot resume: following it from now; signals nobody answered are "
            "read from the collection, and chunks in flight begin again (their watermarks may be gone)",
            extra={"stream": runtime.spec.stream_id, "code": error.code, "error": str(error)},
        )
        runtime.durable = None
        self._copies.reopen_windows()
        self._start_reader(runtime, None)

    def _read_pending_signals(self) -> PendingSignals:
        """On a reader thread, once the signal stream is open: the signals written before it that nobody answered."""
        assert self._signal_box is not None
        return PendingSignals(self._signal_box.pending(self.settings.name))

    def _in_scope(self, namespace: str) -> bool:
        database, collection = namespace.split(".", 1)
        return self.namespaces.collection_in_scope(database, collection)

    def _stream_covering(self, namespace: str) -> str | None:
        database, collection = namespace.split(".", 1)
        for runtime in self.streams.values():
            if not runtime.signals and runtime.spec.covers(database, collection):
                return runtime.spec.stream_id
        return None

    def _streaming(self, stream_id: str) -> bool:
        """A chunk needs the collection's stream and the signal collection's (its watermarks) open."""
        runtime = self.streams.get(stream_id)
        return runtime is not None and runtime.opened and any(other.signals and other.opened for other in self.streams.values())

    def _read_position(self, stream_id: str) -> str | None:
        runtime = self.streams.get(stream_id)
        return runtime.read_position if runtime is not None else None

    def _copy_new_collections(self) -> None:
        """Copy, in chunks, the collections a running stream reports that were never copied
        (snapshot mode initial): newly in the include list, renamed into the scope, created
        while the service ran."""
        if self.settings.snapshot.mode is not SnapshotMode.INITIAL:
            return
        known = self._copies.known()
        for state in self._checkpoints.snapshots.values():
            known.update(state.collections)
        for runtime in self.streams.values():
            if runtime.snapshot is not None:
                known.update(runtime.snapshot.collections)
        for runtime in list(self.streams.values()):
            if runtime.signals or not runtime.reader_started:
                continue
            for namespace in covered_collections(self.client, runtime.spec, self.namespaces):
                if namespace not in known:
                    self._copies.begin(namespace, runtime.spec.stream_id, reason="new-collection")
                    known.add(namespace)

    def _schedule_copies(self) -> None:
        if self._signal_box is None:
            return
        for task in self._copies.schedule(self._streaming):
            if self._chunk_workers is None:
                self._chunk_workers = ThreadPoolExecutor(self.settings.snapshot.parallelism, thread_name_prefix="chunk")
            self._chunk_workers.submit(self._read_chunk, task)

    def _read_chunk(self, task: ChunkTask) -> None:
        """A worker: watermarks and the chunk; a query MongoDB refuses fails that copy alone."""
        if self.readers_stop.is_set() or self._signal_box is None:
            return
        try:
            read = read_between_watermarks(self.client, self._signal_box, task)
        except BaseException as error:  # noqa: BLE001 - handed to the loop, which decides
            reason = copy_refused(error)
            self._put(CopyFailed(task, reason) if reason is not None else SourceFailed(task.stream_id, error))
            return
        self._put(read)

    def _background(self, work: Callable[[], None]) -> None:
        """MongoDB writes nothing waits for (answers to signals, watermark clean-up), on a chunk worker."""
        if self._chunk_workers is None:
            self._chunk_workers = ThreadPoolExecutor(self.settings.snapshot.parallelism, thread_name_prefix="chunk")

        def run() -> None:
            try:
                work()
            except PyMongoError as error:
                logger.warning("updating the signal collection failed", extra={"error": str(error)})

        self._chunk_workers.submit(run)

    def _publish_finished_chunks(self) -> None:
        """Publish the chunks whose stream passed their high watermark, and make them durable at once."""
        if self._signal_box is None:
            return
        chunks = self._copies.finished(self._read_position)
        for chunk in chunks:
            self._publish_chunk(chunk)
        if chunks:
            self._commit(force=True)

    def _publish_chunk(self, chunk: FinishedChunk) -> None:
        """The chunk's records; after the last chunk of a full copy, its snapshot-complete marker."""
        progress = chunk.progress
        runtime = self.streams[progress.stream_id]
        if chunk.documents:
            database, collection = progress.namespace.split(".", 1)
            task = CopyTask(progress.stream_id, database, collection, chunk.high, progress.attempt, chunk.cluster_time)
            events = build_snapshot_events(chunk.documents, task, chunk.ordinal, chunk.shard_key)
            result = self.publisher.publish(encode_batch(events, self.settings.producer.value_format))
            self._account(result, runtime)
        copy = chunk.completed_full_copy()
        if copy is not None:
            self._publish_snapshot_complete(runtime, copy, progress.copied)

    def _copy_ended(self, progress: CopyProgress) -> None:
        """A copy ended durably: remove its watermarks, answer its signal."""
        box = self._signal_box
        if box is None:
            return
        signal_id = progress.signal_id
        done = signal_id is not None and self._copies.signal_done(signal_id)

        def answer() -> None:
            box.delete_watermarks_of(progress.copy_id)
            if signal_id is not None:
                box.finish(value_of_text(signal_id), finished_entry(progress), done=done)

        self._background(answer)

    def _on_signal_events(self, events: list[RawBSONDocument]) -> None:
        """The signal collection's events: watermarks of chunks, and signal documents inserted."""
        for event in events:
            try:
                if event["operationType"] != "insert":
                    continue  # the service's own answers and clean-up, or an operator's edit
                event_id = event["_id"]["_data"]
                document_id = event["documentKey"]["_id"]
                cluster_time = event.get("clusterTime")
                document = event.get("fullDocument")
            except (KeyError, TypeError) as error:
                logger.warning("ignoring an unreadable event of the signal collection", extra={"error": str(error)})
                continue
            moment = (cluster_time.time, cluster_time.inc) if isinstance(cluster_time, Timestamp) else None
            if self._copies.on_watermark(event_id, document_id, moment):
                continue
            if isinstance(document, RawBSONDocument) and self._requests is not None:
                self._requests.handle(decode_document(document))

    # -- publishing ------------------------------------------------------------------------

    def _handle(self, item: Any) -> None:
        if isinstance(item, SourceFailed):
            error = item.error
            if isinstance(error, HistoryLostError):
                runtime = self.streams.get(item.stream_id)
                if runtime is not None and runtime.signals:
                    self._signals_lost(runtime, error)
                    return
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
            runtime.opened = True
            batch = item.batch
            if runtime.signals:
                self._on_signal_events(batch.events)
            elif batch.events and self._copies.recording(item.stream_id):
                self._copies.observe(item.stream_id, batch.events)
            if item.encoded is not None:
                result = publisher.publish(
                    item.encoded,
                    fallback_topics=self._fallback_topics(runtime),
                    in_scope=self.namespaces.collection_in_scope,
                )
                self._account(result, runtime)
                runtime.pending_kind = CheckpointKind.EVENT
            elif runtime.signals and batch.events:
                runtime.pending_kind = CheckpointKind.EVENT
            elif runtime.pending_kind is None:
                runtime.pending_kind = CheckpointKind.HEARTBEAT if runtime.durable is not None else CheckpointKind.START
            if batch.position is not None:
                runtime.pending = batch.position
                runtime.pending_event_id = batch.position.event_id
                runtime.read_position = batch.position.event_id
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
            self._publish_snapshot_complete(runtime, item.task, item.copied)
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
        elif isinstance(item, ChunkRead):
            self._copies.on_read(item)
        elif isinstance(item, CopyFailed):
            self._copies.fail(item)
        elif isinstance(item, PendingSignals) and self._requests is not None:
            for document in item.documents:
                self._requests.handle(document, pending=True)
        self._publish_finished_chunks()

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
        records.update(self._copies.records())
        for runtime in self.streams.values():
            if runtime.snapshot_dirty and runtime.snapshot is not None:
                records.update(runtime.snapshot.records(settings.name, runtime.dirty_collections))
                written.append((runtime, None))
            if runtime.pending is None or runtime.pending_kind is None:
                continue
            if (
                runtime.pending_kind == CheckpointKind.HEARTBEAT
                and not force
                and now - runtime.last_written < settings.heartbeat_interval_seconds
            ):
                continue
            if (
                runtime.durable is not None
                and runtime.durable.position == runtime.pending
                and runtime.pending_kind == CheckpointKind.HEARTBEAT
            ):
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
        for progress in self._copies.committed():
            self._copy_ended(progress)
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
            if durable.kind == CheckpointKind.SNAPSHOT:
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
