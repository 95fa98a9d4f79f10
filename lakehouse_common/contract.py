"""The event contract between cdc_service (producer) and bronze_writer (consumer).

Defined once, here. docs/event-contract.md explains it for people; this module is the
executable definition.

Topic
    One topic per source collection: ``<prefix>.<db>.<collection>`` (the MongoDB Kafka
    connector's convention). A database or collection name that is not already a valid
    Kafka name (letters, digits, ``.``, ``_``, ``-``) is escaped: its other characters
    become ``_`` and ``-<8 hex digits>`` (a SHA-256 prefix of the original name) is
    appended, so distinct namespaces get distinct topics while plain names keep theirs
    (``safe_name``). A mapping may rename a collection's topic but never merge two
    collections into one, nor name two topics Kafka considers colliding (they differ only
    in ``.`` and ``_``): consumers rely on each partition seeing one ordered stream (see
    Ordering). The publisher refuses, naming both namespaces, any pair that still meets.

Key
    The change event's ``documentKey`` as relaxed Extended JSON (``{"_id":...}``, plus
    the shard key fields on sharded collections), so every change to one document lands
    in one partition, in order. Events without a document (drop, rename, dropDatabase,
    invalidate) have no key.

Value
    The change event in MongoDB's documented shape, as relaxed Extended JSON (format
    ``json``, the default) or as the event's BSON bytes (format ``bson``). Fields:
    ``_id`` (the resume token; ``_id._data`` is the event id), ``operationType``, ``ns``,
    ``to`` (rename), ``documentKey``, ``fullDocument``, ``updateDescription``
    (``updatedFields``, ``removedFields``, ``truncatedArrays``, ``disambiguatedPaths``),
    ``fullDocumentBeforeChange``, ``clusterTime``, ``wallTime``, ``lsid`` and
    ``txnNumber`` (inside a transaction), ``collectionUUID``, ``splitEvent`` never (the
    service reassembles fragments before publishing). Fields MongoDB omits stay omitted.

    Snapshot records (copies of existing documents) use operation type ``snapshot`` and
    the shape of an insert. Their event id is ``<position>.<attempt>.<ordinal>``: a stream
    position, then the copy attempt and the record's ordinal within it, each as an
    order-preserving variable-length number (``sortable_number``). It sorts after every
    event up to the position, before every event after it, and a later attempt above every
    record of an earlier one, for any number of attempts. The position is, for the initial
    copy, the resume token the stream continues after; for a chunk of a copy made while
    streaming (on signal), the chunk's high watermark: the event id of the watermark's
    change event in the signal collection. Resume tokens order by cluster time first, across
    collections, so a chunk's records sort after every change committed before its high
    watermark and before every later one (``snapshot_event_id``, the one rule).

Headers
    ``lakehouse.contract.version`` (``1``), ``lakehouse.value.format`` (``json`` or
    ``bson``), ``lakehouse.event.id`` and ``lakehouse.operation``. Readers reject any
    other contract version.

Claim checks
    An event too large for its topic is kept in the lake's claim store
    (``lakehouse_common.claims``) under its content address, the SHA-256 of its value
    bytes, before its record is produced. The record keeps the event's key and headers
    and adds ``lakehouse.claim: sha256`` as its first header; its value is the reference
    ``{"lakehouse.claim":{"sha256":"<64 hex digits>","bytes":<n>}}`` (always JSON, whatever
    ``lakehouse.value.format`` says: that header names the format of the claimed bytes).
    A reader resolves the reference, checks size and digest, and reads the claimed bytes
    as the record's value. The reference has no ``_id``, so a reader that predates claim
    checks dead-letters it (missing ``_id``, or invalid BSON) instead of landing it: no
    contract version bump was needed.

Ordering
    Within a partition, event ids normally increase in publish order, compared as strings
    (resume tokens are hex-encoded KeyStrings, ordered by cluster time). Not always: a
    producer republishing after delivery failures (some records of a partition failed while
    later ones succeeded), an interrupted snapshot followed by the stream, or a foreign
    record with a forged id put lower ids after higher ones. So an event is a duplicate only
    when the consumer already stores that exact event id for the collection (or the same id
    came earlier in what it processes); it must never drop an event for being at or below a
    high-water mark. The order serves as an index only: an id above everything a partition
    delivered needs no lookup (bronze_writer.dedupe applies this rule).

Relaxed Extended JSON keeps every BSON value and type except the width of integers:
an int64 that fits in 32 bits reads back as an int32 (MongoDB compares them as equal).
NaN payload bits are not kept. The ``bson`` format keeps everything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple

import bson
from bson import json_util
from bson.binary import UuidRepresentation
from bson.json_util import DatetimeConversion, JSONMode, JSONOptions
from bson.raw_bson import RawBSONDocument

import lakehouse_codec
from lakehouse_common.errors import (
    MissingEventFieldError,
    UndecodableEventError,
    UnsupportedContractVersionError,
)

CONTRACT_VERSION = 1

HEADER_CONTRACT_VERSION = "lakehouse.contract.version"
HEADER_VALUE_FORMAT = "lakehouse.value.format"
HEADER_EVENT_ID = "lakehouse.event.id"
HEADER_OPERATION = "lakehouse.operation"
HEADER_CLAIM = "lakehouse.claim"

CLAIM_ALGORITHM = "sha256"
# Larger than any event MongoDB emits (a 16 MB document, its 16 MB pre-image, the envelope):
# a reference claiming more is refused before anything is fetched.
MAX_CLAIM_BYTES = 256 * 1024 * 1024
_CLAIM_REFERENCE_KEY = "lakehouse.claim"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Kafka topic names allow ASCII letters, digits, '.', '_' and '-', up to 249 characters.
_TOPIC_FORBIDDEN = re.compile(r"[^a-zA-Z0-9._-]")
_PLAIN_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_TOPIC_MAX_LENGTH = 249
ESCAPE_HASH_DIGITS = 8

# Snapshot ids: the former fixed-width ordinal (attempt * 10**10 + n, twelve digits), still read.
_LEGACY_ORDINAL = re.compile(r"[0-9]{12}")
_LEGACY_ORDINALS_PER_ATTEMPT = 10**10
_SORTABLE_NUMBER = re.compile(r"(z*)([a-y])([0-9]+)")


class ValueFormat(StrEnum):
    """How the event is serialized in the Kafka record value."""

    JSON = "json"
    BSON = "bson"


class Operation(StrEnum):
    """Operation types the contract names; other MongoDB types pass through unchanged."""

    INSERT = "insert"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    DROP = "drop"
    RENAME = "rename"
    DROP_DATABASE = "dropDatabase"
    INVALIDATE = "invalidate"
    SNAPSHOT = "snapshot"
    SNAPSHOT_COMPLETE = "snapshotComplete"


DOCUMENT_OPERATIONS = frozenset({Operation.INSERT, Operation.UPDATE, Operation.REPLACE, Operation.DELETE, Operation.SNAPSHOT})
"""Operations about one document: they carry a documentKey and a Kafka key."""

COLLECTION_END_OPERATIONS = frozenset({Operation.DROP, Operation.RENAME, Operation.DROP_DATABASE})
"""Operations after which the collection has none of the documents it had before them."""


class EncodedEvent(NamedTuple):
    """One change event ready to publish."""

    key: bytes | None
    value: bytes
    event_id: str
    operation: str
    database: str | None
    collection: str | None
    cluster_time: tuple[int, int] | None


# The codec's 7-tuples as EncodedEvents without a Python call per event (NamedTuple's
# __new__ and _make are Python functions; tuple.__new__ is not): a third of the codec's cost.
_as_encoded_event = partial(tuple.__new__, EncodedEvent)


# The headers every record of a format starts with; the event id and the operation follow.
_LEADING_HEADERS = {
    value_format: [(HEADER_CONTRACT_VERSION, b"%d" % CONTRACT_VERSION), (HEADER_VALUE_FORMAT, value_format.value.encode())]
    for value_format in ValueFormat
}
_EVENT_ID_POSITION = len(_LEADING_HEADERS[ValueFormat.JSON])
_OPERATION_POSITION = _EVENT_ID_POSITION + 1


@dataclass(frozen=True, slots=True)
class EventColumns:
    """A batch of change events ready to produce, column by column (``encode_event_columns``).

    Shaped for ``Producer.produce``: one key, value and header list per event (the headers of
    ``headers_for``, their constant tuples shared), the distinct namespaces with each event's
    index among them, and the events counted per (operation, namespace), so a publisher
    needs no Python work per event. ``event(index)`` rebuilds an event's ``EncodedEvent`` for
    the rare event that needs more (a dead-letter reference).
    """

    keys: list[bytes | None]
    values: list[bytes]
    headers: list[list[tuple[str, bytes]]]
    namespaces: list[tuple[str | None, str | None]]
    """The distinct (database, collection) pairs, in order of appearance."""
    namespace_of: list[int] | None
    """Each event's index in ``namespaces``; None when the batch has at most one namespace."""
    counts: list[tuple[str, int, int]]
    """(operation, namespace index, events) per distinct pair, in order of appearance."""
    largest: int
    """The largest ``len(key) + len(value)`` of the batch."""
    documents: bytes | list[bytes | RawBSONDocument] = field(repr=False)
    value_format: ValueFormat

    def __len__(self) -> int:
        return len(self.values)

    def namespace(self, index: int) -> tuple[str | None, str | None]:
        return self.namespaces[self.namespace_of[index] if self.namespace_of is not None else 0]

    def event_id(self, index: int) -> str:
        return self.headers[index][_EVENT_ID_POSITION][1].decode()

    def operation(self, index: int) -> str:
        return self.headers[index][_OPERATION_POSITION][1].decode()

    def event(self, index: int) -> EncodedEvent:
        """The ``index``-th event as an ``EncodedEvent``, encoded again (not for the hot path)."""
        if isinstance(self.documents, bytes):
            offset = 0
            for _ in range(index):
                offset += int.from_bytes(self.documents[offset : offset + 4], "little")
            length = int.from_bytes(self.documents[offset : offset + 4], "little")
            document: bytes | RawBSONDocument = self.documents[offset : offset + length]
        else:
            document = self.documents[index]
        (event,) = encode_events([document], self.value_format)
        return event


