"""Stage 1: Kafka records of one topic to a Polars frame, vectorized.

The values are joined and handed to the native scanner in one call
(``lakehouse_codec.scan_change_events``), which returns Arrow buffers: the envelope,
the payload parts as relaxed Extended JSON, and every top-level field of ``fullDocument``
as (BSON kind, text). BSON values are first turned into NDJSON with one call
(``contract.values_to_ndjson``). The only per-record Python is reading the fields of
confluent-kafka's ``Message`` objects, which its API forces, and the contract-header
check, a tuple comparison on the headers' first two entries.

Records that break the contract (headers, bytes, required fields) become ``DeadLetter``s
with their position and the reason; the rest of the batch goes on.

A claim record (contract: Claim checks) is resolved first (``resolve_claims``): its value
becomes the claimed event's bytes, checked against the reference's size and SHA-256, and
from then on it is a record like any other (same event id, dedupe and typing). A claim
that is missing or does not match is dead-lettered with the reason, never landed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import polars as pl
import pyarrow as pa
from confluent_kafka import Message

import lakehouse_codec
from bronze_writer.errors import Action, Stage, classify, describe, isolate_poison
from lakehouse_common import contract
from lakehouse_common.claims import ClaimStore
from lakehouse_common.contract import ValueFormat
from lakehouse_common.errors import (
    ContractError,
    FatalError,
    MissingEventFieldError,
    UndecodableEventError,
)

_VERSION = (contract.HEADER_CONTRACT_VERSION, b"%d" % contract.CONTRACT_VERSION)
# Keyed by a record's first two headers as confluent-kafka returns them.
_FAST_HEADERS: dict[tuple[tuple[str, bytes | None], ...], ValueFormat] = {
    (_VERSION, (contract.HEADER_VALUE_FORMAT, b"json")): ValueFormat.JSON,
    (_VERSION, (contract.HEADER_VALUE_FORMAT, b"bson")): ValueFormat.BSON,
}

_FAST_HEADER_PREFIXES = {prefix: prefix for prefix in _FAST_HEADERS}
_SHARED_HEADERS = (*_FAST_HEADER_PREFIXES.values(), None)
# Marks a resolved claim record's headers, so a record is never resolved twice.
HEADER_CLAIM_RESOLVED = "lakehouse.claim.resolved"

KIND_COLUMN = "__kind_{}"
TEXT_COLUMN = "__text_{}"


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be landed, with where it was and why."""

    topic: str
    partition: int
    offset: int
    kafka_timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None
    error_type: str
    error: str

    def headers_json(self) -> str:
        return json.dumps(
            [[name, None if value is None else value.decode("utf-8", "backslashreplace")] for name, value in self.headers or []]
        )


@dataclass
class DecodedTopic:
    """One topic's records of a batch: good events as a frame, the rest as dead letters.

    ``records`` stays with it until it is landed, so a record that typing cannot handle is
    dead-lettered with its original key, value and headers.
    """

    topic: str
    frame: pl.DataFrame
    field_names: list[str]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    last_offsets: dict[int, int] = field(default_factory=dict)
    first_offsets: dict[int, int] = field(default_factory=dict)
    records: Records | None = None
    claims: list[str] = field(default_factory=list)  # digests of the claims resolved, marked landed once durable

    def dead_letter(self, positions: dict[tuple[int, int], BaseException]) -> list[DeadLetter]:
        """Move the rows at these (partition, offset) positions from the frame to the dead letters."""
        assert self.records is not None
        rows = {
            (partition, offset): row
            for row, (partition, offset) in enumerate(zip(self.records.partitions, self.records.offsets, strict=True))
        }
        letters = [self.records.dead_letter(self.topic, rows[position], error) for position, error in sorted(positions.items())]
        keys = pl.DataFrame(
            {"__kafka_partition": [p for p, _ in positions], "__kafka_offset": [o for _, o in positions]},
            schema={"__kafka_partition": pl.Int32, "__kafka_offset": pl.Int64},
        )
        self.frame = self.frame.join(keys, on=["__kafka_partition", "__kafka_offset"], how="anti", maintain_order="left")
        self.dead_letters += letters
        return letters


