"""Signals: documents in a MongoDB collection that ask the running service for a copy.

As in Debezium's signalling, an operator (or ``cdc-service snapshot``) inserts a document in
the signal collection (``snapshot.signal_collection``, for example ``shop.cdc_signals``). The
service reads that collection with a change stream of its own and never captures it: its
events are consumed, never published.

The documents::

    {_id: <any>, type: "execute-snapshot",
     data: {"data-collections": ["shop.orders", ...],     # namespaces, exact names
            "filter": {"status": "open"},                 # optional: a query document
            "type": "incremental"}}                       # optional: the only kind there is
    {_id: <any>, type: "stop-snapshot",
     data: {"data-collections": ["shop.orders"]}}         # optional: all running copies

A signal is *pending* while it has no ``status``: one written while no service followed the
collection (before the first start, or while the signal stream could not resume) is read
from the collection once the service follows it, and executed then.

The service answers in the same document, so whoever wrote it can follow it: ``status``
becomes ``accepted`` (with ``service`` and ``accepted_at``) or ``rejected`` (with
``reason``), and ``done`` once every copy it asked for has finished, ``finished`` listing per
collection the documents published, the chunks and the documents superseded by the stream.
Acceptance is a compare-and-set on a document without a status (or one this service accepted
before a crash): a signal withdrawn by the command that wrote it (``withdrawn``), or taken by
another service, is never executed.

The service writes its watermarks into the same collection, two documents per chunk
(``wm:<copy>:<chunk>:<nonce>:low`` and ``...:high``, Debezium's ``snapshot-window-open`` and
``snapshot-window-close``), and deletes them once the chunk is published.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import bson
from bson import json_util
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.write_concern import WriteConcern

# Decoding that keeps every BSON value as it was (out-of-range dates, UUID subtypes, ...).
ROUND_TRIP: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
ROUND_TRIP_RAW: CodecOptions[RawBSONDocument] = ROUND_TRIP.with_options(document_class=RawBSONDocument)
_CANONICAL_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.CANONICAL,
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

WATERMARK_PREFIX = "wm:"


class SignalType(StrEnum):
    EXECUTE_SNAPSHOT = "execute-snapshot"
    STOP_SNAPSHOT = "stop-snapshot"


class SignalStatus(StrEnum):
    """What the service (or the command that wrote the signal) says about it."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    WITHDRAWN = "withdrawn"


class SignalError(ValueError):
    """A signal document that cannot be executed; its reason goes back into the document."""


@dataclass(frozen=True)
class Signal:
    """A parsed signal. ``collections`` empty in a stop signal means every running copy."""

    id: Any
    type: SignalType
    collections: tuple[str, ...] = ()
    filter: dict[str, Any] | None = None

    @property
    def id_text(self) -> str:
        return value_text(self.id)


def value_text(value: Any) -> str:
    """A BSON value as canonical Extended JSON: exact, and readable in checkpoints and logs."""
    return json_util.dumps(value, json_options=_CANONICAL_JSON)


def value_of_text(text: str) -> Any:
    return json_util.loads(text, json_options=_CANONICAL_JSON)


def id_key_text(key: bytes) -> str:
    """An ``{_id: ...}`` key (BSON bytes) as text for a checkpoint: exact for every type."""
    return base64.b64encode(key).decode()


def id_key_of_text(text: str) -> bytes:
    return base64.b64decode(text)


def parse_signal(document: Mapping[str, Any]) -> Signal:
    """The signal a document asks for; ``SignalError`` says what is wrong with it."""
    if "_id" not in document:
        raise SignalError("the signal document has no _id")
    kind = document.get("type")
    try:
        signal_type = SignalType(str(kind))
    except ValueError:
        known = ", ".join(repr(t.value) for t in SignalType)
        raise SignalError(f"type {kind!r} is not a signal this service executes ({known})") from None
    data = document.get("data")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise SignalError("'data' must be a document")
    collections = data.get("data-collections") or []
    if not isinstance(collections, list) or not all(isinstance(name, str) for name in collections):
        raise SignalError("'data.data-collections' must be a list of namespaces (<database>.<collection>)")
    for name in collections:
        database, dot, collection = name.partition(".")
        if not dot or not database or not collection:
            raise SignalError(f"{name!r} is not a namespace (<database>.<collection>)")
    if signal_type is SignalType.EXECUTE_SNAPSHOT:
        if not collections:
            raise SignalError("'data.data-collections' names no collection to copy")
        snapshot_type = data.get("type", "incremental")
        if str(snapshot_type).lower() != "incremental":
            raise SignalError(
                f"snapshot type {snapshot_type!r} is not supported: copies run in chunks while streaming ('incremental')"
            )
    query = data.get("filter")
    if query is not None and not isinstance(query, Mapping):
        raise SignalError("'data.filter' must be a query document")
    if query is not None and signal_type is SignalType.STOP_SNAPSHOT:
        raise SignalError("a stop-snapshot signal takes no filter")
    return Signal(
        document["_id"],
        signal_type,
        tuple(dict.fromkeys(collections)),
        dict(query) if query else None,
    )