class EventHeaders(NamedTuple):
    """The contract headers of a record, validated."""

    contract_version: int
    value_format: ValueFormat
    event_id: str | None
    operation: str | None


# Decoding keeps out-of-range dates (DatetimeMS), UUID subtypes as Binary, and tz-aware datetimes.
EXTENDED_JSON_OPTIONS = JSONOptions(
    json_mode=JSONMode.RELAXED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
)
_BSON_DECODE_OPTIONS: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


def safe_name(name: str, *, keep_dots: bool = True) -> str:
    """A database or collection name as it appears in topic names and lake paths.

    A name made of letters, digits, ``.``, ``_`` and ``-`` (no ``.`` unless ``keep_dots``)
    stays as it is. Any other name has those other characters replaced by ``_`` and ``-``
    plus the first hex digits of the SHA-256 of its UTF-8 bytes appended: ``order items``
    and ``order_items`` no longer meet, and neither do ``заказы`` and ``товары``. (No rule
    that keeps every plain name can be injective over all names; the suffix makes a
    meeting a deliberate construction, which the publisher detects and refuses.)
    """
    if _PLAIN_NAME.fullmatch(name) and (keep_dots or "." not in name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:ESCAPE_HASH_DIGITS]
    return f"{_TOPIC_FORBIDDEN.sub('_', name)}-{digest}"