def _kept_headers(headers: list[tuple[str, bytes | None]] | None, tombstone: bool) -> tuple[tuple[str, bytes | None], ...] | None:
    """A shared copy of the usual contract headers, or the record's own (tombstones need their event id)."""
    if not headers:
        return None
    if not tombstone:
        shared = _FAST_HEADER_PREFIXES.get(tuple(headers[:2]))
        if shared is not None:
            return shared
    return tuple(headers)


@dataclass
class Records:
    """One topic's records, kept as columns as they are consumed.

    confluent-kafka's Message objects are read once and dropped: a batch of them held
    for seconds keeps librdkafka's fetch buffers alive and makes Python's garbage collector
    rescan every one of them (measured: consuming while holding Messages ran at 40% of the
    rate of holding their values). Headers are kept as tuples, which the collector untracks.
    """

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[tuple[tuple[str, bytes | None], ...] | None] = field(default_factory=list)
    bytes: int = 0

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> Records:
        records = cls()
        records.extend(messages)
        return records

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(
        self, messages: Sequence[Message], limit: int | None = None, *, batch_holds_records: bool = False
    ) -> dict[int, int]:
        """Append records of this topic (the only per-record Python: reading Message fields).

        Claims count at their resolved size. With ``limit`` (the most bytes these records may
        hold), the claim that would exceed it and every later record of its partition are left
        out, unless the batch would hold nothing: returns, per partition, the offset to read
        again (the caller seeks there). A reference weighs a few bytes in Kafka but its event
        up to 256 MB in memory, so Kafka's fetch bound does not bound claims.
        """
        values = [message.value() for message in messages]
        # A consumed record always has its partition and offset (confluent-kafka types them optional).
        partitions = cast(list[int], [message.partition() for message in messages])
        offsets = cast(list[int], [message.offset() for message in messages])
        # Records with the contract's usual headers keep a shared copy of them; only the others
        # keep their own (header objects retained per record would cost more than the parsing).
        # A consumed record's headers are a list of (name, bytes or None); confluent-kafka types them as produce() takes them.
        headers = [
            _kept_headers(cast("list[tuple[str, bytes | None]] | None", message.headers()), value is None)
            for message, value in zip(messages, values, strict=True)
        ]
        sizes = _claim_sizes(headers, values)
        deferred: dict[int, int] = {}
        if sizes is not None and limit is not None:
            taken = batch_holds_records or len(self) > 0
            keep = _within_room(limit - self.bytes, values, sizes, partitions, offsets, deferred, taken=taken)
            if deferred:
                messages = [messages[row] for row in keep]
                values, headers, sizes = (
                    [values[row] for row in keep],
                    [headers[row] for row in keep],
                    [sizes[row] for row in keep],
                )
                partitions, offsets = [partitions[row] for row in keep], [offsets[row] for row in keep]
        self.values += values
        self.partitions += partitions
        self.offsets += offsets
        self.timestamps += [message.timestamp()[1] for message in messages]
        self.keys += [message.key() for message in messages]
        self.headers += headers
        self.bytes += sum([len(value) for value in values if value]) + (sum(sizes) if sizes else 0)
        return deferred

    def without(self, partitions: set[int]) -> Records:
        """The records of every other partition (used when partitions are revoked)."""
        return self.subset([row for row, partition in enumerate(self.partitions) if partition not in partitions])

    def subset(self, keep: Sequence[int]) -> Records:
        """These rows, in this order."""
        kept = Records(
            [self.partitions[row] for row in keep],
            [self.offsets[row] for row in keep],
            [self.timestamps[row] for row in keep],
            [self.keys[row] for row in keep],
            [self.values[row] for row in keep],
            [self.headers[row] for row in keep],
        )
        sizes = _claim_sizes(kept.headers, kept.values)
        kept.bytes = sum(len(value) for value in kept.values if value) + (sum(sizes) if sizes else 0)
        return kept

    def dead_letter(self, topic: str, row: int, error: BaseException) -> DeadLetter:
        """The record at ``row`` as a dead letter, the error as its reason."""
        return DeadLetter(
            topic=topic,
            partition=self.partitions[row],
            offset=self.offsets[row],
            kafka_timestamp=self.timestamps[row],
            key=self.keys[row],
            value=self.values[row],
            headers=self.headers[row],
            error_type=type(error).__name__,
            error=str(error).strip() or repr(error),
        )


