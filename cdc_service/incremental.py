"""Copies while streaming: a collection copied in chunks between watermarks (DBLog's idea,
Debezium's incremental snapshots), interleaved with its live change stream.

For each chunk of a collection:

1. the publishing loop opens a *window*: from now on it notes the event id and the ``_id``
   of every change event the collection's stream brings;
2. a worker writes the *low watermark* (a document in the signal collection, majority
   write), reads the next chunk in ``_id`` order (majority read, causally after the low
   watermark) and writes the *high watermark*;
3. both watermarks come back as change events of the signal collection, with event ids L
   and H. Once the collection's stream has reported a position at or past H, every change
   event it brought with L < id < H for a document of the chunk takes that document out
   (the stream carries its state; counted as *superseded*), and a ``drop``, ``rename``,
   ``dropDatabase`` or ``invalidate`` in the window takes out all of them;
4. the rest are published as ``snapshot`` records with ids ``<H>.<attempt>.<ordinal>``
   (``lakehouse_common.contract.snapshot_event_id``): above everything up to H, below every
   later event. The chunk's cursor is checkpointed in the commit that makes its records
   durable, and only then does the next chunk begin: a crash re-reads one chunk at most.

Why no chunk overwrites a newer change: a kept document had no event between L and H. Its
events up to L were majority-committed before the read began (the read is causally after
the low watermark, itself after them in the oplog), so the read reflects them; every write
the read reflects was committed before the high watermark, so no event after H is reflected.
The record's id sorts between the two: replaying by event id gives the document's state.

Chunks follow MongoDB's BSON order of ``_id`` across types: one bracket after the other
(MinKey, null, NaN, numbers, strings, objects, binary, ObjectId, booleans, dates,
timestamps, the rare code and pointer types, MaxKey), and within a bracket by ``$gt`` on
the last ``_id``, which the server compares within the bracket only. A filter (a query
document from the signal) narrows every chunk's query.

Deletes by absence: every record of a full (unfiltered) copy sorts above its first chunk's
low watermark (``CopyProgress.start_position``), and so does every change made after it. A
document whose last event sorts below that position and that the finished copy did not
publish is gone from MongoDB: when the last chunk of such a copy is published, a
snapshot-complete marker at that position, under the copy's attempt, says so
(``FinishedChunk.completed_full_copy``). A filtered copy publishes none: it says nothing of the
documents it skipped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import bson
from bson import Binary, ObjectId, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.errors import ConfigurationError, OperationFailure
from pymongo.read_concern import ReadConcern

from cdc_service.checkpoints import CopyProgress, CopyState, copy_key
from cdc_service.metrics import CdcMetrics
from cdc_service.signals import (
    ROUND_TRIP_RAW,
    SignalBox,
    id_key_of_text,
    id_key_text,
    parse_watermark_id,
    value_of_text,
    watermark_document,
    watermark_id,
)
from cdc_service.snapshot import CopyTask, document_key_bytes, shard_key_fields

logger = logging.getLogger(__name__)

_NAN = float("nan")
# Events after which no document of the window's chunk can be trusted: the collection's contents changed wholesale.
_COLLECTION_EVENTS = frozenset({"drop", "rename", "dropDatabase", "invalidate"})
_DOCUMENT_EVENTS = frozenset({"insert", "update", "replace", "delete"})
# The server does not know this $type alias (the MongoDB stand-in knows only the common types).
_BAD_VALUE = 2


@dataclass(frozen=True)
class _Bracket:
    """One BSON type bracket of ``_id`` values: where it starts, and how to go on after a value."""

    name: str
    start: dict[str, Any]
    singleton: bool = False  # one value at most (MinKey, null, NaN, MaxKey)
    type_alias: str | None = None  # kept within the bracket by $type (types some servers lack)

    def condition(self, last: Any) -> dict[str, Any]:
        if last is _START:
            return self.start
        condition: dict[str, Any] = {"$gt": last}
        if self.name == "number":
            condition["$ne"] = _NAN
        if self.type_alias is not None:
            condition["$type"] = self.type_alias
        return condition


_START = object()

# MongoDB's comparison order of BSON types (arrays, regular expressions and undefined cannot be an _id).
BRACKETS: tuple[_Bracket, ...] = (
    _Bracket("minKey", {"$type": "minKey"}, singleton=True),
    _Bracket("null", {"$type": "null"}, singleton=True),
    # NaN sorts below every number in MongoDB (above them in the stand-in): a bracket of its own.
    _Bracket("NaN", {"$eq": _NAN}, singleton=True),
    _Bracket("number", {"$gte": float("-inf"), "$ne": _NAN}),
    _Bracket("string", {"$gte": ""}),  # and symbols, which compare as strings
    _Bracket("object", {"$gte": {}}),
    _Bracket("binData", {"$gte": Binary(b"", 0)}),
    _Bracket("objectId", {"$gte": ObjectId(b"\x00" * 12)}),
    _Bracket("bool", {"$gte": False}),
    _Bracket("date", {"$gte": DatetimeMS(-(2**63))}),
    _Bracket("timestamp", {"$gte": Timestamp(0, 0)}),
    _Bracket("dbPointer", {"$type": "dbPointer"}, type_alias="dbPointer"),
    _Bracket("javascript", {"$type": "javascript"}, type_alias="javascript"),
    _Bracket("javascriptWithScope", {"$type": "javascriptWithScope"}, type_alias="javascriptWithScope"),
    _Bracket("maxKey", {"$type": "maxKey"}, singleton=True),
)


class CopyCursor(NamedTuple):
    """Where a copy stands: a bracket, and the last ``_id`` read in it (``{_id: ...}`` BSON), or None at its start."""

    bracket: int = 0
    last: bytes | None = None

    @property
    def exhausted(self) -> bool:
        return self.bracket >= len(BRACKETS)

    @classmethod
    def of(cls, progress: CopyProgress) -> CopyCursor:
        return cls(progress.bracket, id_key_of_text(progress.last_id) if progress.last_id else None)


def id_key(document: RawBSONDocument) -> bytes:
    """``{_id: ...}`` as BSON bytes: the same bytes for a stored document and its change events' documentKey."""
    fast = document_key_bytes(bytes(document.raw))
    if fast is not None:
        return fast
    value = RawBSONDocument(document.raw, ROUND_TRIP_RAW)["_id"]
    return bson.encode({"_id": value}, codec_options=ROUND_TRIP_RAW)


