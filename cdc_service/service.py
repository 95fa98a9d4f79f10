"""The service: snapshot, then change streams, published to Kafka and checkpointed.

One entry point, ``CdcService.run()``. Reader threads (one per change stream) and
snapshot workers only read MongoDB and put raw batches on a bounded queue; one loop
publishes them, so the producer, the transaction and the checkpoints have a single
owner. Every failure ends the current pipeline: the open transaction is aborted or the
unacknowledged events are dropped, and after a backoff the pipeline starts again from
the last checkpoints (what is republished, consumers drop by event id). The signal
handler only sets the stop event; the loop then drains the queue, flushes, checkpoints
and closes the readers, the producer and the client, in that order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException
from pymongo import MongoClient, uri_parser
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

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
    snapshot_key,
    stream_key,
)
from cdc_service.errors import HistoryLostError
from cdc_service.metrics import CdcMetrics
from cdc_service.positions import Position, timestamp_text
from cdc_service.publisher import EncodedBatch, EventPublisher, client_config, encode_batch
from cdc_service.scope import NamespaceFilter, StreamSpec, choose_layout
from cdc_service.settings import CdcSettings, HistoryLostPolicy, SnapshotMode, StreamLayout
from cdc_service.snapshot import CopyTask, SnapshotBatch, SnapshotCopied, SnapshotProgress, copy_collection
from lakehouse_common.errors import ConfigError, FatalError, TransientError
from lakehouse_common.observability import ObservabilityServer, Status
from lakehouse_common.redaction import redact

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 2
EXIT_HISTORY_LOST = 3

# A collection found by discovery (snapshot mode never) is streamed from the previous look,
# less this margin for the difference between this host's clock and the cluster's.
DISCOVERY_CLOCK_MARGIN_S = 5


@dataclass
class _LiveBatch:
    stream_id: str
    batch: ReadBatch
    encoded: EncodedBatch | None = None


@dataclass
class _SourceFailed:
    stream_id: str
    error: BaseException


@dataclass
class _StreamRuntime:
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
    reader_started: bool = False
    topics: set[str] = field(default_factory=set)


class CdcService:
    """MongoDB change streams to Kafka. ``run()`` until ``request_stop()``."""

    def __init__(self, settings: CdcSettings, *, metrics: CdcMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or CdcMetrics()
        self.namespaces = NamespaceFilter(settings.scope)
        self._stop = threading.Event()
        self._force_snapshot: set[str] | None = set()
        self._snapshot_only = False
        self._ready = Status(False, "starting")
        self._loop_tick = time.monotonic()
        self._server: ObservabilityServer | None = None
        self._consecutive_failures = 0

    # -- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to drain, checkpoint and return (safe from a signal handler)."""
        self._stop.set()

    def liveness(self) -> Status:
        age = time.monotonic() - self._loop_tick
        return Status(age < 120, f"loop last ran {age:.0f}s ago")

    def readiness(self) -> Status:
        return self._ready

    def serve_http(self) -> ObservabilityServer:
        http = self.settings.http
        self._server = ObservabilityServer(
            self.metrics.registry, self.liveness, self.readiness, host=http.host, port=http.port
        ).start()
        return self._server

    def run(self, *, snapshot_only: bool = False, force_snapshot: Iterable[str] | None = None) -> int:
        """Run until stopped; return the process exit code.

        ``snapshot_only`` copies the streams' collections at a fresh position, records that
        position as their checkpoint and returns; ``force_snapshot`` names streams whose
        checkpoint is ignored and copied again (all streams when empty and snapshot_only).
        """
        self._snapshot_only = snapshot_only
        self._force_snapshot = set(force_snapshot or ())
        if snapshot_only and not self._force_snapshot:
            self._force_snapshot = None  # every planned stream
        while not self._stop.is_set():
            try:
                self._run_pipeline()
                return EXIT_OK
            except HistoryLostError as error:
                self.metrics.errors.labels("history_lost").inc()
                if self.settings.on_history_lost is HistoryLostPolicy.RESNAPSHOT:
                    logger.warning(
                        "resume point lost: copying the stream's collections again",
                        extra={"stream": error.stream_id, "code": error.code, "error": str(error)},
                    )
                    if self._force_snapshot is not None:
                        self._force_snapshot.add(error.stream_id)
                    continue
                logger.error(str(error), extra={"stream": error.stream_id, "code": error.code})
                return EXIT_HISTORY_LOST
            except (FatalError, ConfigError) as error:
                self.metrics.errors.labels(type(error).__name__).inc()
                logger.error("stopping: %s", error, extra={"error_type": type(error).__name__})
                return EXIT_FATAL
            except (TransientError, PyMongoError, KafkaException) as error:
                if isinstance(error, OperationFailure) and not isinstance(error, ConnectionFailure) and not _transient_operation(error):
                    self.metrics.errors.labels(type(error).__name__).inc()
                    logger.error("stopping: MongoDB refused an operation: %s", redact(str(error)))
                    return EXIT_FATAL
                self._consecutive_failures += 1
                self.metrics.errors.labels(type(error).__name__).inc()
                self.metrics.restarts.inc()
                limit = self.settings.retry_max_attempts
                if limit and self._consecutive_failures > limit:
                    logger.error("giving up after %d consecutive failures: %s", limit, redact(str(error)))
                    return EXIT_FATAL
                backoff = min(
                    self.settings.retry_initial_backoff_s * 2 ** (self._consecutive_failures - 1),
                    self.settings.retry_max_backoff_s,
                )
                self._ready = Status(False, f"restarting after: {redact(str(error))[:200]}")
                logger.warning(
                    "pipeline failed; restarting from the last checkpoint",
                    extra={"error": redact(str(error)), "error_type": type(error).__name__, "backoff_s": backoff},
                )
                if self._stop.wait(backoff):
                    break
            except Exception as error:  # a bug: stop loudly rather than guess; the checkpoint is safe
                self.metrics.errors.labels(type(error).__name__).inc()
                logger.exception("stopping on an unexpected error: %s", redact(str(error)))
                return EXIT_FATAL
        return EXIT_OK

    # -- one pipeline ----------------------------------------------------------------------

    def _run_pipeline(self) -> None:
        settings = self.settings
        client = mongo_client(settings)
        publisher: EventPublisher | None = None
        self._reader_stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=16)
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._progress: SnapshotProgress | None = None
        clean_exit = False
        try:
            publisher = EventPublisher(settings)
            self._publisher = publisher
            self._client = client
            publisher.topics.ensure(
                settings.topics.checkpoint_topic,
                compacted=True,
                partitions=1,
                replication=settings.topics.checkpoint_replication_factor,
            )
            checkpoints = load_checkpoints(client_config(settings), settings.topics.checkpoint_topic, settings.name)
            hello = server_hello(client)
            layout = choose_layout(settings.stream.layout, hello, self.namespaces)
            split = settings.stream.split_large_events and split_events_supported(_build_info(client))
            self._options = StreamOptions(settings.stream, self.namespaces, split_supported=split)
            self._layout = layout
            self._streams: dict[str, _StreamRuntime] = {}
            self.metrics.streams.set(0)
            self._published_pending: Counter[tuple[str, str]] = Counter()
            self._batch_started: list[float] = []
            logger.info(
                "pipeline starting",
                extra={"layout": layout.value, "split_large_events": split, "delivery": settings.producer.delivery.value,
                       "value_format": settings.producer.value_format.value, "checkpointed_streams": len(checkpoints.streams)},
            )
            for spec in plan_streams(client, layout, self.namespaces):
                self._add_stream(spec, checkpoints)
            self._commit(force=True)
            self._ready = Status(True)
            self._loop(client, checkpoints)
            clean_exit = True
        finally:
            self._reader_stop.set()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            for thread in self._threads:
                thread.join(timeout=5)
            if self._progress is not None:
                self._progress.close()
            if publisher is not None:
                if not clean_exit:
                    publisher.abort()
                publisher.close()
            client.close()

    def _loop(self, client: MongoClient, checkpoints: Checkpoints) -> None:
        settings = self.settings
        last_commit = time.monotonic()
        last_discovery = time.monotonic()
        last_look = time.time()
        while not self._stop.is_set():
            self._loop_tick = time.monotonic()
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            now = time.monotonic()
            publisher = self._publisher
            if publisher.pending_events >= settings.max_batch_events or now - last_commit >= settings.checkpoint_interval_s:
                self._commit()
                last_commit = now
            if self._snapshot_only and self._snapshots_finished():
                self._commit(force=True)
                logger.info("snapshot finished; stream checkpoints recorded")
                return
            if self._layout is not StreamLayout.DEPLOYMENT and now - last_discovery >= settings.stream.discovery_interval_s:
                last_discovery = now
                look = time.time()
                for spec in plan_streams(client, self._layout, self.namespaces):
                    if spec.stream_id not in self._streams:
                        logger.info("new stream in scope", extra={"stream": spec.stream_id})
                        self._add_stream(spec, checkpoints, seen_since=last_look)
                last_look = look
        self._drain()

    def _drain(self) -> None:
        """Stop reading, publish what was already read, flush and checkpoint, within the bound."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self._reader_stop.set()
        self._ready = Status(False, "stopping")
        while time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if not any(thread.is_alive() for thread in self._threads):
                    break
                continue
            if isinstance(item, _SourceFailed):
                continue
            self._handle(item)
        self._commit(force=True, timeout=max(1.0, deadline - time.monotonic()))
        logger.info("stopped after draining; checkpoints written")

    # -- streams ---------------------------------------------------------------------------

    def _add_stream(self, spec: StreamSpec, checkpoints: Checkpoints, *, seen_since: float | None = None) -> None:
        """Start a stream: from its checkpoint, by a snapshot, or (snapshot mode never) from now,
        or for a collection found by discovery, from the previous look (``seen_since``), so its
        first events are not missed."""
        runtime = _StreamRuntime(spec)
        self._streams[spec.stream_id] = runtime
        forced = self._force_snapshot is None or spec.stream_id in self._force_snapshot
        checkpoint = None if forced else checkpoints.streams.get(spec.stream_id)
        if spec.layout is StreamLayout.COLLECTION:
            assert spec.database is not None and spec.collection is not None
            runtime.topics.add(self._publisher.route(spec.database, spec.collection)[0])
        if self._snapshot_only and not forced:
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
            previous = None if forced else checkpoints.snapshots.get(spec.stream_id)
            self._begin_snapshot(runtime, previous)

    def _start_reader(self, runtime: _StreamRuntime, position: Position | None) -> None:
        reader = ChangeStreamReader(self._client, runtime.spec, self._options, position, stop=self._reader_stop)
        runtime.reader_started = True
        thread = threading.Thread(
            target=self._read_stream, args=(runtime.spec.stream_id, reader, position is None),
            name=f"stream-{runtime.spec.stream_id}", daemon=True,
        )
        self._threads.append(thread)
        self.metrics.streams.set(sum(1 for r in self._streams.values() if r.reader_started))
        logger.info(
            "streaming",
            extra={"stream": runtime.spec.stream_id, "from": position.describe() if position else "now"},
        )
        thread.start()

    def _read_stream(self, stream_id: str, reader: ChangeStreamReader, fresh: bool) -> None:
        idle = self.settings.stream.idle_poll_interval_s
        try:
            if fresh:
                start = reader.open()
                if start is not None:
                    self._put(_LiveBatch(stream_id, ReadBatch([], start)))
            last_position = reader.position
            while not self._reader_stop.is_set():
                started = time.monotonic()
                batch = reader.read()
                if batch.events or (batch.position is not None and batch.position != last_position):
                    last_position = batch.position or last_position
                    # Serialized here, off the publishing thread (the native codec releases the GIL).
                    encoded = encode_batch(batch.events, self.settings.producer.value_format) if batch.events else None
                    if not self._put(_LiveBatch(stream_id, batch, encoded)):
                        return
                if not batch.events and time.monotonic() - started < idle:
                    self._reader_stop.wait(idle)
        except BaseException as error:  # noqa: BLE001 - handed to the loop, which decides
            self._put(_SourceFailed(stream_id, error))
        finally:
            reader.close()

    def _put(self, item: Any) -> bool:
        """Hand an item to the loop; False once the service stops."""
        while not self._reader_stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # -- snapshots -------------------------------------------------------------------------

    def _begin_snapshot(self, runtime: _StreamRuntime, previous: SnapshotState | None) -> None:
        spec = runtime.spec
        namespaces = covered_collections(self._client, spec, self.namespaces)
        if previous is not None and not previous.completed:
            state = previous
            for namespace in namespaces:
                if namespace not in state.collections:
                    state = state.with_collection(namespace, CollectionProgress())
            logger.info("resuming an interrupted snapshot", extra={"stream": spec.stream_id,
                        "done": sorted(n for n, p in state.collections.items() if p.done)})
        else:
            start = current_position(self._client, spec, self._options)
            cluster_time = start.operation_time or (int(time.time()), 0)
            state = SnapshotState(
                spec.stream_id, start.position, {namespace: CollectionProgress() for namespace in namespaces},
                cluster_time=cluster_time,
            )
            logger.info("snapshot starting", extra={"stream": spec.stream_id, "position": start.position.describe(),
                                                   "collections": len(namespaces)})
        # Each attempt is recorded before it copies anything: its ordinals start above the last one's.
        state = replace(
            state,
            collections={
                name: progress if progress.done else CollectionProgress(False, progress.attempt + 1, 0)
                for name, progress in state.collections.items()
            },
        )
        runtime.snapshot = state
        runtime.snapshot_dirty = True
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
            runtime.topics.add(self._publisher.route(database, collection)[0])
            task = CopyTask(spec.stream_id, database, collection, position_id,
                            state.collections[namespace].attempt, state.cluster_time)
            try:
                estimate = self._client[database][collection].estimated_document_count()
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
                self._client, task, self._put, self._reader_stop, self.settings.snapshot.batch_size,
                self.settings.producer.value_format,
            )
        except BaseException as error:  # noqa: BLE001 - handed to the loop
            self._put(_SourceFailed(task.stream_id, error))

    def _snapshot_complete(self, runtime: _StreamRuntime) -> None:
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
            for runtime in self._streams.values()
        )

    # -- publishing ------------------------------------------------------------------------

    def _handle(self, item: Any) -> None:
        if isinstance(item, _SourceFailed):
            error = item.error
            if isinstance(error, HistoryLostError):
                runtime = self._streams.get(item.stream_id)
                raise HistoryLostError(
                    describe_history_lost(error, runtime.durable if runtime else None),
                    stream_id=error.stream_id,
                    code=error.code,
                ) from error
            raise error
        publisher = self._publisher
        if isinstance(item, _LiveBatch):
            runtime = self._streams[item.stream_id]
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
            runtime = self._streams[item.task.stream_id]
            result = publisher.publish(item.events)
            self._account(result, runtime)
            self.metrics.snapshot_documents.labels(item.task.namespace).inc(len(item.events.events))
            if self._progress is not None:
                self._progress.advance(item.task.namespace, item.copied)
        elif isinstance(item, SnapshotCopied):
            runtime = self._streams[item.task.stream_id]
            assert runtime.snapshot is not None
            runtime.snapshot = runtime.snapshot.with_collection(
                item.task.namespace, CollectionProgress(True, item.task.attempt, item.copied)
            )
            runtime.snapshot_dirty = True
            self.metrics.snapshot_collections_remaining.dec()
            if self._progress is not None:
                self._progress.finish(item.task.namespace, item.copied)
            if all(progress.done for progress in runtime.snapshot.collections.values()):
                self._snapshot_complete(runtime)

    def _fallback_topics(self, runtime: _StreamRuntime) -> Callable[[str | None], Iterable[str]]:
        """Where events without a collection go: the stream's own topic(s)."""
        spec = runtime.spec
        if spec.layout is StreamLayout.COLLECTION:
            return lambda database: runtime.topics
        return lambda database: self._publisher.known_topics(database or spec.database)

    def _account(self, result: Any, runtime: _StreamRuntime) -> None:
        for (operation, namespace), count in result.by_operation.items():
            self.metrics.events_read.labels(operation, namespace).inc(count)
        self._published_pending.update(result.published)
        runtime.events_published += result.produced
        if result.skipped:
            self.metrics.events_skipped.inc(result.skipped)
        if result.dead_lettered:
            self.metrics.dead_letters.labels("unpublishable").inc(result.dead_lettered)
        if result.produced:
            self._batch_started.append(time.monotonic())

    def _commit(self, *, force: bool = False, timeout: float | None = None) -> None:
        """Make produced events durable, then checkpoint the streams they advanced."""
        settings = self.settings
        now = time.monotonic()
        records: dict[bytes, bytes | None] = {}
        written: list[tuple[_StreamRuntime, StreamCheckpoint | None]] = []
        for runtime in self._streams.values():
            if runtime.snapshot_dirty and runtime.snapshot is not None:
                records[snapshot_key(settings.name, runtime.spec.stream_id)] = runtime.snapshot.to_json()
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
        publisher = self._publisher
        if not records and not publisher.pending_events and not force:
            return
        publisher.commit(records, settings.topics.checkpoint_topic, timeout or settings.producer.delivery_timeout_ms / 1000)
        self._consecutive_failures = 0
        acknowledged = time.monotonic()
        for started in self._batch_started:
            self.metrics.publish_latency.observe(acknowledged - started)
        self._batch_started.clear()
        for (operation, namespace), count in self._published_pending.items():
            self.metrics.events_published.labels(operation, namespace).inc(count)
        self._published_pending.clear()
        start_readers: list[_StreamRuntime] = []
        for runtime, checkpoint in written:
            if checkpoint is None:
                runtime.snapshot_dirty = False
                continue
            runtime.durable = checkpoint
            runtime.last_written = acknowledged
            runtime.pending_kind = None
            self.metrics.checkpoint_written(runtime.spec.stream_id, checkpoint.kind)
            if checkpoint.kind == "snapshot":
                if self._force_snapshot is not None and not self._snapshot_only:
                    self._force_snapshot.discard(runtime.spec.stream_id)
                if not runtime.reader_started and not self._snapshot_only:
                    start_readers.append(runtime)
        for runtime in start_readers:
            # Live events only after every snapshot record of the stream is durable.
            self._start_reader(runtime, runtime.durable.position if runtime.durable else None)


