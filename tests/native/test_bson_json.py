"""The native BSON to relaxed Extended JSON walk (native/lakehouse_codec/src/bson_json.rs).

Every entry point that reads BSON (``relaxed_json``, ``to_ndjson``, ``encode_change_events``)
must reject what pymongo's decoder rejects, bound the nesting it follows, and, on valid
input, write exactly the bytes it always wrote (tests/native/golden/).
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import bson
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation
from bson.datetime_ms import DatetimeMS
from bson.json_util import DatetimeConversion
from bson.raw_bson import RawBSONDocument

import lakehouse_codec
from lakehouse_common import contract
from lakehouse_common.contract import ValueFormat
from lakehouse_common.errors import UndecodableEventError

GOLDEN = Path(__file__).parent / "golden"

# MongoDB's hard BSON depth limit, which the codec adopts (bson_json::MAX_NESTING_DEPTH).
MAX_DEPTH = 200

# pymongo as the contract decodes BSON: every date kept, UUIDs as Binary.
DECODE_OPTIONS = bson.CodecOptions(
    tz_aware=True,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

VALUES = {
    "object_id": ObjectId("65a1b2c3d4e5f60718293a4b"),
    "decimal": Decimal128("1234567890.123456789012345678901234"),
    "decimal_small": Decimal128("-0.000001"),
    "decimal_exponent": Decimal128("1.5E+300"),
    "decimal_nan": Decimal128("NaN"),
    "decimal_infinity": Decimal128("-Infinity"),
    "date": DatetimeMS(1_700_000_000_123),
    "date_before_1970": DatetimeMS(-2_208_988_800_000),
    "date_beyond_9999": DatetimeMS(253_402_300_800_000),
    "last_iso_millisecond": DatetimeMS(253_402_300_799_999),
    "int32": -2_147_483_648,
    "int64": Int64(9_223_372_036_854_775_807),
    "double": 3.141592653589793,
    "double_integral": 2.0,
    "double_huge": 1e300,
    "nan": math.nan,
    "negative_infinity": -math.inf,
    "negative_zero": -0.0,
    "binary": Binary(b"\x00\x01\xff", 0),
    "binary_old": Binary(b"old binary", 2),
    "binary_old_empty": Binary(b"", 2),
    "uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
    "binary_user": Binary(b"custom", 128),
    "timestamp": Timestamp(4_294_967_295, 4_294_967_295),
    "regex": Regex(r'^a"\\b.*$', "xsmi"),
    "min_key": MinKey(),
    "max_key": MaxKey(),
    "dbref": DBRef("customers", ObjectId("65a1b2c3d4e5f60718293a4c"), "shop", extra="field"),
    "code": Code("function () { return 1; }"),
    "code_with_scope": Code("function () { return x; }", {"x": 1, "nested": {"y": [1, 2]}}),
    "true": True,
    "false": False,
    "null": None,
    "string": 'quote " backslash \\ newline \n tab \t nul \x00 bell \x07 delete \x7f é 漢字 🎉',
    "long_ascii": "a plain string longer than eight bytes, " * 4,
    "long_unicode": "ключ значение " * 5 + 'then "escapes" \n',
    "arrays": [[1, [2, [3, []]]], [], [{"a": [None]}]],
    "documents": {"level1": {"level2": {"level3": {"empty": {}}}}},
    "ключ_юникод": "значение",
    'key "quoted" \\ \n': 1,
    "emoji_🔑_and_more_text": 2,
    "": "empty key",
}


def _event(full_document: object, **fields: object) -> bytes:
    event: dict[str, object] = {
        "_id": {"_data": "8265A1B2C3000000012B022C0100296E5A1004"},
        "operationType": "insert",
        "clusterTime": Timestamp(1_700_000_000, 1),
        "wallTime": DatetimeMS(1_700_000_000_000),
        "ns": {"db": "shop", "coll": "orders"},
        "documentKey": {"_id": 1},
        "fullDocument": full_document,
    }
    event.update(fields)
    return bson.encode(event)


def _document(elements: bytes) -> bytes:
    return struct.pack("<i", len(elements) + 5) + elements + b"\x00"


def _element(type_byte: int, name: bytes, value: bytes) -> bytes:
    return bytes([type_byte]) + name + b"\x00" + value


def _nested(levels: int, innermost: bytes = b"") -> bytes:
    """``{"a": {"a": ... {innermost elements}}}``, ``levels`` documents deep (itself counted),
    built without recursion so any depth is cheap."""
    inner = _document(innermost)
    prefixes = [struct.pack("<i", len(inner) + 8 * (levels - 1 - level)) + b"\x03a\x00" for level in range(levels - 1)]
    return b"".join(prefixes) + inner + b"\x00" * (levels - 1)


def _normalize(value: object) -> object:
    """A decoded value as relaxed Extended JSON keeps it: small int64s read back as int32s,
    NaN payloads and non-canonical Decimal128 bits are not kept."""
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    if isinstance(value, Int64) and -(2**31) <= value < 2**31:
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return math.nan
    if isinstance(value, Decimal128):
        return Decimal128(str(value))
    if isinstance(value, Code) and value.scope is not None:
        return Code(str(value), _normalize(value.scope))
    return value


def _same_values(json_bytes: bytes, raw: bytes) -> bool:
    """The codec's JSON holds the values pymongo decodes from the BSON (compared as BSON, so NaN equals NaN)."""
    decoded = _normalize(contract.decode_value(json_bytes, ValueFormat.JSON))
    expected = _normalize(bson.decode(raw, codec_options=DECODE_OPTIONS))
    return bson.encode(decoded) == bson.encode(expected)