def _id_value(key: bytes) -> Any:
    return RawBSONDocument(key, ROUND_TRIP_RAW)["_id"]


@dataclass
class ChunkContents:
    documents: list[RawBSONDocument]
    keys: list[bytes]
    cursor: CopyCursor
    size: int = 0


def read_chunk(
    collection: Collection,
    cursor: CopyCursor,
    *,
    limit: int,
    max_bytes: int,
    query: Mapping[str, Any] | None = None,
    session: ClientSession | None = None,
) -> ChunkContents:
    """The next documents after ``cursor`` in BSON order of ``_id``: ``limit`` of them, or fewer
    once ``max_bytes`` are read (one at least), or what is left; and the cursor after them."""
    contents = ChunkContents([], [], cursor)
    bracket, last_key = cursor
    while bracket < len(BRACKETS) and len(contents.documents) < limit and (contents.size < max_bytes or not contents.documents):
        spec = BRACKETS[bracket]
        wanted = 1 if spec.singleton else limit - len(contents.documents)
        condition = spec.condition(_START if last_key is None else _id_value(last_key))
        selector: dict[str, Any] = {"_id": condition} if not query else {"$and": [dict(query), {"_id": condition}]}
        found, full = 0, False
        try:
            batches = collection.find_raw_batches(
                selector, sort=[("_id", 1)], limit=wanted, batch_size=min(wanted, 1000), hint=[("_id", 1)], session=session
            )
            try:
                for batch in batches:
                    for document in bson.decode_iter(batch, ROUND_TRIP_RAW):
                        key = id_key(document)
                        contents.documents.append(document)
                        contents.keys.append(key)
                        contents.size += len(document.raw)
                        last_key, found = key, found + 1
                        if contents.size >= max_bytes:
                            full = True
                            break
                    if full:
                        break
            finally:
                batches.close()
        except OperationFailure as error:
            if spec.type_alias is None or error.code != _BAD_VALUE:
                raise
            logger.debug("the server has no %s type: bracket skipped", spec.type_alias)
        if full and not spec.singleton:
            break
        if spec.singleton or found < wanted:
            bracket, last_key = bracket + 1, None
    contents.cursor = CopyCursor(bracket, last_key)
    return contents