# -- planning ------------------------------------------------------------------------------


def mongo_client(settings: CdcSettings) -> MongoClient:
    """The client of one pipeline. Options in the URI win; otherwise a server that stops
    answering fails the read instead of hanging it (a getMore waits max_await_ms at most)."""
    uri = settings.mongo_uri.get_secret_value()
    given = {name.lower() for name in uri_parser.parse_uri(uri, validate=False)["options"]}
    options: dict[str, Any] = {"appname": f"cdc-service/{settings.name}"}
    if "sockettimeoutms" not in given:
        options["socketTimeoutMS"] = settings.stream.max_await_ms + 30_000
    return MongoClient(uri, **options)


def server_hello(client: MongoClient) -> dict[str, Any]:
    try:
        return client.admin.command("hello")
    except OperationFailure:
        return client.admin.command("isMaster")


def _build_info(client: MongoClient) -> dict[str, Any]:
    try:
        return client.admin.command("buildInfo")
    except PyMongoError:
        return {}


def _transient_operation(error: OperationFailure) -> bool:
    from cdc_service.change_stream import RESUMABLE_CODES

    return error.code in RESUMABLE_CODES or error.has_error_label("RetryableWriteError") or error.has_error_label(
        "ResumableChangeStreamError"
    )


def _collections_of(client: MongoClient, database: str) -> list[str]:
    """Plain collections of a database (views and time series have no change streams)."""
    names = []
    for info in client[database].list_collections():
        if info.get("type", "collection") == "collection":
            names.append(info["name"])
    return sorted(names)


