"""Reading one change stream in raw batches: events stay BSON bytes from the socket to Kafka.

The reader runs the ``aggregate``/``getMore`` commands itself with ``RawBSONDocument``
replies, so no event is decoded in Python: a batch is handed on as a list of raw
documents, and ``lakehouse_common.contract.encode_events`` serializes it in one call.
It follows the drivers' change-stream rules: it tracks the post-batch resume token,
resumes after resumable errors from its own position, and reopens with ``startAfter``
after an invalidate event. Split-event fragments ($changeStreamSplitLargeEvent) are
reassembled here, and a position is only reported once every fragment before it is in.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from cdc_service.errors import MongoUnavailableError, change_stream_error
from cdc_service.positions import Position
from cdc_service.scope import NamespaceFilter, StreamSpec
from cdc_service.settings import FullDocumentMode, PreImageMode, StreamLayout, StreamSettings

logger = logging.getLogger(__name__)

RAW_CODEC_OPTIONS: CodecOptions = CodecOptions(document_class=RawBSONDocument)

# Server errors after which a change stream may be resumed (the drivers' change-stream
# specification), for servers that do not label them ResumableChangeStreamError.
RESUMABLE_CODES = frozenset({6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436})
_SPLIT_EVENT_MARKER = b"\x03splitEvent\x00"


@dataclass
class ReadBatch:
    """What one getMore brought: complete events, and the position after them."""

    events: list[RawBSONDocument]
    position: Position | None
    last_cluster_time: tuple[int, int] | None = None
    operation_time: tuple[int, int] | None = None
    invalidated: bool = False


@dataclass
class StreamOptions:
    """How every stream of this service is opened."""

    settings: StreamSettings
    namespaces: NamespaceFilter
    split_supported: bool = False

    def change_stream_stage(self, spec: StreamSpec, position: Position | None) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.settings.full_document is not FullDocumentMode.DEFAULT:
            options["fullDocument"] = self.settings.full_document.value
        if self.settings.full_document_before_change is not PreImageMode.OFF:
            options["fullDocumentBeforeChange"] = self.settings.full_document_before_change.value
        if self.settings.show_expanded_events:
            options["showExpandedEvents"] = True
        if spec.layout is StreamLayout.DEPLOYMENT:
            options["allChangesForCluster"] = True
        if position is not None:
            options.update(position.stream_options())
        return {"$changeStream": options}

    def pipeline(self, spec: StreamSpec, position: Position | None) -> list[dict[str, Any]]:
        stages = [self.change_stream_stage(spec, position)]
        match = None
        if spec.layout is StreamLayout.DEPLOYMENT:
            match = self.namespaces.match_stage()
        elif spec.layout is StreamLayout.DATABASE:
            match = self.namespaces.match_stage(spec.database)
        if match is not None:
            stages.append(match)
        stages.extend(self.settings.pipeline)
        if self.settings.split_large_events and self.split_supported:
            stages.append({"$changeStreamSplitLargeEvent": {}})
        return stages


def split_events_supported(build_info: Mapping[str, Any]) -> bool:
    """$changeStreamSplitLargeEvent exists from MongoDB 7.0 and 6.0.9."""
    version = list(build_info.get("versionArray") or [])[:3]
    if len(version) < 3:
        return False
    return tuple(version) >= (7, 0, 0) or ((6, 0, 9) <= tuple(version) < (6, 1, 0))


class FragmentAssembler:
    """Joins the fragments of split events back into one event.

    Each fragment carries ``splitEvent: {fragment, of}`` and its own resume token; the
    joined event has every top-level field once and the last fragment's ``_id``, because
    resuming after the last fragment continues with the next event.
    """

    def __init__(self) -> None:
        self._fragments: list[RawBSONDocument] = []

    @property
    def pending(self) -> bool:
        return bool(self._fragments)

    def reset(self) -> None:
        self._fragments.clear()

    def add(self, fragment: RawBSONDocument) -> RawBSONDocument | None:
        """Take one fragment; return the whole event once its last fragment arrived."""
        split = fragment["splitEvent"]
        number, total = int(split["fragment"]), int(split["of"])
        if number != len(self._fragments) + 1:
            expected = len(self._fragments) + 1
            self._fragments.clear()
            raise ValueError(f"split event fragment {number} of {total} arrived where fragment {expected} was expected")
        self._fragments.append(fragment)
        if number < total:
            return None
        merged: dict[str, Any] = {}
        for part in self._fragments:
            for name, value in part.items():
                if name not in ("splitEvent", "_id"):
                    merged[name] = value
        whole = {"_id": self._fragments[-1]["_id"], **merged}
        self._fragments.clear()
        return RawBSONDocument(bson.encode(whole), RAW_CODEC_OPTIONS)


class BatchAssembler:
    """Turns raw cursor batches into complete events and the position after them.

    Fragments of a split event may span batches: they are held until the last one
    arrives, and meanwhile the position stays at the last complete event, so a restart
    never resumes past half an event. After an invalidate event (the server closes the
    cursor) the position is its token, to be opened with ``startAfter``.
    """

    def __init__(self, *, split_supported: bool) -> None:
        self.split_supported = split_supported
        self._fragments = FragmentAssembler()

    def reset(self) -> None:
        self._fragments.reset()

    def add(
        self, events: list[RawBSONDocument], post_batch_token: RawBSONDocument | None, *, cursor_closed: bool
    ) -> tuple[list[RawBSONDocument], Position | None, bool]:
        """(complete events, position after them or None, whether the stream was invalidated)."""
        if self.split_supported and (self._fragments.pending or any(map(_carries_split_marker, events))):
            complete: list[RawBSONDocument] = []
            for event in events:
                if self._fragments.pending or is_fragment(event):
                    whole = self._fragments.add(event)
                    if whole is not None:
                        complete.append(whole)
                else:
                    complete.append(event)
        else:
            complete = events
        if complete and cursor_closed and complete[-1].get("operationType") == "invalidate":
            return complete, Position.from_token(complete[-1]["_id"], start_after=True), True
        if self._fragments.pending:
            return complete, (Position.from_token(complete[-1]["_id"]) if complete else None), False
        if post_batch_token is not None:
            return complete, Position.from_token(post_batch_token), False
        if complete:
            return complete, Position.from_token(complete[-1]["_id"]), False
        return complete, None, False


def is_fragment(event: RawBSONDocument) -> bool:
    """A split-event fragment: a cheap byte search, confirmed on the top-level fields."""
    return _carries_split_marker(event) and "splitEvent" in event


def _carries_split_marker(event: RawBSONDocument) -> bool:
    return raw_contains(event, _SPLIT_EVENT_MARKER)


@functools.cache
def _searcher(marker: bytes) -> Callable[[memoryview], re.Match[bytes] | None]:
    return re.compile(re.escape(marker)).search


def raw_contains(event: RawBSONDocument, marker: bytes) -> bool:
    """Whether an event's BSON holds ``marker``: a cheap look before decoding. pymongo hands
    documents of 4 KB and more as memoryview slices of the reply, where ``in`` compares items
    and never finds bytes; ``re`` searches the view in place, without a copy."""
    raw = event.raw
    return marker in raw if isinstance(raw, bytes) else _searcher(marker)(raw) is not None


def _timestamp(value: Any) -> tuple[int, int] | None:
    if isinstance(value, bson.Timestamp):
        return (value.time, value.inc)
    return None


class ChangeStreamReader:
    """One change stream (collection, database or deployment), read in raw batches."""

    def __init__(
        self,
        client: MongoClient,
        spec: StreamSpec,
        options: StreamOptions,
        position: Position | None,
        *,
        stop: threading.Event | None = None,
        max_resume_attempts: int = 5,
    ) -> None:
        self.client = client
        self.spec = spec
        self.options = options
        self.position = position
        self._stop = stop or threading.Event()
        self._max_resume_attempts = max_resume_attempts
        self._cursor_id: int = 0
        self._cursor_collection: str = ""
        self._database = client.get_database(
            "admin" if spec.layout is StreamLayout.DEPLOYMENT else spec.database or "admin",
            codec_options=RAW_CODEC_OPTIONS,
        )
        self._batches = BatchAssembler(split_supported=options.split_supported)
        self._first_batch: list[RawBSONDocument] | None = None
        self._first_reply: RawBSONDocument | None = None

    # -- opening -------------------------------------------------------------------------

    def open(self) -> Position | None:
        """Open the cursor at ``self.position`` (now, if None); return the position it reports."""
        target: Any = self.spec.collection if self.spec.layout is StreamLayout.COLLECTION else 1
        pipeline = self.options.pipeline(self.spec, self.position)
        reply = self._command(
            "aggregate",
            target,
            pipeline=pipeline,
            cursor={"batchSize": self.options.settings.batch_size},
        )
        cursor = reply["cursor"]
        self._cursor_id = int(cursor["id"])
        self._cursor_collection = str(cursor["ns"]).split(".", 1)[1]
        self._first_reply = reply
        self._first_batch = list(cursor["firstBatch"])
        self._batches.reset()
        token = cursor.get("postBatchResumeToken")
        if token is not None and not self._first_batch:
            return Position.from_token(token)
        return self.position

    def close(self) -> None:
        if self._cursor_id:
            try:
                self._database.command("killCursors", self._cursor_collection, cursors=[self._cursor_id])
            except PyMongoError:
                pass  # the cursor dies with the connection or times out on the server
            self._cursor_id = 0

    # -- reading -------------------------------------------------------------------------

    def read(self) -> ReadBatch:
        """One batch. Resumable failures reopen the stream at the last position first."""
        attempt = 0
        while True:
            try:
                return self._read_once()
            except (ConnectionFailure, OperationFailure) as error:
                if not _resumable(error):
                    raise
                attempt += 1
                self._cursor_id = 0
                if attempt > self._max_resume_attempts:
                    raise MongoUnavailableError(
                        f"stream {self.spec.stream_id}: MongoDB unavailable after {attempt - 1} resumes: {error}"
                    ) from error
                logger.warning(
                    "change stream interrupted, resuming",
                    extra={"stream": self.spec.stream_id, "attempt": attempt, "error": str(error)},
                )
                if self._stop.wait(min(0.2 * 2**attempt, 5.0)):
                    return ReadBatch([], None)

    def _read_once(self) -> ReadBatch:
        if self._first_batch is not None:
            events, reply = self._first_batch, self._first_reply
            self._first_batch = None
            self._first_reply = None
            cursor = reply["cursor"]  # type: ignore[index]
        else:
            if not self._cursor_id:
                self.open()
                return self._read_once()
            reply = self._command(
                "getMore",
                self._cursor_id,
                collection=self._cursor_collection,
                batchSize=self.options.settings.batch_size,
                maxTimeMS=self.options.settings.max_await_ms,
            )
            cursor = reply["cursor"]
            events = list(cursor["nextBatch"])
        self._cursor_id = int(cursor["id"])
        operation_time = _timestamp(reply.get("operationTime")) if reply is not None else None
        post_batch_token = cursor.get("postBatchResumeToken")
        complete, position, invalidated = self._batches.add(events, post_batch_token, cursor_closed=self._cursor_id == 0)
        if position is not None:
            self.position = position
        last_cluster_time = _timestamp(complete[-1].get("clusterTime")) if complete else None
        return ReadBatch(complete, position, last_cluster_time, operation_time, invalidated)

    def _command(self, name: str, value: Any, **arguments: Any) -> RawBSONDocument:
        try:
            return self._database.command(name, value, codec_options=RAW_CODEC_OPTIONS, **arguments)
        except OperationFailure as error:
            position = self.position.describe() if self.position else "now"
            mapped = change_stream_error(error, stream_id=self.spec.stream_id, position=position)
            if mapped is not None:
                raise mapped from error
            raise


def _resumable(error: PyMongoError) -> bool:
    if isinstance(error, ConnectionFailure):
        return True
    if isinstance(error, OperationFailure):
        if error.has_error_label("NonResumableChangeStreamError"):
            return False
        return error.has_error_label("ResumableChangeStreamError") or error.code in RESUMABLE_CODES
    return False


@dataclass
class StartingPoint:
    """The position a new stream starts at, and the server's time when it was taken."""

    position: Position
    operation_time: tuple[int, int] | None = field(default=None)


def current_position(client: MongoClient, spec: StreamSpec, options: StreamOptions) -> StartingPoint:
    """Open the stream at 'now' and return its post-batch resume token: a snapshot's position."""
    reader = ChangeStreamReader(client, spec, options, None)
    try:
        position = reader.open()
        reply = reader._first_reply
    finally:
        reader.close()
    if position is None:
        raise MongoUnavailableError(f"stream {spec.stream_id}: the server reported no postBatchResumeToken")
    return StartingPoint(position, _timestamp(reply.get("operationTime")) if reply is not None else None)


__all__ = [
    "RAW_CODEC_OPTIONS",
    "BatchAssembler",
    "ChangeStreamReader",
    "FragmentAssembler",
    "ReadBatch",
    "raw_contains",
    "StartingPoint",
    "StreamOptions",
    "current_position",
    "is_fragment",
    "split_events_supported",
]