def _claim_sizes(headers: list[tuple[tuple[str, bytes | None], ...] | None], values: list[bytes | None]) -> list[int] | None:
    """Per record, what its claim will weigh once resolved (0 for other records); None without claims.

    Records with the usual headers share one of a few tuples (or have none), which ``count``
    finds in C: a batch without claims costs no Python per record.
    """
    if sum(map(headers.count, _SHARED_HEADERS)) == len(headers):
        return None
    sizes = []
    for entries, value in zip(headers, values, strict=True):
        size = 0
        if entries is not None and contract.is_claim(entries):
            try:
                size = contract.parse_claim_reference(value, entries[0][1]).size
            except ContractError:
                pass  # dead-lettered when resolved
        sizes.append(size)
    return sizes if any(sizes) else None


def _within_room(
    room: int,
    values: list[bytes | None],
    sizes: list[int],
    partitions: list[int],
    offsets: list[int],
    deferred: dict[int, int],
    *,
    taken: bool,
) -> list[int]:
    """The rows that fit in ``room``; fills ``deferred`` with the first offset left out per partition."""
    keep = []
    for row, (value, size, partition) in enumerate(zip(values, sizes, partitions, strict=True)):
        if partition in deferred:
            continue
        weight = size + (len(value) if value else 0)
        if size and taken and weight > room:
            deferred[partition] = offsets[row]
            continue
        keep.append(row)
        room -= weight
        taken = True
    return keep


def resolve_claims(topic: str, records: Records, claims: ClaimStore) -> tuple[list[DeadLetter], list[str]]:
    """Replace each claim record's reference by the claimed event; dead letters for those that cannot be.

    In place: a resolved record's value is the event and its headers lose the claim marker
    (``lakehouse.claim.resolved`` names the digest instead), so dead letters made later
    from it hold the full event. Returns the unresolvable records as dead letters and the
    digests resolved. A claim store that does not answer raises ``TransientError``.
    """
    headers = records.headers
    if sum(map(headers.count, _SHARED_HEADERS)) == len(headers):
        return [], []
    letters: list[DeadLetter] = []
    digests: list[str] = []
    for row, entries in enumerate(headers):
        if entries is None or not contract.is_claim(entries):
            continue
        try:
            reference = contract.parse_claim_reference(records.values[row], entries[0][1])
            records.values[row] = claims.get(reference)
        except ContractError as error:
            letters.append(records.dead_letter(topic, row, error))
            continue
        headers[row] = (*entries[1:], (HEADER_CLAIM_RESOLVED, reference.digest.encode()))
        digests.append(reference.digest)
    return letters, digests


def _text_array(buffers: tuple[bytes, bytes, bytes], count: int) -> pa.Array:
    validity, offsets, data = buffers
    return pa.Array.from_buffers(pa.large_utf8(), count, [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)])


def _int_array(buffers: tuple[bytes, bytes], count: int) -> pa.Array:
    validity, values = buffers
    return pa.Array.from_buffers(pa.int64(), count, [pa.py_buffer(validity), pa.py_buffer(values)])


def _kind_array(kinds: bytes, count: int) -> pa.Array:
    return pa.Array.from_buffers(pa.uint8(), count, [None, pa.py_buffer(kinds)])


def _formats(headers: Sequence[Sequence[tuple[str, bytes | None]] | None]) -> list[ValueFormat | ContractError]:
    """Each record's value format, or the contract error that makes it a dead letter."""
    fast = [_FAST_HEADERS.get(tuple(entries[:2])) if entries else None for entries in headers]
    if all(fast):
        return fast  # type: ignore[return-value]
    result: list[ValueFormat | ContractError] = []
    for value_format, entries in zip(fast, headers, strict=True):
        if value_format is not None:
            result.append(value_format)
            continue
        try:
            result.append(contract.parse_headers(entries).value_format)
        except ContractError as error:
            result.append(error)
    return result


