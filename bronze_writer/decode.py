"""Stage 1: Kafka records of one topic to a Polars frame, vectorized.

The consumer loop reads confluent-kafka's ``Message`` objects with one native call per
``consume()`` (``lakehouse_codec.collect_messages``): values, keys and headers stay Python
objects, positions and formats become packed columns, and the contract-header check is a
comparison with the shared usual headers. The values are then handed to the native
scanner in one call (``lakehouse_codec.scan_change_events``), which returns Arrow buffers:
the envelope, the payload parts as relaxed Extended JSON, and every top-level field of
``fullDocument`` as (BSON kind, text). Text columns are ``string_view`` arrays into one copy
of the events' bytes, which Polars and the Parquet writer take without copying again. BSON
values are first turned into NDJSON with one call (``contract.values_to_ndjson``).

Records that break the contract (headers, bytes, required fields) become ``DeadLetter``s
with their position and the reason; the rest of the batch goes on.

A claim record (contract: Claim checks) is resolved first (``resolve_claims``): its value
becomes the claimed event's bytes, checked against the reference's size and SHA-256, and
from then on it is a record like any other (same event id, dedupe and typing). A claim
that is missing or does not match is dead-lettered with the reason, never landed.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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

Headers = tuple[tuple[str, bytes | None], ...]

_VERSION = (contract.HEADER_CONTRACT_VERSION, b"%d" % contract.CONTRACT_VERSION)
# The contract's usual first two headers; a record that starts with them needs no parsing.
_JSON_HEADERS = (_VERSION, (contract.HEADER_VALUE_FORMAT, b"json"))
_BSON_HEADERS = (_VERSION, (contract.HEADER_VALUE_FORMAT, b"bson"))
# collect_messages' format codes; 0: the headers must be parsed (and may break the contract).
_PARSE, _JSON, _BSON = 0, 1, 2
_FORMAT_OF_CODE = {_JSON: ValueFormat.JSON, _BSON: ValueFormat.BSON}
_CODE_OF_HEADERS: dict[Headers, int] = {_JSON_HEADERS: _JSON, _BSON_HEADERS: _BSON}
# Marks a resolved claim record's headers, so a record is never resolved twice.
HEADER_CLAIM_RESOLVED = "lakehouse.claim.resolved"

KIND_COLUMN = "__kind_{}"
TEXT_COLUMN = "__text_{}"
# A field's dates as UTC microseconds, when the scanner parsed every one (else typing parses the text).
DATE_COLUMN = "__date_{}"
WALL_TIME_MICROS = "__wall_time_micros"


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


@dataclass
class Records:
    """One topic's records, kept as columns as they are consumed.

    confluent-kafka's Message objects are read once and dropped: a batch of them held
    for seconds keeps librdkafka's fetch buffers alive and makes Python's garbage collector
    rescan every one of them (measured: consuming while holding Messages ran at 40% of the
    rate of holding their values). Values are copied into native buffers as they are
    collected (``RecordValues``: no bytes object per record stays alive, and the scanner
    reads them in place); positions are packed arrays; headers are tuples, which the
    collector untracks, and records with the contract's usual headers share one.
    ``formats`` holds collect_messages' codes (1 JSON, 2 BSON, 0 parse the headers);
    ``sizes`` each value's bytes, a claim's those of the event it references.
    """

    partitions: array[int] = field(default_factory=lambda: array("i"))
    offsets: array[int] = field(default_factory=lambda: array("q"))
    timestamps: array[int] = field(default_factory=lambda: array("q"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    formats: bytearray = field(default_factory=bytearray)
    keys: list[bytes | None] = field(default_factory=list)
    values: lakehouse_codec.RecordValues = field(default_factory=lakehouse_codec.RecordValues)
    headers: list[Headers | None] = field(default_factory=list)
    bytes: int = 0

    @classmethod
    def from_messages(cls, messages: Sequence[Message]) -> Records:
        """Records of one topic's messages (which carry no error)."""
        collected, errors = collect(messages)
        if errors or len(collected) > 1:
            raise ValueError("expected the error-free messages of one topic")
        return next(iter(collected.values()), cls())

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, other: Records, limit: int | None = None, *, batch_holds_records: bool = False) -> dict[int, int]:
        """Append another collection of this topic's records.

        Claims count at their resolved size (``sizes``). With ``limit`` (the most bytes these
        records may hold), the claim that would exceed it and every later record of its
        partition are left out, unless the batch would hold nothing: returns, per partition,
        the offset to read again (the caller seeks there). A reference weighs a few bytes in
        Kafka but its event up to 256 MB in memory, so Kafka's fetch bound does not bound claims.
        """
        deferred: dict[int, int] = {}
        claim_rows = other.claim_rows()
        if claim_rows and limit is not None:
            taken = batch_holds_records or len(self) > 0
            keep = other.within_room(limit - self.bytes, claim_rows, deferred, taken=taken)
            if deferred:
                other = other.subset(keep)
        self.partitions += other.partitions
        self.offsets += other.offsets
        self.timestamps += other.timestamps
        self.sizes += other.sizes
        self.formats += other.formats
        self.keys += other.keys
        self.values.extend(other.values)
        self.headers += other.headers
        self.bytes += other.bytes
        return deferred

    def claim_rows(self) -> list[int]:
        """The rows whose value is a claim reference (only records with unusual headers can be)."""
        if _PARSE not in self.formats:
            return []
        return [
            row
            for row, (code, entries) in enumerate(zip(self.formats, self.headers, strict=True))
            if code == _PARSE and contract.is_claim(entries)
        ]

    def within_room(self, room: int, claim_rows: list[int], deferred: dict[int, int], *, taken: bool) -> list[int]:
        """The rows that fit in ``room``; fills ``deferred`` with the first offset left out per partition."""
        claims = set(claim_rows)
        keep = []
        for row, (size, partition) in enumerate(zip(self.sizes, self.partitions, strict=True)):
            if partition in deferred:
                continue
            if row in claims and taken and size > room:
                deferred[partition] = self.offsets[row]
                continue
            keep.append(row)
            room -= size
            taken = True
        return keep

    def without(self, partitions: set[int]) -> Records:
        """The records of every other partition (used when partitions are revoked)."""
        return self.subset([row for row, partition in enumerate(self.partitions) if partition not in partitions])

    def subset(self, keep: Sequence[int]) -> Records:
        """These rows, in this order."""
        kept = Records(
            array("i", [self.partitions[row] for row in keep]),
            array("q", [self.offsets[row] for row in keep]),
            array("q", [self.timestamps[row] for row in keep]),
            array("q", [self.sizes[row] for row in keep]),
            bytearray(self.formats[row] for row in keep),
            [self.keys[row] for row in keep],
            self.values.select(list(keep)),
            [self.headers[row] for row in keep],
        )
        kept.bytes = sum(kept.sizes)
        return kept

    def dead_letter(self, topic: str, row: int, error: BaseException) -> DeadLetter:
        """The record at ``row`` as a dead letter, the error as its reason."""
        return DeadLetter(
            topic=topic,
            partition=self.partitions[row],
            offset=self.offsets[row],
            kafka_timestamp=self.timestamps[row],
            key=self.keys[row],
            value=self.values.value(row),
            headers=self.headers[row],
            error_type=type(error).__name__,
            error=str(error).strip() or repr(error),
        )


