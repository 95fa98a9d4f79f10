"""Apply the generator's operations to MongoDB with pymongo, in order, optionally paced.

Only plain CRUD is used (no sessions or transactions), so the MongoDB stand-in works as
well as a real replica set. Consecutive operations are sent as ordered bulk writes per
collection, which keeps every document's changes in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.database import Database

from data_generator.config import COLLECTIONS, GeneratorConfig
from data_generator.generator import SalesMarketingGenerator
from data_generator.operations import Delete, Insert, Operation, Replace, Update

Progress = Callable[[int, int | None], None]
"""Called with (operations written so far, total if known)."""

_TZ_AWARE: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


def _request(operation: Operation) -> Any:
    if isinstance(operation, Insert):
        return InsertOne(operation.document)
    if isinstance(operation, Update):
        return UpdateOne({"_id": operation.document_id}, operation.mongo_update())
    if isinstance(operation, Replace):
        return ReplaceOne({"_id": operation.document_id}, operation.document)
    if isinstance(operation, Delete):
        return DeleteOne({"_id": operation.document_id})
    raise TypeError(f"not an operation: {operation!r}")


class MongoWriter:
    """Writes operations into one MongoDB database."""

    def __init__(self, database: Database, batch_size: int = 1000) -> None:
        self.database = database
        self.batch_size = batch_size

    def write(self, operations: Iterable[Operation]) -> int:
        """Write operations in order, batched; returns how many were written."""
        written = 0
        batch: list[Operation] = []
        for operation in operations:
            batch.append(operation)
            if len(batch) >= self.batch_size:
                written += self._flush(batch)
        return written + self._flush(batch)

    def load(self, generator: SalesMarketingGenerator, progress: Progress | None = None) -> int:
        """Write the generator's initial load, reporting progress after every batch."""
        inserts = generator.initial_load()
        total = len(inserts)
        written = 0
        for start in range(0, total, self.batch_size):
            written += self._flush(list(inserts[start : start + self.batch_size]))
            if progress is not None:
                progress(written, total)
        return written

    def run(
        self,
        generator: SalesMarketingGenerator,
        *,
        rate_per_second: float | None = None,
        limit: int | None = None,
        duration_seconds: float | None = None,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Apply the change stream at ``rate_per_second`` (None: as fast as possible).

        Stops after ``limit`` operations (or the few more that complete the last change,
        see ``SalesMarketingGenerator.change_groups``), after ``duration_seconds``, or when
        ``stop`` is set, whichever comes first, never inside a change; returns how many
        operations were written.
        """
        stop = stop or threading.Event()
        started = time.monotonic()
        deadline = started + duration_seconds if duration_seconds is not None else None
        batch: list[Operation] = []
        written = 0
        produced = 0
        for change in generator.change_groups(limit):
            batch.extend(change)
            produced += len(change)
            due = started + produced / rate_per_second if rate_per_second else None
            now = time.monotonic()
            if len(batch) >= self.batch_size or (due is not None and due > now):
                written += self._flush(batch)
                if progress is not None:
                    progress(written, limit)
                if due is not None and due > now:
                    stop.wait(due - now)
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
        written += self._flush(batch)
        if progress is not None:
            progress(written, limit)
        return written

    def _flush(self, batch: list[Operation]) -> int:
        by_collection: dict[str, list[Any]] = {}
        for operation in batch:
            by_collection.setdefault(operation.collection, []).append(_request(operation))
        for collection, requests in by_collection.items():
            self.database[collection].bulk_write(requests, ordered=True)
        count = len(batch)
        batch.clear()
        return count

    def counts(self) -> dict[str, int]:
        """Documents per generated collection, as MongoDB counts them."""
        return {name: self.database[name].count_documents({}) for name in COLLECTIONS}

    def documents(self) -> dict[str, list[dict[str, Any]]]:
        """Every generated collection's documents, with tz-aware datetimes."""
        return {name: list(self.database.get_collection(name, codec_options=_TZ_AWARE).find()) for name in COLLECTIONS}

    def resume_generator(self, config: GeneratorConfig | None = None) -> SalesMarketingGenerator | None:
        """A generator continuing from what the database holds, or None if it holds nothing yet."""
        documents = self.documents()
        if not any(documents.values()):
            return None
        return SalesMarketingGenerator.resume(documents, config)


__all__ = ["MongoWriter", "Progress"]