def _databases(client: MongoClient, namespaces: NamespaceFilter) -> list[str]:
    names = set(client.list_database_names())
    names.update(namespaces.explicit_databases() or ())
    return sorted(name for name in names if namespaces.database_in_scope(name))


def plan_streams(client: MongoClient, layout: StreamLayout, namespaces: NamespaceFilter) -> list[StreamSpec]:
    """The streams that cover the scope in this layout (existing databases and collections)."""
    if layout is StreamLayout.DEPLOYMENT:
        return [StreamSpec(StreamLayout.DEPLOYMENT)]
    databases = _databases(client, namespaces)
    if layout is StreamLayout.DATABASE:
        return [StreamSpec(StreamLayout.DATABASE, database) for database in databases]
    specs = []
    explicit = {
        name for name in namespaces.scope.include_collections if not name.startswith("/") and "." in name
    }
    for database in databases:
        collections = set(_collections_of(client, database))
        collections.update(name.split(".", 1)[1] for name in explicit if name.split(".", 1)[0] == database)
        specs.extend(
            StreamSpec(StreamLayout.COLLECTION, database, collection)
            for collection in sorted(collections)
            if namespaces.collection_in_scope(database, collection)
        )
    return specs


def covered_collections(client: MongoClient, spec: StreamSpec, namespaces: NamespaceFilter) -> list[str]:
    """The existing in-scope namespaces a stream reports, which its snapshot copies."""
    if spec.layout is StreamLayout.COLLECTION:
        return [spec.namespace]
    databases = [spec.database] if spec.layout is StreamLayout.DATABASE else _databases(client, namespaces)
    return [
        f"{database}.{collection}"
        for database in databases
        if database is not None
        for collection in _collections_of(client, database)
        if namespaces.collection_in_scope(database, collection)
    ]


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
    "EXIT_FATAL",
    "EXIT_HISTORY_LOST",
    "EXIT_OK",
    "CdcService",
    "covered_collections",
    "describe_history_lost",
    "plan_streams",
]
