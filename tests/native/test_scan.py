"""The native JSON scanner's bound on nesting (native/lakehouse_codec/src/scan.rs)."""

from __future__ import annotations

import json
import struct

import bson
import pytest
from bson.raw_bson import RawBSONDocument

import lakehouse_codec

# The encoder's bound (200 BSON levels) plus the deepest Extended JSON wrapper ($dbPointer: 3).
MAX_JSON_DEPTH = 203

_ENVELOPE = b'{"_id":{"_data":"82AA"},"operationType":"insert","ns":{"db":"d","coll":"c"},"documentKey":{"_id":1},'


def _line(field: bytes, depth: int, leaf: bytes = b"1") -> bytes:
    """An event whose ``field`` holds objects nested so the line is ``depth`` levels deep."""
    nested = depth - 1  # the event itself is level 1
    return _ENVELOPE + b'"' + field + b'":' + b'{"a":' * nested + leaf + b"}" * nested + b"}"


@pytest.mark.parametrize("field", [b"fullDocument", b"updateDescription", b"lsid", b"somethingElse"])
def test_json_nested_200000_levels_is_a_row_error_not_a_crash(field: bytes) -> None:
    deep = _line(field, 200_000)
    good = _line(b"fullDocument", 3)

    scanned = lakehouse_codec.scan_change_events(b"\n".join([good, deep, good]))

    assert scanned["count"] == 3
    assert [row for row, _ in scanned["errors"]] == [1]
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in scanned["errors"][0][1]
    assert not scanned["errors"][0][1].startswith("missing")  # bronze_writer reads that prefix as a missing field


def test_the_bound_is_the_encoders_plus_extended_json_wrappers() -> None:
    scanned = lakehouse_codec.scan_change_events(
        [_line(b"fullDocument", MAX_JSON_DEPTH), _line(b"fullDocument", MAX_JSON_DEPTH + 1)]
    )
    assert [row for row, _ in scanned["errors"]] == [1]


def test_whatever_the_encoder_writes_the_scanner_reads() -> None:
    """An event at the encoder's limit, with the deepest wrapper ($dbPointer) at the bottom."""
    # pymongo cannot write a dbPointer (it reads one as a DBRef): {"p": dbPointer("c", oid)} by hand.
    element = b"\x0cp\x00" + struct.pack("<i", 2) + b"c\x00" + bytes.fromhex("65a1b2c3d4e5f60718293a4b")
    pointer = struct.pack("<i", len(element) + 5) + element + b"\x00"
    inner = pointer
    for _ in range(200 - 2):  # the event is level 1, fullDocument level 2
        inner = bson.encode({"a": RawBSONDocument(inner)})
    event = bson.encode(
        {"_id": {"_data": "82AA"}, "operationType": "insert", "documentKey": {"_id": 1}, "fullDocument": RawBSONDocument(inner)}
    )
    ((_, value, *_),) = lakehouse_codec.encode_change_events([event], "json")
    assert value.endswith(b'"p":{"$dbPointer":{"$ref":"c","$id":{"$oid":"65a1b2c3d4e5f60718293a4b"}}}' + b"}" * 200)

    scanned = lakehouse_codec.scan_change_events([value])

    assert scanned["errors"] == []


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps('[{"' * 300 + '\\" still a string ' + "]}" * 10)
    line = _ENVELOPE + b'"fullDocument":{"note":' + text.encode() + b"}}"
    scanned = lakehouse_codec.scan_change_events([line])
    assert scanned["errors"] == []
    (name, kinds, _column, _dates) = scanned["fields"][0]
    assert name == "note" and kinds == b"\x06"


def test_malformed_json_is_still_an_error() -> None:
    scanned = lakehouse_codec.scan_change_events([_ENVELOPE + b'"fullDocument":{"a":"unterminated}', b"[" * 10])
    assert [row for row, _ in scanned["errors"]] == [0, 1]


def _event(number: int) -> bytes:
    return _ENVELOPE + b'"fullDocument":{"n":%d}}' % number


def test_record_values_keep_every_value_and_tombstone_in_order() -> None:
    values = lakehouse_codec.RecordValues([_event(0), None, _event(2)])
    values.extend(lakehouse_codec.RecordValues([_event(3)]))

    assert len(values) == 4
    assert values.nbytes == 3 * len(_event(0))
    assert values.to_list() == [_event(0), None, _event(2), _event(3)]
    assert values.value(1) is None and values.value(3) == _event(3)
    assert values.has_tombstones()
    chosen = values.select([3, 0])
    assert chosen.to_list() == [_event(3), _event(0)] and not chosen.has_tombstones()
    with pytest.raises(ValueError, match="no record 4"):
        values.value(4)


def test_scanning_record_values_in_place_reads_what_the_list_scan_reads() -> None:
    events = [_event(number) for number in range(5)]
    collected = lakehouse_codec.RecordValues(events[:2])
    collected.extend(lakehouse_codec.RecordValues(events[2:]))  # values in two buffers

    in_place = lakehouse_codec.scan_record_values(collected)
    listed = lakehouse_codec.scan_change_events(events)

    assert in_place["count"] == listed["count"] == 5
    assert in_place["errors"] == listed["errors"] == []
    assert [name for name, *_ in in_place["fields"]] == [name for name, *_ in listed["fields"]] == ["n"]
    assert in_place["fields"][0][1] == listed["fields"][0][1]
    with pytest.raises(ValueError, match="tombstones"):
        lakehouse_codec.scan_record_values(lakehouse_codec.RecordValues([None]))