def collect(messages: Sequence[Message]) -> tuple[dict[str, Records], list[int]]:
    """Messages as Records per topic (one native call), and the positions of those carrying an error.

    A claim record's size is that of the event it references (what it weighs once resolved),
    so batches close on the bytes they will hold.
    """
    by_topic, errors = lakehouse_codec.collect_messages(
        messages if isinstance(messages, list) else list(messages), _JSON_HEADERS, _BSON_HEADERS
    )
    collected = {}
    for topic, (values, keys, headers, partitions, offsets, timestamps, sizes, formats) in by_topic.items():
        records = Records(keys=keys, values=values, headers=headers, formats=bytearray(formats), bytes=values.nbytes)
        records.partitions.frombytes(partitions)
        records.offsets.frombytes(offsets)
        records.timestamps.frombytes(timestamps)
        records.sizes.frombytes(sizes)
        claim_rows = records.claim_rows()
        if claim_rows:
            for row in claim_rows:
                try:
                    records.sizes[row] = contract.parse_claim_reference(values.value(row), headers[row][0][1]).size
                except ContractError:
                    pass  # dead-lettered when resolved
            records.bytes = sum(records.sizes)
        collected[topic] = records
    return collected, errors


def resolve_claims(topic: str, records: Records, claims: ClaimStore) -> tuple[list[DeadLetter], list[str]]:
    """Replace each claim record's reference by the claimed event; dead letters for those that cannot be.

    In place: a resolved record's value is the event and its headers lose the claim marker
    (``lakehouse.claim.resolved`` names the digest instead), so dead letters made later
    from it hold the full event. Returns the unresolvable records as dead letters and the
    digests resolved. A claim store that does not answer raises ``TransientError``. Claims
    are rare: their values are swapped in Python, and the records' buffers copied once.
    """
    claim_rows = records.claim_rows()
    if not claim_rows:
        return [], []
    headers = records.headers
    values: list[bytes | None] | None = None
    letters: list[DeadLetter] = []
    digests: list[str] = []
    for row in claim_rows:
        entries = headers[row]
        assert entries is not None  # a claim has its marker header
        try:
            reference = contract.parse_claim_reference(records.values.value(row), entries[0][1])
            event = claims.get(reference)
        except ContractError as error:
            letters.append(records.dead_letter(topic, row, error))
            continue
        if values is None:
            values = records.values.to_list()
        values[row] = event
        records.sizes[row] = len(event)
        records.formats[row] = _CODE_OF_HEADERS.get(tuple(entries[1:3]), _PARSE)
        headers[row] = (*entries[1:], (HEADER_CLAIM_RESOLVED, reference.digest.encode()))
        digests.append(reference.digest)
    if values is not None:
        records.values = lakehouse_codec.RecordValues(values)
    return letters, digests