@dataclass(frozen=True)
class ChunkTask:
    """One chunk for a worker to read between two watermarks."""

    namespace: str
    stream_id: str
    copy_id: str
    chunk: int
    window: str
    cursor: CopyCursor
    limit: int
    max_bytes: int
    query: Mapping[str, Any] | None
    stale_watermarks: tuple[str, ...] = ()
    first_of_attempt: bool = False


@dataclass
class ChunkRead:
    """What a worker read: the chunk, the cursor after it, and (first chunk of an attempt) the collection's facts."""

    task: ChunkTask
    contents: ChunkContents
    shard_key: list[str] | None = None
    estimate: int | None = None


@dataclass
class CopyFailed:
    """MongoDB refused a copy's query (a bad filter): that copy fails alone."""

    task: ChunkTask
    reason: str


@contextmanager
def _causal_session(client: MongoClient) -> Iterator[ClientSession | None]:
    """A causally consistent session (reads after the watermark's write), where the server has sessions.

    The MongoDB stand-in has none; there every read sees every earlier write anyway.
    """
    if client.topology_description.logical_session_timeout_minutes is None:
        yield None
        return
    try:
        session = client.start_session(causal_consistency=True)
    except ConfigurationError:
        yield None
        return
    try:
        yield session
    finally:
        session.end_session()


def read_between_watermarks(client: MongoClient, box: SignalBox, task: ChunkTask) -> ChunkRead:
    """Low watermark, the chunk (majority, after the low watermark), high watermark."""
    database, collection_name = task.namespace.split(".", 1)
    collection = client[database].get_collection(
        collection_name, codec_options=ROUND_TRIP_RAW, read_concern=ReadConcern("majority")
    )
    with _causal_session(client) as session:
        if task.stale_watermarks:
            box.collection.delete_many({"_id": {"$in": list(task.stale_watermarks)}}, session=session)
        box.collection.insert_one(watermark_document(task.window, "low", task.namespace), session=session)
        contents = read_chunk(
            collection, task.cursor, limit=task.limit, max_bytes=task.max_bytes, query=task.query, session=session
        )
        box.collection.insert_one(watermark_document(task.window, "high", task.namespace), session=session)
    read = ChunkRead(task, contents)
    if task.first_of_attempt:
        read.shard_key = shard_key_fields(client, task.namespace)
        try:
            read.estimate = collection.estimated_document_count()
        except OperationFailure:
            read.estimate = None
    logger.info(
        "copy chunk read",
        extra={
            "namespace": task.namespace,
            "copy": task.copy_id,
            "chunk": task.chunk,
            "documents": len(contents.documents),
            "bytes": contents.size,
        },
    )
    return read


@dataclass
class ChunkWindow:
    """One chunk in flight: what the stream changed meanwhile, the watermarks, the read."""

    task: ChunkTask
    low: str | None = None
    low_cluster_time: tuple[int, int] | None = None
    high: str | None = None
    high_cluster_time: tuple[int, int] | None = None
    read: ChunkRead | None = None
    changed: list[tuple[str, bytes | None]] = field(default_factory=list)  # (event id, id key; None: all)

    def ready(self, position: str | None) -> bool:
        return (
            self.read is not None
            and self.low is not None
            and self.high is not None
            and position is not None
            and position >= self.high
        )

    def kept(self) -> tuple[list[RawBSONDocument], int]:
        """The chunk's documents no event between the watermarks touched, and how many were left out."""
        assert self.read is not None and self.low is not None and self.high is not None
        low, high = self.low, self.high
        touched: set[bytes] = set()
        for event_id, key in self.changed:
            if low < event_id < high:
                if key is None:
                    return [], len(self.read.contents.documents)
                touched.add(key)
        contents = self.read.contents
        kept = [document for document, key in zip(contents.documents, contents.keys, strict=True) if key not in touched]
        return kept, len(contents.documents) - len(kept)


