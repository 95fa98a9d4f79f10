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