def _bson_to_json(values: list[bytes]) -> list[bytes | UndecodableEventError]:
    """BSON values as relaxed Extended JSON: one native call, or one by one to find the bad ones."""
    try:
        lines: list[bytes | UndecodableEventError] = list(contract.values_to_ndjson(values).split(b"\n")[: len(values)])
        return lines
    except UndecodableEventError:
        converted: list[bytes | UndecodableEventError] = []
        for value in values:
            try:
                converted.append(contract.to_relaxed_json(value))
            except UndecodableEventError as error:
                converted.append(error)
        return converted


def _tombstone_as_delete(key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None) -> bytes | ContractError:
    """A tombstone (null value) lands as a delete of its key, under the event id of its header."""
    if not key:
        return MissingEventFieldError("tombstone without a key")
    try:
        event_id = contract.parse_headers(headers).event_id
    except ContractError as error:
        return error
    if not event_id:
        return MissingEventFieldError(f"tombstone without a {contract.HEADER_EVENT_ID!r} header")
    token = json.dumps({"_data": event_id}).encode()
    return b'{"_id":%s,"operationType":"delete","documentKey":%s}' % (token, key)


def decode_topic(topic: str, records: Records) -> DecodedTopic:
    """Decode one topic's records (in offset order per partition)."""
    partitions, offsets, timestamps = records.partitions, records.offsets, records.timestamps
    keys, values, headers = records.keys, records.values, records.headers

    first_offsets, last_offsets = _offset_bounds(records)

    formats = _formats(headers)
    problems: dict[int, ContractError] = {}
    scan_input: bytes | list[bytes] | None = None
    if all(value_format is ValueFormat.BSON for value_format in formats) and all(values):
        try:  # the common all-BSON batch: one native call to NDJSON, split by the scanner
            scan_input = contract.values_to_ndjson(cast(list[bytes], values))  # all present: checked above
        except UndecodableEventError:
            scan_input = None  # find the bad values one by one below
    json_values = values
    if scan_input is None and any(value_format is not ValueFormat.JSON for value_format in formats):
        json_values = list(values)
        bson_rows = [row for row, value_format in enumerate(formats) if value_format is ValueFormat.BSON]
        for row, value_format in enumerate(formats):
            if isinstance(value_format, ContractError):
                problems[row] = value_format
                json_values[row] = b"{}"
        if bson_rows:
            for row, converted in zip(bson_rows, _bson_to_json([values[row] or b"" for row in bson_rows]), strict=True):
                if isinstance(converted, UndecodableEventError):
                    problems[row] = converted
                    json_values[row] = b"{}"
                else:
                    json_values[row] = converted
    if scan_input is None and any(value is None for value in json_values):
        json_values = list(json_values)
        for row, value in enumerate(json_values):
            if value is None and row not in problems:
                tombstone = _tombstone_as_delete(keys[row], headers[row])
                if isinstance(tombstone, ContractError):
                    problems[row] = tombstone
                else:
                    json_values[row] = tombstone
        json_values = [b"{}" if value is None else value for value in json_values]

    scanned = lakehouse_codec.scan_change_events(json_values if scan_input is None else scan_input)
    count = scanned["count"]
    for row, message in scanned["errors"]:
        if row not in problems:
            error_class = MissingEventFieldError if message.startswith("missing") else UndecodableEventError
            problems[row] = error_class(message)

    text = scanned["text"]
    ints = scanned["int"]
    columns: dict[str, Any] = {
        "__event_id": _text_array(text["event_id"], count),
        "__resume_token": _text_array(text["resume_token"], count),
        "__operation": _text_array(text["operation"], count),
        "__db": _text_array(text["db"], count),
        "__collection": _text_array(text["collection"], count),
        "__document_key": _text_array(text["document_key"], count),
        "__document_id": _text_array(text["document_id"], count),
        "__cluster_time_seconds": _int_array(ints["cluster_time_seconds"], count),
        "__cluster_time_increment": _int_array(ints["cluster_time_increment"], count),
        "__wall_time_text": _text_array(text["wall_time"], count),
        "__wall_time_kind": _kind_array(scanned["wall_time_kind"], count),
        "__lsid": _text_array(text["lsid"], count),
        "__txn_number": _int_array(ints["txn_number"], count),
        "__kafka_partition": pa.array(partitions, pa.int32()),
        "__kafka_offset": pa.array(offsets, pa.int64()),
        "__kafka_timestamp_ms": pa.array(timestamps, pa.int64()),
        "__full_document": _text_array(text["full_document"], count),
        "__update_description": _text_array(text["update_description"], count),
        "__full_document_before_change": _text_array(text["full_document_before_change"], count),
        "__value_bytes": pa.array([len(value) if value else 0 for value in values], pa.int64()),
    }
    field_names = []
    for index, (name, kinds, buffers) in enumerate(scanned["fields"]):
        field_names.append(name)
        columns[KIND_COLUMN.format(index)] = _kind_array(kinds, count)
        columns[TEXT_COLUMN.format(index)] = _text_array(buffers, count)
    frame = pl.from_arrow(pa.table(columns))
    assert isinstance(frame, pl.DataFrame)

    dead_letters = []
    if problems:
        bad_rows = sorted(problems)
        frame = frame.with_row_index("__row").filter(~pl.col("__row").is_in(bad_rows)).drop("__row")
        dead_letters = [records.dead_letter(topic, row, problems[row]) for row in bad_rows]
    return DecodedTopic(topic, frame, field_names, dead_letters, last_offsets, first_offsets, records)