def topic_name(prefix: str, database: str, collection: str, overrides: Mapping[str, str] | None = None) -> str:
    """The topic of ``database.collection``: an override for the namespace, else the convention.

    Both parts are escaped by ``safe_name``, a database name also when it holds a dot
    (MongoDB forbids that), so the first dot after the prefix always ends the database.
    Raises ``ValueError`` for a name over Kafka's limit.
    """
    namespace = f"{database}.{collection}"
    if overrides and namespace in overrides:
        return overrides[namespace]
    parts = (prefix, safe_name(database, keep_dots=False), safe_name(collection))
    name = ".".join(part for part in parts if part)
    if len(name) > _TOPIC_MAX_LENGTH:
        raise ValueError(f"topic name for {namespace!r} exceeds {_TOPIC_MAX_LENGTH} characters")
    return name


def topic_collision_key(topic: str) -> str:
    """What Kafka compares to refuse a new topic: names differing only in '.' and '_' collide."""
    return topic.replace(".", "_")


def check_topic_mapping(overrides: Mapping[str, str]) -> None:
    """Reject mappings that merge collections into one topic or name invalid or colliding topics."""
    seen: dict[str, str] = {}
    for namespace, topic in overrides.items():
        if _TOPIC_FORBIDDEN.search(topic) or not topic or len(topic) > _TOPIC_MAX_LENGTH:
            raise ValueError(f"topic {topic!r} for {namespace!r} is not a valid Kafka topic name")
        key = topic_collision_key(topic)
        if key in seen:
            other = seen[key]
            relation = "both map to topic" if overrides[other] == topic else "map to topics Kafka considers to collide:"
            raise ValueError(
                f"{other!r} and {namespace!r} {relation} {topic!r}: one topic per collection "
                "keeps each partition a single ordered stream"
            )
        seen[key] = namespace