def decode_document(raw: RawBSONDocument | Mapping[str, Any]) -> dict[str, Any]:
    """A signal document from its change event's ``fullDocument``, every value kept."""
    if isinstance(raw, RawBSONDocument):
        return bson.decode(raw.raw, codec_options=ROUND_TRIP)
    return dict(raw)


class Watermark(NamedTuple):
    """A watermark document's id, taken apart: which chunk window it opens or closes."""

    window: str  # "<copy>:<chunk>:<nonce>"
    mark: str  # "low" or "high"


def watermark_id(window: str, mark: str) -> str:
    return f"{WATERMARK_PREFIX}{window}:{mark}"


def parse_watermark_id(value: Any) -> Watermark | None:
    if not isinstance(value, str) or not value.startswith(WATERMARK_PREFIX):
        return None
    window, _, mark = value[len(WATERMARK_PREFIX) :].rpartition(":")
    if mark not in ("low", "high") or not window:
        return None
    return Watermark(window, mark)


def watermark_document(window: str, mark: str, namespace: str) -> dict[str, Any]:
    return {
        "_id": watermark_id(window, mark),
        "type": "snapshot-window-open" if mark == "low" else "snapshot-window-close",
        "namespace": namespace,
        "at": datetime.now(UTC),
    }


class SignalBox:
    """The signal collection, as the service and the command use it (majority writes)."""

    def __init__(self, client: MongoClient, namespace: str) -> None:
        database, collection = namespace.split(".", 1)
        self.namespace = namespace
        self.collection: Collection = client[database].get_collection(
            collection, codec_options=ROUND_TRIP, write_concern=WriteConcern("majority")
        )

    # -- the service -------------------------------------------------------------------

    @staticmethod
    def _unanswered(service: str) -> dict[str, Any]:
        """Signals nobody answered, or that this service accepted before a crash."""
        return {"$or": [{"status": {"$exists": False}}, {"status": SignalStatus.ACCEPTED.value, "service": service}]}

    def pending(self, service: str) -> list[dict[str, Any]]:
        """The signal documents still to execute, in the collection's natural order (the watermarks left out)."""
        return [
            document for document in self.collection.find(self._unanswered(service))
            if parse_watermark_id(document.get("_id")) is None
        ]

    def accept(self, signal_id: Any, service: str) -> bool:
        """Take the signal (compare-and-set); False when it was withdrawn or is another's."""
        taken = self.collection.find_one_and_update(
            {"_id": signal_id, **self._unanswered(service)},
            {"$set": {"status": SignalStatus.ACCEPTED.value, "service": service, "accepted_at": datetime.now(UTC)}},
        )
        return taken is not None

    def reject(self, signal_id: Any, service: str, reason: str) -> None:
        self.collection.update_one(
            {"_id": signal_id, "status": {"$exists": False}},
            {"$set": {"status": SignalStatus.REJECTED.value, "service": service, "reason": reason,
                      "answered_at": datetime.now(UTC)}},
        )

    def finish(self, signal_id: Any, finished: Mapping[str, Any], *, done: bool) -> None:
        """Record one collection's end; with ``done``, the signal's as well."""
        update: dict[str, Any] = {"$push": {"finished": dict(finished)}}
        if done:
            update["$set"] = {"status": SignalStatus.DONE.value, "done_at": datetime.now(UTC)}
        self.collection.update_one({"_id": signal_id}, update)

    def delete_watermarks(self, ids: list[str]) -> None:
        if ids:
            self.collection.delete_many({"_id": {"$in": ids}})

    def delete_watermarks_of(self, copy_id: str) -> None:
        """Every watermark a copy left, also those of chunks a crash interrupted."""
        self.collection.delete_many({"_id": {"$regex": f"^{WATERMARK_PREFIX}{copy_id}:"}})

    # -- the command ---------------------------------------------------------------------

    def send(self, collections: list[str], query: Mapping[str, Any] | None = None) -> str:
        """Insert an execute-snapshot signal; return its id."""
        signal_id = f"snapshot-{uuid.uuid4().hex[:12]}"
        data: dict[str, Any] = {"data-collections": collections, "type": "incremental"}
        if query:
            data["filter"] = dict(query)
        self.collection.insert_one(
            {"_id": signal_id, "type": SignalType.EXECUTE_SNAPSHOT.value, "data": data, "sent_at": datetime.now(UTC)}
        )
        return signal_id

    def status(self, signal_id: Any) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": signal_id})

    def withdraw(self, signal_id: Any) -> bool:
        """Withdraw an unanswered signal, so no service executes it later; False if one answered."""
        withdrawn = self.collection.find_one_and_update(
            {"_id": signal_id, "status": {"$exists": False}},
            {"$set": {"status": SignalStatus.WITHDRAWN.value, "answered_at": datetime.now(UTC)}},
        )
        return withdrawn is not None


__all__ = [
    "ROUND_TRIP",
    "ROUND_TRIP_RAW",
    "WATERMARK_PREFIX",
    "Signal",
    "SignalBox",
    "SignalError",
    "SignalStatus",
    "SignalType",
    "Watermark",
    "decode_document",
    "id_key_of_text",
    "id_key_text",
    "parse_signal",
    "parse_watermark_id",
    "value_of_text",
    "value_text",
    "watermark_document",
    "watermark_id",
]