def decode_guarded(topic: str, records: Records, claims: ClaimStore) -> DecodedTopic:
    """Claims resolved, then ``decode_topic``, except that records on which it fails become dead letters.

    Whatever decoding raises on record content (a native panic, RecursionError, any exception)
    is isolated by bisection (bronze_writer.errors); the other records are decoded together.
    """
    unresolved, digests = resolve_claims(topic, records, claims)
    if not unresolved:
        decoded = _decode_isolating(topic, records)
    else:
        failed = {(letter.partition, letter.offset) for letter in unresolved}
        rows = [row for row, key in enumerate(zip(records.partitions, records.offsets, strict=True)) if key not in failed]
        decoded = _decode_isolating(topic, records.subset(rows))
        decoded.dead_letters = unresolved + decoded.dead_letters
        decoded.first_offsets, decoded.last_offsets = _offset_bounds(records)  # they still move the partition on
        decoded.records = records
    decoded.claims = digests
    return decoded


def _decode_isolating(topic: str, records: Records) -> DecodedTopic:
    try:
        return decode_topic(topic, records)
    except BaseException as error:  # classified: only the records' fault is isolated
        if classify(error, Stage.RECORDS) is not Action.DEAD_LETTER:
            raise
        failure = error
    bad = isolate_poison(range(len(records)), lambda rows: decode_topic(topic, records.subset(rows)))
    if not bad:
        raise FatalError(f"decoding a batch of {topic} failed, but no record fails alone: {describe(failure)}") from failure
    decoded = decode_topic(topic, records.subset([row for row in range(len(records)) if row not in bad]))
    decoded.dead_letters += [records.dead_letter(topic, row, error) for row, error in sorted(bad.items())]
    decoded.first_offsets, decoded.last_offsets = _offset_bounds(records)  # poison still moves the partition on
    decoded.records = records
    return decoded


def _offset_bounds(records: Records) -> tuple[dict[int, int], dict[int, int]]:
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for partition, offset in zip(records.partitions, records.offsets, strict=True):
        first.setdefault(partition, offset)
        last[partition] = offset
    return first, last


__all__ = [
    "HEADER_CLAIM_RESOLVED",
    "KIND_COLUMN",
    "TEXT_COLUMN",
    "DeadLetter",
    "DecodedTopic",
    "Records",
    "decode_guarded",
    "decode_topic",
    "resolve_claims",
]