def _text_array(column: tuple[Any, Any, int], count: int, data: list[pa.Buffer]) -> pa.Array:
    """A scanner text column: string views into the scan's data buffers (no copy)."""
    validity, views, nulls = column
    bitmap = None if validity is None else pa.py_buffer(validity)
    return pa.Array.from_buffers(pa.string_view(), count, [bitmap, pa.py_buffer(views), *data], null_count=nulls)


def _int_array(column: tuple[Any, Any, int], count: int) -> pa.Array:
    validity, values, nulls = column
    bitmap = None if validity is None else pa.py_buffer(validity)
    return pa.Array.from_buffers(pa.int64(), count, [bitmap, pa.py_buffer(values)], null_count=nulls)


def _kind_array(kinds: Any, count: int) -> pa.Array:
    return pa.Array.from_buffers(pa.uint8(), count, [None, pa.py_buffer(kinds)])


def _packed_array(values: array[int], arrow_type: pa.DataType) -> pa.Array:
    """A packed column of the records (copied: the records' arrays may still grow)."""
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values.tobytes())])


def _formats(records: Records) -> list[ValueFormat | ContractError]:
    """Each record's value format, or the contract error that makes it a dead letter."""
    result: list[ValueFormat | ContractError] = []
    for code, entries in zip(records.formats, records.headers, strict=True):
        value_format: ValueFormat | ContractError | None = _FORMAT_OF_CODE.get(code)
        if value_format is None:
            try:
                value_format = contract.parse_headers(entries).value_format
            except ContractError as error:
                value_format = error
        result.append(value_format)
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
    keys, headers = records.keys, records.headers
    first_offsets, last_offsets = _offset_bounds(records)

    count = len(records)
    problems: dict[int, ContractError] = {}
    scanned: dict[str, Any] | None = None
    tombstones = records.values.has_tombstones()
    if not tombstones and records.formats.count(_JSON) == count:
        scanned = lakehouse_codec.scan_record_values(records.values)  # the common all-JSON batch, read in place
    elif not tombstones and records.formats.count(_BSON) == count:
        try:  # the common all-BSON batch: one native call to NDJSON, split by the scanner
            scanned = lakehouse_codec.scan_change_events(contract.values_to_ndjson(records.values.to_list()))
        except UndecodableEventError:
            scanned = None  # find the bad values one by one below
    if scanned is None:
        values: list[bytes | None] = records.values.to_list()
        formats = _formats(records)
        json_values = list(values)
        bson_rows = []
        for row, value_format in enumerate(formats):
            if isinstance(value_format, ContractError):
                problems[row] = value_format
                json_values[row] = b"{}"
            elif value_format is ValueFormat.BSON and values[row] is not None:
                bson_rows.append(row)
        if bson_rows:
            for row, converted in zip(bson_rows, _bson_to_json([values[row] or b"" for row in bson_rows]), strict=True):
                if isinstance(converted, UndecodableEventError):
                    problems[row] = converted
                    json_values[row] = b"{}"
                else:
                    json_values[row] = converted
        for row, value in enumerate(json_values):
            if value is None and row not in problems:
                tombstone = _tombstone_as_delete(keys[row], headers[row])
                if isinstance(tombstone, ContractError):
                    problems[row] = tombstone
                    json_values[row] = b"{}"
                else:
                    json_values[row] = tombstone
        scanned = lakehouse_codec.scan_change_events([b"{}" if value is None else value for value in json_values])
    assert scanned["count"] == count
    for row, message in scanned["errors"]:
        if row not in problems:
            error_class = MissingEventFieldError if message.startswith("missing") else UndecodableEventError
            problems[row] = error_class(message)

    data = [pa.py_buffer(buffer) for buffer in scanned["buffers"]]
    text = scanned["text"]
    ints = scanned["int"]
    columns: dict[str, pa.Array] = {
        "__event_id": _text_array(text["event_id"], count, data),
        "__resume_token": _text_array(text["resume_token"], count, data),
        "__operation": _text_array(text["operation"], count, data),
        "__db": _text_array(text["db"], count, data),
        "__collection": _text_array(text["collection"], count, data),
        "__document_key": _text_array(text["document_key"], count, data),
        "__document_id": _text_array(text["document_id"], count, data),
        "__cluster_time_seconds": _int_array(ints["cluster_time_seconds"], count),
        "__cluster_time_increment": _int_array(ints["cluster_time_increment"], count),
        "__wall_time_text": _text_array(text["wall_time"], count, data),
        "__wall_time_kind": _kind_array(scanned["wall_time_kind"], count),
        "__lsid": _text_array(text["lsid"], count, data),
        "__txn_number": _int_array(ints["txn_number"], count),
        "__kafka_partition": _packed_array(records.partitions, pa.int32()),
        "__kafka_offset": _packed_array(records.offsets, pa.int64()),
        "__kafka_timestamp_ms": _packed_array(records.timestamps, pa.int64()),
        "__full_document": _text_array(text["full_document"], count, data),
        "__update_description": _text_array(text["update_description"], count, data),
        "__full_document_before_change": _text_array(text["full_document_before_change"], count, data),
        "__value_bytes": _packed_array(records.sizes, pa.int64()),
    }
    if scanned["wall_time_micros"] is not None:
        columns[WALL_TIME_MICROS] = _int_array(scanned["wall_time_micros"], count)
    field_names = []
    for index, (name, kinds, column, dates) in enumerate(scanned["fields"]):
        field_names.append(name)
        columns[KIND_COLUMN.format(index)] = _kind_array(kinds, count)
        columns[TEXT_COLUMN.format(index)] = _text_array(column, count, data)
        if dates is not None:
            columns[DATE_COLUMN.format(index)] = _int_array(dates, count)
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
    """Each partition's first and last offset in the batch (records are in offset order per partition)."""
    if not len(records):
        return {}, {}
    positions = pl.DataFrame(
        {"partition": _packed_array(records.partitions, pa.int32()), "offset": _packed_array(records.offsets, pa.int64())}
    )
    bounds = positions.group_by("partition").agg(pl.col("offset").first().alias("first"), pl.col("offset").last().alias("last"))
    first = dict(zip(bounds["partition"].to_list(), bounds["first"].to_list(), strict=True))
    last = dict(zip(bounds["partition"].to_list(), bounds["last"].to_list(), strict=True))
    return first, last


__all__ = [
    "DATE_COLUMN",
    "HEADER_CLAIM_RESOLVED",
    "KIND_COLUMN",
    "TEXT_COLUMN",
    "WALL_TIME_MICROS",
    "DeadLetter",
    "DecodedTopic",
    "Records",
    "collect",
    "decode_guarded",
    "decode_topic",
    "resolve_claims",
]
