"""A MongoDB workload in which every write carries its own sequence number.

One thread writes, one operation at a time, so sequence order is MongoDB's order. Each
write can be recognised in bronze by what its change event carries of its own (never by
the looked-up image, which with ``updateLookup`` may already show a later write):

- an insert and a replace by ``seq`` in the event's document (the inserted or replacing one);
- an update by ``seq`` in ``updateDescription.updatedFields`` (``$set`` of the new number);
- a delete by its document id: ids are never reused, so each is deleted at most once.

Documents written before cdc-service starts (``seed``) reach bronze through its initial
snapshot; they are checked through the final state, not as change events. The workload
starts only once that snapshot has landed: a write made while the snapshot runs may lie
before the snapshot's position, and is then (rightly) in the copy and not in the stream.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pymongo
from bson import ObjectId

from spark_jobs.verify import id_of

logger = logging.getLogger(__name__)


class WriteKind(StrEnum):
    """A write's change-event ``operationType``."""

    INSERT = "insert"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


_WEIGHTS = {WriteKind.INSERT: 45, WriteKind.UPDATE: 35, WriteKind.REPLACE: 10, WriteKind.DELETE: 10}
_WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heath", "inlet", "juniper")


@dataclass(frozen=True)
class Write:
    """One acknowledged write: its sequence number, where it went and when."""

    seq: int
    collection: str
    kind: WriteKind
    document_id: str  # canonical id text (spark_jobs.verify.id_of)
    at: float  # time.time() when MongoDB acknowledged it


class Workload:
    """Sequenced writes to ``collections`` of ``database`` at ``rate`` per second, until ``stop()``."""

    def __init__(self, mongo_uri: str, database: str, collections: list[str], rate: float, rng: random.Random) -> None:
        self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=15000)
        self._database = self._client[database]
        self.collections = list(collections)
        self.rate = rate
        self._rng = rng
        self._seq = 0
        self._next_number = dict.fromkeys(self.collections, 0)
        self._live: dict[str, list[Any]] = {name: [] for name in self.collections}
        self._versions: dict[tuple[str, str], int] = {}
        self.writes: list[Write] = []
        self.seed_ids: dict[str, set[str]] = {name: set() for name in self.collections}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- the documents -------------------------------------------------------------------

    def _new_id(self, collection: str) -> Any:
        """Ids of three BSON types (string, integer, ObjectId), never reused."""
        self._next_number[collection] += 1
        number = self._next_number[collection]
        kind = self.collections.index(collection) % 3
        if kind == 0:
            return f"{collection}-{number:07d}"
        if kind == 1:
            return number
        return ObjectId()

    def _body(self, seq: int, operation: str, version: int) -> dict[str, Any]:
        rng = self._rng
        return {
            "seq": seq,
            "op": operation,
            "version": version,
            "name": f"{rng.choice(_WORDS)}-{rng.randrange(10_000)}",
            "amount": round(rng.uniform(0, 1000), 2),
            "active": rng.random() < 0.5,
            "tags": rng.sample(_WORDS, rng.randint(0, 3)),
            "address": {"city": rng.choice(_WORDS).title(), "zip": rng.randrange(10_000, 99_999)},
        }

    # --- writing -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last acknowledged write (seed documents included)."""
        return self._seq

    def seed(self, per_collection: int) -> None:
        """Documents that exist before cdc-service starts (its snapshot copies them)."""
        for collection in self.collections:
            documents = []
            for _ in range(per_collection):
                self._seq += 1
                document_id = self._new_id(collection)
                documents.append({"_id": document_id, **self._body(self._seq, "seed", 0)})
                self._live[collection].append(document_id)
                self._versions[(collection, id_of(document_id))] = 0
                self.seed_ids[collection].add(id_of(document_id))
            if documents:
                self._database[collection].insert_many(documents, ordered=True)

    @property
    def seeded(self) -> int:
        return sum(len(ids) for ids in self.seed_ids.values())

    def _write_one(self) -> None:
        rng = self._rng
        collection = rng.choice(self.collections)
        live = self._live[collection]
        kind = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0] if live else WriteKind.INSERT
        target = self._database[collection]
        seq = self._seq + 1
        if kind is WriteKind.INSERT:
            document_id = self._new_id(collection)
            target.insert_one({"_id": document_id, **self._body(seq, kind.value, 0)})
            live.append(document_id)
            self._versions[(collection, id_of(document_id))] = 0
        else:
            index = rng.randrange(len(live))
            document_id = live[index]
            key = (collection, id_of(document_id))
            if kind is WriteKind.UPDATE:
                self._versions[key] += 1
                changes: dict[str, Any] = {"seq": seq, "op": kind.value, "name": f"{rng.choice(_WORDS)}-{seq}"}
                result = target.update_one({"_id": document_id}, {"$set": changes, "$inc": {"version": 1}})
                matched = result.modified_count
            elif kind is WriteKind.REPLACE:
                self._versions[key] += 1
                result = target.replace_one({"_id": document_id}, self._body(seq, kind.value, self._versions[key]))
                matched = result.modified_count
            else:
                matched = target.delete_one({"_id": document_id}).deleted_count
                live[index] = live[-1]
                live.pop()
            if matched != 1:
                raise RuntimeError(f"{kind.value} of {collection} {document_id!r} changed {matched} documents, not 1")
        with self._lock:
            self._seq = seq
            self.writes.append(Write(seq, collection, kind, id_of(document_id), time.time()))

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self._write_one()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -1.0:  # fell behind (a loaded machine): do not burst to catch up
                    next_at = time.monotonic()
        except BaseException as error:  # the stand-in never faults: any error is the harness's to report
            self.error = error
            logger.exception("the workload stopped on an error")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing and wait for the write in flight; raise what stopped the workload early."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"the workload failed: {self.error}") from self.error

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._client.close()

    def documents(self, collection: str) -> list[dict[str, Any]]:
        """MongoDB's current documents of one collection."""
        return list(self._database[collection].find({}))


__all__ = ["Workload", "Write", "WriteKind"]