def encode_events(events: bytes | Sequence[bytes | RawBSONDocument], value_format: ValueFormat) -> list[EncodedEvent]:
    """Encode change events given as BSON, one call for a whole batch.

    ``events`` is a raw cursor batch (concatenated BSON documents) or a list of BSON
    documents. Raises ``UndecodableEventError`` naming the first bad event.
    """
    if not isinstance(events, (bytes, list)):
        events = list(events)
    try:
        encoded = lakehouse_codec.encode_change_events(events, str(value_format))
    except ValueError as error:
        raise UndecodableEventError(str(error)) from error
    return list(map(_as_encoded_event, encoded))


def encode_event_columns(events: bytes | Sequence[bytes | RawBSONDocument], value_format: ValueFormat) -> EventColumns:
    """Encode change events given as BSON for producing, one call for a whole batch (see ``EventColumns``).

    The same records as ``encode_events`` with ``headers_for``. Raises ``UndecodableEventError``
    naming the first bad event.
    """
    documents = events if isinstance(events, (bytes, list)) else list(events)
    try:
        columns = lakehouse_codec.encode_change_batch(
            documents, str(value_format), _LEADING_HEADERS[value_format], HEADER_EVENT_ID, HEADER_OPERATION
        )
    except ValueError as error:
        raise UndecodableEventError(str(error)) from error
    keys, values, headers, namespaces, namespace_of, counts, largest = columns
    return EventColumns(
        keys, values, headers, namespaces, namespace_of, counts, largest, documents=documents, value_format=value_format
    )


# Record headers as confluent-kafka's produce() takes them (its list type is invariant in the value).
ProducedHeaders = list[tuple[str, str | bytes | None]]


def headers_for(event: EncodedEvent, value_format: ValueFormat) -> ProducedHeaders:
    """The contract headers of one record."""
    return [
        *_LEADING_HEADERS[value_format],
        (HEADER_EVENT_ID, event.event_id.encode()),
        (HEADER_OPERATION, event.operation.encode()),
    ]