# ---------------------------------------------------------------------------------------------
# Byte-identical output


def test_valid_input_gives_the_exact_bytes_it_always_gave() -> None:
    """Golden bytes written by the encoder before its rewrite for speed: the rewrite may change nothing."""
    event = _event({"_id": ObjectId("65a1b2c3d4e5f60718293a4d"), **VALUES})
    expected = (GOLDEN / "every_bson_type_event.json").read_bytes()

    assert lakehouse_codec.relaxed_json(event) == expected
    assert lakehouse_codec.to_ndjson([event, event]) == expected + b"\n" + expected + b"\n"
    (item,) = lakehouse_codec.encode_change_events([event], "json")
    assert item[0] == b'{"_id":1}'
    assert item[1] == expected
    assert _same_values(expected, event)


@pytest.mark.parametrize("name", list(VALUES))
def test_each_value_reads_back_as_pymongo_decodes_it(name: str) -> None:
    raw = bson.encode({name: VALUES[name]})
    assert _same_values(lakehouse_codec.relaxed_json(raw), raw)


def test_decimal128_text_matches_pymongo_for_any_bit_pattern() -> None:
    """Canonical and non-canonical encodings alike (the specification reads the latter as zero)."""
    generator = random.Random(11)
    for _ in range(20_000):
        bits = generator.getrandbits(128)
        if generator.random() < 0.5:  # exponents near zero, where the plain notation applies
            bits = bits & ~(0x3FFF << 113) | (generator.randint(6176 - 40, 6176 + 10) << 113)
        if generator.random() < 0.3:  # short coefficients
            bits = bits & ~((1 << 113) - 1) | generator.getrandbits(generator.randint(1, 70))
        value = Decimal128.from_bid(bits.to_bytes(16, "little"))
        text = json.loads(lakehouse_codec.relaxed_json(bson.encode({"d": value})))["d"]["$numberDecimal"]
        assert text == str(value), hex(bits)


# ---------------------------------------------------------------------------------------------
# Bounded nesting

_DEEP_CHILD = textwrap.dedent(
    """
    import struct, sys
    import bson
    import lakehouse_codec
    from bson.raw_bson import RawBSONDocument

    def document(elements):
        return struct.pack("<i", len(elements) + 5) + elements + b"\\x00"

    def nested(levels):
        inner = document(b"")
        prefixes = [struct.pack("<i", len(inner) + 8 * (levels - 1 - level)) + b"\\x03a\\x00" for level in range(levels - 1)]
        return b"".join(prefixes) + inner + b"\\x00" * (levels - 1)

    deep = nested(200_000)
    event = lambda **fields: bson.encode({
        "_id": {"_data": "82"}, "operationType": "insert", "ns": {"db": "d", "coll": "c"},
        "documentKey": {"_id": 1}, **{name: RawBSONDocument(value) for name, value in fields.items()},
    })
    calls = {
        "relaxed_json": lambda: lakehouse_codec.relaxed_json(deep),
        "to_ndjson": lambda: lakehouse_codec.to_ndjson([deep]),
        "encode_json": lambda: lakehouse_codec.encode_change_events([event(fullDocument=deep)], "json"),
        "encode_bson_key": lambda: lakehouse_codec.encode_change_events([event(documentKey=deep)], "bson"),
    }
    try:
        calls[sys.argv[1]]()
    except ValueError as error:
        print("ValueError:", error)
    else:
        print("accepted")
    """
)


