"""The native codec's Python entry points (native/lakehouse_codec/src/lib.rs): shapes and panics."""

from __future__ import annotations

import bson
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

import lakehouse_codec


def _event(operation: str, database: str, collection: str, number: int) -> bytes:
    return bson.encode(
        {
            "_id": {"_data": f"82{number:04d}"},
            "operationType": operation,
            "clusterTime": Timestamp(1_700_000_000, number),
            "ns": {"db": database, "coll": collection},
            "documentKey": {"_id": number},
            "fullDocument": {"_id": number},
        }
    )


def test_a_native_panic_is_a_python_exception_not_an_abort() -> None:
    """pyo3 turns a Rust panic into PanicException, a BaseException: callers must guard for it."""
    with pytest.raises(BaseException) as caught:
        lakehouse_codec._raise_panic("on purpose")
    assert type(caught.value).__name__ == "PanicException"
    assert not isinstance(caught.value, Exception)
    assert "on purpose" in str(caught.value)
    assert lakehouse_codec.relaxed_json(bson.encode({"still": "working"})) == b'{"still":"working"}'


@pytest.mark.parametrize("value_format", ["json", "bson"])
def test_each_event_gets_its_own_fields_in_a_mixed_batch(value_format: str) -> None:
    shapes = [
        ("insert", "shop", "orders"),
        ("update", "shop", "orders"),
        ("insert", "shop", "items"),
        ("delete", "crm", "items"),
        ("delete", "crm", "items"),
    ]
    raws = [_event(*shape, number) for number, shape in enumerate(shapes)]

    encoded = lakehouse_codec.encode_change_events(raws, value_format)

    assert [item[3:6] for item in encoded] == shapes
    assert [item[2] for item in encoded] == [f"82{number:04d}" for number in range(len(shapes))]
    assert [item[0] for item in encoded] == [b'{"_id":%d}' % number for number in range(len(shapes))]
    assert [item[6] for item in encoded] == [(1_700_000_000, number) for number in range(len(shapes))]


def test_bson_values_are_the_callers_own_bytes() -> None:
    raws = [_event("insert", "shop", "orders", number) for number in range(3)]
    documents = [RawBSONDocument(raw) for raw in raws]

    from_list = lakehouse_codec.encode_change_events(documents, "bson")
    from_batch = lakehouse_codec.encode_change_events(b"".join(raws), "bson")

    assert [item[1] for item in from_list] == raws == [item[1] for item in from_batch]
    assert all(item[1] is document.raw for item, document in zip(from_list, documents, strict=True))


def test_invalid_utf8_in_a_bson_events_contract_fields_is_rejected() -> None:
    raw = _event("insert", "shop", "orders", 1).replace(b"orders\x00", b"order\xff\x00")
    with pytest.raises(ValueError, match="change event 0: invalid UTF-8"):
        lakehouse_codec.encode_change_events([raw], "bson")


def test_batch_columns_match_the_per_event_tuples_and_reuse_the_callers_bson_bytes() -> None:
    shapes = [("insert", "shop", "orders"), ("update", "shop", "items"), ("insert", "shop", "orders")]
    documents = [RawBSONDocument(_event(*shape, number)) for number, shape in enumerate(shapes)]
    leading = [("version", b"1")]

    keys, values, headers, namespaces, namespace_of, counts, largest = lakehouse_codec.encode_change_batch(
        documents, "bson", leading, "id", "operation"
    )
    events = lakehouse_codec.encode_change_events(documents, "bson")

    assert keys == [item[0] for item in events]
    assert all(value is document.raw for value, document in zip(values, documents, strict=True))
    assert headers == [[("version", b"1"), ("id", item[2].encode()), ("operation", item[3].encode())] for item in events]
    assert headers[0][0] is headers[1][0] is leading[0]  # the leading headers are the caller's objects
    assert headers[0][2] is headers[2][2]  # one tuple per distinct operation
    assert (namespaces, namespace_of) == ([("shop", "orders"), ("shop", "items")], [0, 1, 0])
    assert counts == [("insert", 0, 2), ("update", 1, 1)]
    assert largest == max(len(item[0]) + len(item[1]) for item in events)


def test_batch_columns_refuse_an_unknown_format_and_name_a_bad_event() -> None:
    with pytest.raises(ValueError, match="unknown value format"):
        lakehouse_codec.encode_change_batch([], "xml", [], "id", "operation")
    with pytest.raises(ValueError, match="change event 1"):
        lakehouse_codec.encode_change_batch([_event("insert", "a", "b", 1), b"\x05\x00\x00\x00"], "json", [], "id", "operation")