class ClaimReference(NamedTuple):
    """Where a claimed event is: its content address (SHA-256 of the value bytes) and size."""

    digest: str
    size: int

    @classmethod
    def of(cls, value: bytes) -> ClaimReference:
        return cls(hashlib.sha256(value).hexdigest(), len(value))


def claim_record_value(reference: ClaimReference) -> bytes:
    """The value of a record whose event is claimed: the reference, as compact JSON."""
    return b'{"%s":{"%s":"%s","bytes":%d}}' % (
        _CLAIM_REFERENCE_KEY.encode(),
        CLAIM_ALGORITHM.encode(),
        reference.digest.encode(),
        reference.size,
    )


def claim_headers(event: EncodedEvent, value_format: ValueFormat) -> ProducedHeaders:
    """The headers of a claimed event's record: the claim marker first, then the usual ones."""
    return [(HEADER_CLAIM, CLAIM_ALGORITHM.encode()), *headers_for(event, value_format)]


def is_claim(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    """Whether a record's value is a claim reference (the marker is the first header)."""
    return headers is not None and len(headers) > 0 and headers[0][0] == HEADER_CLAIM


def parse_claim_reference(value: bytes | None, marker: bytes | None = CLAIM_ALGORITHM.encode()) -> ClaimReference:
    """A claim record's reference, validated; ``UndecodableEventError`` for anything else.

    Nothing in it is trusted further than this: the digest must be 64 lowercase hex digits
    (it becomes an object name, never a path a record chooses) and the size a plausible one.
    """
    if marker != CLAIM_ALGORITHM.encode():
        raise UndecodableEventError(f"claim header {HEADER_CLAIM!r} names an unknown algorithm {marker!r}")
    if value is None or len(value) > 4096:
        raise UndecodableEventError("a claim record's value is not a claim reference")
    try:
        document = json.loads(value)
        body = document[_CLAIM_REFERENCE_KEY]
        digest, size = body[CLAIM_ALGORITHM], body["bytes"]
    except (ValueError, TypeError, KeyError) as error:
        raise UndecodableEventError(f"invalid claim reference: {type(error).__name__}: {error}") from None
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise UndecodableEventError(f"invalid claim reference: {CLAIM_ALGORITHM} is not 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_CLAIM_BYTES:
        raise UndecodableEventError(f"invalid claim reference: bytes {size!r} is not in 1..{MAX_CLAIM_BYTES}")
    return ClaimReference(digest, size)


def parse_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> EventHeaders:
    """Validate a record's contract headers; raise a ``ContractError`` subclass if invalid."""
    values = {name: value for name, value in (headers or ())}
    raw_version = values.get(HEADER_CONTRACT_VERSION)
    if raw_version is None:
        raise MissingEventFieldError(f"header {HEADER_CONTRACT_VERSION!r} is missing")
    try:
        version = int(raw_version)
    except ValueError as error:
        raise UnsupportedContractVersionError(f"contract version {raw_version!r} is not a number") from error
    if version != CONTRACT_VERSION:
        raise UnsupportedContractVersionError(
            f"contract version {version} is not supported (this reader knows {CONTRACT_VERSION})"
        )
    raw_format = values.get(HEADER_VALUE_FORMAT)
    try:
        value_format = ValueFormat((raw_format or b"json").decode())
    except ValueError as error:
        raise UndecodableEventError(f"unknown value format {raw_format!r}") from error
    event_id = values.get(HEADER_EVENT_ID)
    operation = values.get(HEADER_OPERATION)
    return EventHeaders(
        contract_version=version,
        value_format=value_format,
        event_id=event_id.decode() if event_id is not None else None,
        operation=operation.decode() if operation is not None else None,
    )


def to_relaxed_json(document: bytes | RawBSONDocument | Mapping[str, Any]) -> bytes:
    """One BSON document (bytes, raw or a mapping) as relaxed Extended JSON."""
    if isinstance(document, RawBSONDocument):
        raw = document.raw
    elif isinstance(document, bytes):
        raw = document
    else:
        raw = bson.encode(document)
    try:
        return lakehouse_codec.relaxed_json(raw)
    except ValueError as error:
        raise UndecodableEventError(str(error)) from error


def values_to_ndjson(values: bytes | Sequence[bytes]) -> bytes:
    """BSON record values as newline-delimited relaxed Extended JSON, for vectorized readers."""
    try:
        return lakehouse_codec.to_ndjson(values if isinstance(values, (bytes, list)) else list(values))
    except ValueError as error:
        raise UndecodableEventError(str(error)) from error


def decode_value(value: bytes, value_format: ValueFormat) -> dict[str, Any]:
    """One record value back to a document with BSON types (tools and tests, not the hot path)."""
    try:
        if value_format is ValueFormat.BSON:
            return bson.decode(value, codec_options=_BSON_DECODE_OPTIONS)
        return json_util.loads(value, json_options=EXTENDED_JSON_OPTIONS)
    except Exception as error:  # bson and json raise many unrelated types for bad input
        raise UndecodableEventError(f"cannot decode {value_format.value} value: {error}") from error


def required_field(event: Mapping[str, Any], name: str) -> Any:
    """A field the contract requires, or ``MissingEventFieldError``."""
    if name not in event:
        raise MissingEventFieldError(f"event has no {name!r} field")
    return event[name]


def sortable_number(number: int) -> str:
    """A non-negative integer as text whose string order is its numeric order, without bound.

    The decimal digits follow a length marker: ``a`` for one digit up to ``y`` for 25, and
    one ``z`` more for every further 25 (``0`` is ``a0``, ``100`` is ``c100``). Markers are
    letters, so the text also sorts above any run of plain digits.
    """
    if number < 0:
        raise ValueError(f"{number} is negative")
    digits = str(number)
    more, length = divmod(len(digits) - 1, 25)
    return "z" * more + chr(ord("a") + length) + digits


def _parse_sortable_number(text: str) -> int | None:
    match = _SORTABLE_NUMBER.fullmatch(text)
    if match is None:
        return None
    more, length, digits = match.groups()
    if len(digits) != 25 * len(more) + ord(length) - ord("a") + 1:
        return None
    return int(digits)


class SnapshotEventId(NamedTuple):
    """What a snapshot record's event id says: where the copy began, which attempt, which record."""

    position: str
    attempt: int
    ordinal: int


def snapshot_event_id(position: str, ordinal: int, *, attempt: int = 0) -> str:
    """The event id of the ``ordinal``-th document copied by ``attempt`` of a copy at ``position``.

    ``<position>.<attempt>.<ordinal>`` with both numbers in ``sortable_number`` form: the
    dot sorts below every character of a resume token, so the id sorts after every event
    up to ``position`` and before every event after it; (attempt, ordinal) order is string
    order. ``position`` is the token the stream continues after (the initial copy) or a
    chunk's high watermark (a copy while streaming): see the module docstring.
    """
    return f"{position}.{sortable_number(attempt)}.{sortable_number(ordinal)}"


def parse_snapshot_event_id(event_id: str) -> SnapshotEventId | None:
    """The parts of a snapshot record's id (also of the former ``<position>.<12 digits>`` form), else None."""
    head, dot, last = event_id.rpartition(".")
    if not dot:
        return None
    if _LEGACY_ORDINAL.fullmatch(last):
        attempt, ordinal = divmod(int(last), _LEGACY_ORDINALS_PER_ATTEMPT)
        return SnapshotEventId(head, attempt, ordinal) if head else None
    position, dot, attempt_text = head.rpartition(".")
    ordinal_number = _parse_sortable_number(last)
    attempt_number = _parse_sortable_number(attempt_text)
    if not dot or not position or ordinal_number is None or attempt_number is None:
        return None
    return SnapshotEventId(position, attempt_number, ordinal_number)


def snapshot_complete_event_id(position: str, attempt: int) -> str:
    """The event id of the marker that ``attempt`` of a full copy at ``position`` is complete.

    ``<position>.<attempt>.~``: unique per copy attempt, and it names the copy's absence
    position (``absence_position``). A document whose every event sorts below that position
    was not in the copy, so MongoDB no longer has it.
    """
    return f"{position}.{sortable_number(attempt)}.~"


def absence_position(event_id: str, operation: str) -> str | None:
    """Below this id, the documents of the collection that have no later event are gone.

    For a snapshot-complete marker, its id without the final ``~``: above every event up
    to the copy's position and every record of earlier attempts, below every record of the
    copy and every later change. For a drop, rename or dropDatabase, its id and a dot:
    above it, below every later event. None for any other event (and a malformed marker id).
    """
    if operation == Operation.SNAPSHOT_COMPLETE:
        position, _, attempt = event_id.removesuffix(".~").rpartition(".")
        if not event_id.endswith(".~") or not position or _parse_sortable_number(attempt) is None:
            return None
        return event_id.removesuffix("~")
    if operation in COLLECTION_END_OPERATIONS:
        return f"{event_id}."
    return None


def snapshot_complete_event(
    *, database: str, collection: str, position: str, attempt: int, documents: int, cluster_time: bson.Timestamp, wall_time: Any
) -> bytes:
    """A snapshot-complete marker as BSON: attempt ``attempt`` of a full, unfiltered copy at
    ``position`` published all ``documents`` records (docs/event-contract.md)."""
    return bson.encode(
        {
            "_id": {"_data": snapshot_complete_event_id(position, attempt)},
            "operationType": Operation.SNAPSHOT_COMPLETE.value,
            "clusterTime": cluster_time,
            "wallTime": wall_time,
            "ns": {"db": database, "coll": collection},
            "snapshot": {"position": position, "attempt": attempt, "documents": documents},
        }
    )


def snapshot_event(
    document: RawBSONDocument | Mapping[str, Any],
    *,
    database: str,
    collection: str,
    document_key: Mapping[str, Any] | RawBSONDocument,
    position: str,
    ordinal: int,
    attempt: int = 0,
    cluster_time: bson.Timestamp,
    wall_time: Any,
) -> bytes:
    """A snapshot record as BSON, shaped like an insert event (see the module docstring)."""
    return bson.encode(
        {
            "_id": {"_data": snapshot_event_id(position, ordinal, attempt=attempt)},
            "operationType": Operation.SNAPSHOT.value,
            "clusterTime": cluster_time,
            "wallTime": wall_time,
            "ns": {"db": database, "coll": collection},
            "documentKey": document_key,
            "fullDocument": document,
        }
    )


__all__ = [
    "CLAIM_ALGORITHM",
    "COLLECTION_END_OPERATIONS",
    "CONTRACT_VERSION",
    "DOCUMENT_OPERATIONS",
    "EXTENDED_JSON_OPTIONS",
    "HEADER_CLAIM",
    "HEADER_CONTRACT_VERSION",
    "HEADER_EVENT_ID",
    "HEADER_OPERATION",
    "HEADER_VALUE_FORMAT",
    "ESCAPE_HASH_DIGITS",
    "MAX_CLAIM_BYTES",
    "ClaimReference",
    "EncodedEvent",
    "EventColumns",
    "EventHeaders",
    "Operation",
    "ProducedHeaders",
    "SnapshotEventId",
    "ValueFormat",
    "absence_position",
    "check_topic_mapping",
    "claim_headers",
    "claim_record_value",
    "decode_value",
    "encode_event_columns",
    "encode_events",
    "headers_for",
    "is_claim",
    "parse_claim_reference",
    "parse_headers",
    "parse_snapshot_event_id",
    "required_field",
    "safe_name",
    "snapshot_complete_event",
    "snapshot_complete_event_id",
    "snapshot_event",
    "snapshot_event_id",
    "sortable_number",
    "to_relaxed_json",
    "topic_collision_key",
    "topic_name",
    "values_to_ndjson",
]