def _run_isolated(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter, so a crash (stack overflow, abort) fails this test, not the suite."""
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )


@pytest.mark.parametrize("entry_point", ["relaxed_json", "to_ndjson", "encode_json", "encode_bson_key"])
def test_bson_nested_200000_levels_is_a_value_error_not_a_crash(entry_point: str) -> None:
    result = _run_isolated(_DEEP_CHILD, entry_point)

    assert result.returncode == 0, f"the codec crashed (exit {result.returncode}): {result.stderr[-2000:]}"
    assert result.stdout.startswith("ValueError:"), result.stdout
    assert f"nested deeper than {MAX_DEPTH} levels" in result.stdout


def test_the_bound_is_mongodbs_own_limit_of_200_levels() -> None:
    at_limit = _nested(MAX_DEPTH)
    beyond = _nested(MAX_DEPTH + 1)

    assert lakehouse_codec.relaxed_json(at_limit).startswith(b'{"a":{"a":')
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
        lakehouse_codec.relaxed_json(beyond)
    with pytest.raises(ValueError, match="document 1: nested deeper"):
        lakehouse_codec.to_ndjson([at_limit, beyond])
    # A code-with-scope value counts as two levels: its wrapper and its scope.
    code_with_scope = _element(0x0F, b"c", struct.pack("<i", 4 + len(_CODE) + 5) + _CODE + _document(b""))
    written = lakehouse_codec.relaxed_json(_nested(MAX_DEPTH - 2, code_with_scope))
    assert written.endswith(b'{"$code":"x","$scope":{}}' + b"}" * (MAX_DEPTH - 2))
    with pytest.raises(ValueError, match="nested deeper"):
        lakehouse_codec.relaxed_json(_nested(MAX_DEPTH - 1, code_with_scope))
    # Arrays count like documents.
    array_at_limit = _nested(MAX_DEPTH - 1, _element(0x04, b"list", _document(b"")))
    assert lakehouse_codec.relaxed_json(array_at_limit).endswith(b'{"list":[]' + b"}" * (MAX_DEPTH - 1))
    with pytest.raises(ValueError, match="nested deeper"):
        lakehouse_codec.relaxed_json(_nested(MAX_DEPTH, _element(0x04, b"list", _document(b""))))


def test_an_event_at_mongodbs_storage_limit_is_converted_and_scanned() -> None:
    """MongoDB stores documents nested 180 levels; its change events add two more at most."""
    stored = RawBSONDocument(_nested(180, _element(0x0A, b"leaf", b"")))
    below = RawBSONDocument(_nested(179, _element(0x0A, b"leaf", b"")))
    raw = _event(
        stored,
        operationType="update",
        updateDescription={"updatedFields": {"a.b": below}, "removedFields": [], "truncatedArrays": []},
        fullDocumentBeforeChange=stored,
    )

    (event,) = contract.encode_events([raw], ValueFormat.JSON)
    scanned = lakehouse_codec.scan_change_events([event.value])

    assert scanned["errors"] == []
    assert _same_values(event.value, raw)


def test_encode_events_turns_too_deep_input_into_an_undecodable_event() -> None:
    raw = _event(RawBSONDocument(_nested(MAX_DEPTH)))
    with pytest.raises(UndecodableEventError, match="nested deeper"):
        contract.encode_events([raw], ValueFormat.JSON)
    with pytest.raises(UndecodableEventError, match="nested deeper"):
        contract.values_to_ndjson([raw])
    with pytest.raises(UndecodableEventError, match="nested deeper"):
        contract.to_relaxed_json(raw)


# ---------------------------------------------------------------------------------------------
# Invalid BSON, as pymongo's decoder defines it

_CODE = struct.pack("<i", 2) + b"x\x00"
_SCOPE = _document(_element(0x10, b"y", struct.pack("<i", 1)))


def _code_with_scope(total: int, tail: bytes = b"") -> bytes:
    return _element(0x0F, b"v", struct.pack("<i", total) + _CODE + _SCOPE + tail)


_PARTS = 4 + len(_CODE) + len(_SCOPE)  # a code-with-scope's true total length

INVALID = {
    "boolean_2": _element(0x08, b"v", b"\x02"),
    "boolean_255": _element(0x08, b"v", b"\xff"),
    "old_binary_inner_length_too_long": _element(0x05, b"v", struct.pack("<ib", 6, 2) + struct.pack("<i", 3) + b"ab"),
    "old_binary_inner_length_too_short": _element(0x05, b"v", struct.pack("<ib", 6, 2) + struct.pack("<i", 1) + b"ab"),
    "old_binary_without_inner_length": _element(0x05, b"v", struct.pack("<ib", 3, 2) + b"abc"),
    "code_with_scope_total_too_long": _code_with_scope(_PARTS + 1, b"\x00"),
    "code_with_scope_total_too_short": _code_with_scope(_PARTS - 1),
    "code_with_scope_scope_overruns": _code_with_scope(4 + len(_CODE) + 5),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_bson_is_rejected_like_pymongo_does(case: str) -> None:
    raw = _document(INVALID[case] + _element(0x0A, b"after", b""))
    with pytest.raises(bson.errors.InvalidBSON):
        bson.decode(raw, codec_options=DECODE_OPTIONS)

    with pytest.raises(ValueError):
        lakehouse_codec.relaxed_json(raw)
    with pytest.raises(ValueError, match="document 0"):
        lakehouse_codec.to_ndjson([raw])
    with pytest.raises(UndecodableEventError, match="change event 0"):
        contract.encode_events([_event(RawBSONDocument(raw))], ValueFormat.JSON)


def _mutations(generator: random.Random, raw: bytes) -> bytes:
    """One random corruption of ``raw``: a byte, a length field, a type byte, a cut or an insertion."""
    data = bytearray(raw)
    roll = generator.random()
    position = generator.randrange(len(data))
    if roll < 0.3:
        data[position] = generator.randrange(256)
    elif roll < 0.5:  # an int32 nudged: lengths that almost agree are the interesting ones
        if position + 4 <= len(data):
            value = struct.unpack_from("<i", data, position)[0]
            struct.pack_into("<i", data, position, max(-(2**31), min(2**31 - 1, value + generator.choice([-5, -4, -1, 1, 4, 5]))))
    elif roll < 0.65:  # a type byte changed to another known type
        data[position] = generator.choice([*range(0x00, 0x14), 0x7F, 0xFF])
    elif roll < 0.75:
        data[position] = generator.choice([0, 1, 2, 0x80, 0xFF])
    elif roll < 0.85:
        del data[position]
    elif roll < 0.95:
        data.insert(position, generator.randrange(256))
    else:
        data = data[: generator.randrange(len(data))]
    return bytes(data)


def _codec_verdicts(raw: bytes) -> dict[str, bytes | None]:
    """Each entry point's JSON for ``raw`` (None when it raised ValueError)."""
    verdicts: dict[str, bytes | None] = {}
    calls: dict[str, Callable[[], bytes]] = {
        "relaxed_json": lambda: lakehouse_codec.relaxed_json(raw),
        "to_ndjson": lambda: lakehouse_codec.to_ndjson([raw])[:-1],
    }
    for name, call in calls.items():
        try:
            verdicts[name] = call()
        except ValueError:
            verdicts[name] = None
    return verdicts


FUZZ_CASES = int(os.environ.get("CODEC_FUZZ_CASES", "6000"))


def test_random_corruptions_are_rejected_whenever_pymongo_rejects_them() -> None:
    """A differential fuzz: mutate valid documents and events; wherever pymongo's decoder
    raises, the codec must raise too, and wherever the codec accepts, its JSON must hold
    pymongo's values. ``CODEC_FUZZ_CASES`` and ``CODEC_FUZZ_SEED`` make longer or other runs."""
    generator = random.Random(int(os.environ.get("CODEC_FUZZ_SEED", "20261202")))
    seeds = [bson.encode({name: value}) for name, value in VALUES.items()]
    seeds += [bson.encode({"d": {"k": value, "l": [value, value]}}) for value in VALUES.values()]
    seeds.append(_event({"_id": 1, **VALUES}))
    accepted_by_pymongo_only = []
    failures = []
    for case in range(FUZZ_CASES):
        raw = _mutations(generator, generator.choice(seeds))
        try:
            bson.decode(raw, codec_options=DECODE_OPTIONS)
            pymongo_accepts = True
        except Exception:  # noqa: BLE001 - pymongo raises InvalidBSON, but also e.g. OverflowError
            pymongo_accepts = False
        verdicts = _codec_verdicts(raw)
        if len(set(verdicts.values())) != 1:
            failures.append(f"case {case}: entry points disagree on {raw.hex()}: {verdicts}")
            continue
        json_bytes = verdicts["relaxed_json"]
        if json_bytes is not None and not pymongo_accepts:
            failures.append(f"case {case}: codec accepts what pymongo rejects: {raw.hex()}")
        elif json_bytes is not None and not _same_values(json_bytes, raw):
            failures.append(f"case {case}: values differ from pymongo's for {raw.hex()}: {json_bytes!r}")
        elif json_bytes is None and pymongo_accepts:
            accepted_by_pymongo_only.append(raw)
    assert not failures, "\n".join(failures[:10])
    # Stricter than pymongo would be allowed; none has been seen (100,000 cases tried).
    assert not accepted_by_pymongo_only, [raw.hex() for raw in accepted_by_pymongo_only[:10]]