@dataclass
class FinishedChunk:
    """A chunk ready to publish: the documents kept, the position they follow, the copy after it."""

    progress: CopyProgress  # the copy as this chunk leaves it
    ordinal: int  # of the chunk's first record within the copy
    documents: list[RawBSONDocument]
    superseded: int
    high: str
    cluster_time: tuple[int, int]
    shard_key: list[str] | None

    def completed_full_copy(self) -> CopyTask | None:
        """The whole copy, at its start position, when this chunk ends a copy without a filter; else None.

        What its snapshot-complete marker is built from: every record of the copy and every
        later change sorts above the start position. Without the start's cluster time (a copy
        checkpointed before it was kept), the last chunk's stands in.
        """
        progress = self.progress
        if progress.state != CopyState.DONE or progress.filter is not None:
            return None
        assert progress.start_position is not None  # set by the copy's first chunk
        database, collection = progress.namespace.split(".", 1)
        cluster_time = progress.start_cluster_time or self.cluster_time
        return CopyTask(progress.stream_id, database, collection, progress.start_position, progress.attempt, cluster_time)


class IncrementalCopies:
    """The chunked copies of one pipeline attempt: their progress, windows and chunks.

    The attempt's publishing loop drives it (one thread): ``begin`` a copy, ``schedule``
    chunks for workers, ``observe`` the streams' events, hand it watermarks and reads, take
    the ``finished`` chunks to publish, and write its ``records`` in the commit after which
    ``committed`` lets the next chunks begin.
    """

    def __init__(
        self,
        settings_name: str,
        chunk_size: int,
        chunk_max_bytes: int,
        metrics: CdcMetrics,
        *,
        progress_log_interval_seconds: float = 10.0,
        snapshot_attempt: Callable[[str], int] = lambda namespace: 0,
    ) -> None:
        self._service = settings_name
        self._snapshot_attempt = snapshot_attempt
        self._chunk_size = chunk_size
        self._chunk_max_bytes = chunk_max_bytes
        self._metrics = metrics
        self._log_interval = progress_log_interval_seconds
        self._copies: dict[str, CopyProgress] = {}
        self._dirty: set[str] = set()
        self._windows: dict[str, ChunkWindow] = {}  # by window id
        self._in_flight: dict[str, ChunkWindow] = {}  # by namespace
        self._awaiting_commit: set[str] = set()
        self._uncommitted: list[FinishedChunk] = []
        self._stale: dict[str, list[str]] = {}
        self._shard_keys: dict[str, list[str] | None] = {}
        self._started: dict[str, tuple[float, int]] = {}  # this attempt's start of each copy: time, documents
        self._last_log: dict[str, float] = {}

    # -- copies ------------------------------------------------------------------------

    def restore(
        self, copies: Mapping[str, CopyProgress], in_scope: Callable[[str], bool], covering: Callable[[str], str | None]
    ) -> None:
        """Take up the checkpointed copies: running ones go on from their cursor, on the stream covering them now."""
        for namespace, progress in copies.items():
            self._copies[namespace] = progress
            if not progress.running:
                continue
            stream_id = covering(namespace)
            if not in_scope(namespace):
                self._end(namespace, CopyState.CANCELLED, "the collection is no longer in scope")
                continue
            if stream_id is None:
                self._end(namespace, CopyState.CANCELLED, "no change stream covers the collection any more (dropped?)")
                continue
            if stream_id != progress.stream_id:  # the layout changed
                progress = self._copies[namespace] = replace(progress, stream_id=stream_id)
                self._dirty.add(namespace)
            self._started[namespace] = (time.monotonic(), progress.copied)
            self._metrics.copy_remaining.labels(namespace).set(self._remaining(progress))
            logger.info(
                "resuming a copy",
                extra={
                    "namespace": namespace,
                    "copy": progress.copy_id,
                    "from_chunk": progress.chunks + 1,
                    "copied": progress.copied,
                    "reason": progress.reason,
                },
            )
        self._metrics.copies_running.set(sum(1 for p in self._copies.values() if p.running))

    def known(self) -> set[str]:
        """Namespaces this service has copied, or is copying, in chunks."""
        return set(self._copies)

    def progress(self, namespace: str) -> CopyProgress | None:
        return self._copies.get(namespace)

    def running(self, namespace: str) -> bool:
        progress = self._copies.get(namespace)
        return progress is not None and progress.running

    def handled(self, signal_id: str) -> bool:
        """Whether a copy of this service came from that signal already (so it is not executed twice)."""
        return any(progress.signal_id == signal_id for progress in self._copies.values())

    def begin(
        self, namespace: str, stream_id: str, *, reason: str, query: str | None = None, signal_id: str | None = None
    ) -> CopyProgress:
        """A new copy of ``namespace``; it starts with the next ``schedule``.

        Its attempt number is above every earlier copy's and snapshot's of the namespace: its
        records' ids (``<position>.<attempt>.<ordinal>``) are then unique even where a chunk's
        high watermark and a snapshot's position are the same token.
        """
        previous = self._copies.get(namespace)
        progress = CopyProgress(
            namespace=namespace,
            stream_id=stream_id,
            copy_id=uuid.uuid4().hex[:12],
            attempt=max(previous.attempt if previous else 0, self._snapshot_attempt(namespace)) + 1,
            reason=reason,
            filter=query,
            signal_id=signal_id,
        )
        self._copies[namespace] = progress
        self._dirty.add(namespace)
        self._started[namespace] = (time.monotonic(), 0)
        self._metrics.copies_running.set(sum(1 for p in self._copies.values() if p.running))
        logger.info(
            "copy requested",
            extra={
                "namespace": namespace,
                "copy": progress.copy_id,
                "attempt": progress.attempt,
                "reason": reason,
                "stream": stream_id,
                "filter": query,
                "signal": signal_id,
            },
        )
        return progress

    def cancel(self, namespaces: Iterable[str] | None, detail: str) -> list[str]:
        """End the running copies of ``namespaces`` (all when None); their windows are dropped."""
        wanted = set(self._copies) if namespaces is None else set(namespaces)
        cancelled = [namespace for namespace in sorted(wanted) if self.running(namespace)]
        for namespace in cancelled:
            self._end(namespace, CopyState.CANCELLED, detail)
        return cancelled

    def reopen_windows(self) -> None:
        """Drop the chunks in flight (their watermarks may never come back); ``schedule`` begins them again."""
        for namespace, window in list(self._in_flight.items()):
            del self._in_flight[namespace]
            self._windows.pop(window.task.window, None)
            self._stale.setdefault(namespace, []).extend(
                [watermark_id(window.task.window, "low"), watermark_id(window.task.window, "high")]
            )

    def fail(self, failed: CopyFailed) -> None:
        window = self._in_flight.get(failed.task.namespace)
        if window is None or window.task.window != failed.task.window:
            return  # a chunk of a cancelled copy or of an earlier attempt
        logger.error(
            "copy failed: MongoDB refused its query",
            extra={"namespace": failed.task.namespace, "copy": failed.task.copy_id, "reason": failed.reason},
        )
        self._end(failed.task.namespace, CopyState.FAILED, failed.reason)

    def _end(self, namespace: str, state: CopyState, detail: str) -> None:
        window = self._in_flight.pop(namespace, None)
        if window is not None:
            self._windows.pop(window.task.window, None)
        self._copies[namespace] = replace(self._copies[namespace], state=state.value, detail=detail, finished_at=time.time())
        self._dirty.add(namespace)
        self._metrics.copy_remaining.labels(namespace).set(0)
        self._metrics.copies_running.set(sum(1 for p in self._copies.values() if p.running))
        if state is not CopyState.DONE:
            logger.warning("copy ended", extra={"namespace": namespace, "state": state.value, "detail": detail})

    # -- chunks ------------------------------------------------------------------------

    def schedule(self, streaming: Callable[[str], bool]) -> list[ChunkTask]:
        """The next chunk of every running copy whose last chunk is durable and whose stream runs.

        The window opens here, before the worker writes the low watermark, so every event of
        the collection with an id above the low watermark is observed.
        """
        tasks: list[ChunkTask] = []
        for namespace, progress in self._copies.items():
            if (
                not progress.running
                or namespace in self._in_flight
                or namespace in self._awaiting_commit
                or not streaming(progress.stream_id)
            ):
                continue
            chunk = progress.chunks + 1
            task = ChunkTask(
                namespace=namespace,
                stream_id=progress.stream_id,
                copy_id=progress.copy_id,
                chunk=chunk,
                window=f"{progress.copy_id}:{chunk}:{uuid.uuid4().hex[:8]}",
                cursor=CopyCursor.of(progress),
                limit=self._chunk_size,
                max_bytes=self._chunk_max_bytes,
                query=value_of_text(progress.filter) if progress.filter else None,
                stale_watermarks=tuple(self._stale.pop(namespace, ())),
                first_of_attempt=namespace not in self._shard_keys,
            )
            window = ChunkWindow(task)
            self._windows[task.window] = window
            self._in_flight[namespace] = window
            tasks.append(task)
        return tasks

    def recording(self, stream_id: str) -> bool:
        return any(window.task.stream_id == stream_id for window in self._in_flight.values())

    def observe(self, stream_id: str, events: Iterable[RawBSONDocument]) -> None:
        """Note the id and key of the events of collections with a chunk in flight on this stream."""
        windows = {window.task.namespace: window for window in self._in_flight.values() if window.task.stream_id == stream_id}
        if not windows:
            return
        for event in events:
            try:
                operation = event["operationType"]
                event_id = event["_id"]["_data"]
                ns = event.get("ns")
                database = ns.get("db") if ns is not None else None
                collection = ns.get("coll") if ns is not None else None
            except (KeyError, TypeError, bson.errors.InvalidBSON):
                continue  # not a change event: the publisher dead-letters it
            if operation in _DOCUMENT_EVENTS:
                window = windows.get(f"{database}.{collection}")
                if window is not None:
                    key = event.get("documentKey")
                    window.changed.append((event_id, id_key(key) if isinstance(key, RawBSONDocument) else None))
            elif operation in _COLLECTION_EVENTS:
                target = event.get("to")
                renamed_to = f"{target.get('db')}.{target.get('coll')}" if target is not None else None
                for namespace, window in windows.items():
                    whole = (
                        database is None
                        or (collection is None and namespace.split(".", 1)[0] == database)
                        or namespace in (f"{database}.{collection}", renamed_to)
                    )
                    if whole:
                        window.changed.append((event_id, None))

    def on_watermark(self, event_id: str, watermark_value: Any, cluster_time: tuple[int, int] | None) -> bool:
        """A watermark came back from the signal collection's stream; False if it is not one."""
        watermark = parse_watermark_id(watermark_value)
        if watermark is None:
            return False
        window = self._windows.get(watermark.window)
        if window is None:
            return True  # of an earlier attempt, or a cancelled copy
        if watermark.mark == "low":
            window.low = event_id
            window.low_cluster_time = cluster_time
        else:
            window.high = event_id
            window.high_cluster_time = cluster_time
        return True

    def on_read(self, read: ChunkRead) -> None:
        window = self._windows.get(read.task.window)
        if window is None:
            return
        window.read = read
        if read.task.first_of_attempt:
            self._shard_keys[read.task.namespace] = read.shard_key
            if read.estimate is not None:
                namespace = read.task.namespace
                self._copies[namespace] = replace(self._copies[namespace], estimate=read.estimate)

    def finished(self, position_of: Callable[[str], str | None]) -> list[FinishedChunk]:
        """Chunks whose stream reached their high watermark: filtered, counted, ready to publish."""
        chunks: list[FinishedChunk] = []
        for namespace, window in list(self._in_flight.items()):
            if not window.ready(position_of(window.task.stream_id)):
                continue
            assert window.read is not None and window.high is not None and window.low is not None
            kept, superseded = window.kept()
            before = self._copies[namespace]
            cursor = window.read.contents.cursor
            exhausted = cursor.exhausted
            progress = replace(
                before,
                bracket=cursor.bracket,
                last_id=id_key_text(cursor.last) if cursor.last is not None else None,
                chunks=before.chunks + 1,
                copied=before.copied + len(kept),
                superseded=before.superseded + superseded,
                start_position=before.start_position or window.low,
                start_cluster_time=before.start_cluster_time if before.start_position else window.low_cluster_time,
                state=CopyState.DONE.value if exhausted else before.state,
                finished_at=time.time() if exhausted else None,
            )
            self._copies[namespace] = progress
            self._dirty.add(namespace)
            del self._in_flight[namespace]
            del self._windows[window.task.window]
            self._awaiting_commit.add(namespace)
            self._stale.setdefault(namespace, []).extend(
                [watermark_id(window.task.window, "low"), watermark_id(window.task.window, "high")]
            )
            finished = FinishedChunk(
                progress,
                before.copied + 1,
                kept,
                superseded,
                window.high,
                window.high_cluster_time or (int(time.time()), 0),
                self._shard_keys.get(namespace),
            )
            chunks.append(finished)
            self._uncommitted.append(finished)
            self._log_chunk(finished, window)
        return chunks

    def _log_chunk(self, chunk: FinishedChunk, window: ChunkWindow) -> None:
        progress = chunk.progress
        namespace = progress.namespace
        started, copied_at_start = self._started.get(namespace, (time.monotonic(), 0))
        elapsed = time.monotonic() - started
        rate = (progress.copied - copied_at_start) / elapsed if elapsed > 0 else 0.0
        details = {
            "namespace": namespace,
            "copy": progress.copy_id,
            "chunk": progress.chunks,
            "published": len(chunk.documents),
            "superseded": chunk.superseded,
            "copied": progress.copied,
            "remaining": self._remaining(progress),
            "docs_per_second": round(rate),
            "events_in_window": len(window.changed),
        }
        if chunk.superseded:
            # Not lost: the stream's events in the window carry these documents' state.
            logger.info("copy chunk: documents changed by the stream in the window come from the stream", extra=details)
        now = time.monotonic()
        if progress.state == CopyState.DONE:
            logger.info("copy finished", extra={**details, "seconds": round(elapsed, 3), "chunks": progress.chunks})
        elif now - self._last_log.get(namespace, 0.0) >= self._log_interval or progress.chunks == 1:
            self._last_log[namespace] = now
            logger.info("copy progress", extra=details)
        else:
            logger.debug("copy chunk published", extra=details)

    @staticmethod
    def _remaining(progress: CopyProgress) -> int:
        if progress.estimate is None or not progress.running:
            return 0
        return max(progress.estimate - progress.copied - progress.superseded, 0)

    # -- checkpoints -------------------------------------------------------------------

    def records(self) -> dict[bytes, bytes | None]:
        """Records of the copies that changed, for the next commit (after their chunks' records)."""
        return {copy_key(self._service, namespace): self._copies[namespace].to_json() for namespace in sorted(self._dirty)}

    def committed(self) -> list[CopyProgress]:
        """The last commit made the chunks and records durable; returns the copies that ended with it."""
        for chunk in self._uncommitted:
            namespace = chunk.progress.namespace
            self._metrics.copy_documents.labels(namespace).inc(len(chunk.documents))
            self._metrics.copy_superseded.labels(namespace).inc(chunk.superseded)
            self._metrics.copy_chunks.labels(namespace).inc()
            self._metrics.copy_remaining.labels(namespace).set(self._remaining(self._copies[namespace]))
        self._uncommitted.clear()
        ended = [self._copies[namespace] for namespace in sorted(self._dirty) if not self._copies[namespace].running]
        self._dirty.clear()
        self._awaiting_commit.clear()
        for progress in ended:
            self._stale.pop(progress.namespace, None)
        self._metrics.copies_running.set(sum(1 for p in self._copies.values() if p.running))
        return ended

    def signal_done(self, signal_id: str) -> bool:
        """Whether every copy this signal asked for has ended."""
        return not any(progress.signal_id == signal_id and progress.running for progress in self._copies.values())


def finished_entry(progress: CopyProgress) -> dict[str, Any]:
    """What a signal document records about one collection's ended copy."""
    return {
        "namespace": progress.namespace,
        "state": progress.state,
        "published": progress.copied,
        "superseded": progress.superseded,
        "chunks": progress.chunks,
        "detail": progress.detail,
        "seconds": round((progress.finished_at or time.time()) - progress.started_at, 3),
    }


__all__ = [
    "BRACKETS",
    "ChunkContents",
    "ChunkRead",
    "ChunkTask",
    "ChunkWindow",
    "CopyCursor",
    "CopyFailed",
    "FinishedChunk",
    "IncrementalCopies",
    "finished_entry",
    "id_key",
    "read_between_watermarks",
    "read_chunk",
]
