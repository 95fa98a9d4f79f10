"""Every documented change-event shape through the reader's batch logic and the contract encoder.

The fixtures (fixtures/change_events.json) follow MongoDB's change-events reference,
including what the stand-in never produces: pre-images, split fragments, transactions,
disambiguated paths, invalidate.
"""

from __future__ import annotations

import json

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from cdc_support import fixture_events, raw

from cdc_service.change_stream import (
    RAW_CODEC_OPTIONS,
    BatchAssembler,
    FragmentAssembler,
    StreamOptions,
    is_fragment,
    split_events_supported,
)
from cdc_service.positions import Position
from cdc_service.scope import NamespaceFilter, StreamSpec
from cdc_service.settings import FullDocumentMode, PreImageMode, ScopeSettings, StreamLayout, StreamSettings
from lakehouse_common.contract import ValueFormat, decode_value, encode_events

EVENTS = fixture_events()
DOCUMENT_EVENTS = [name for name, event in EVENTS.items() if "documentKey" in event and "splitEvent" not in event]
NAMESPACE_EVENTS = ["drop", "rename", "dropDatabase", "invalidate"]


@pytest.mark.parametrize("value_format", list(ValueFormat))
@pytest.mark.parametrize("name", [name for name in EVENTS if "splitEvent" not in EVENTS[name]])
def test_every_documented_event_is_published_whole(name: str, value_format: ValueFormat) -> None:
    event = EVENTS[name]
    (encoded,) = encode_events([raw(event)], value_format)

    assert encoded.event_id == event["_id"]["_data"]
    assert encoded.operation == event["operationType"]
    assert decode_value(encoded.value, value_format) == event  # every field, pre/post images, lsid, txnNumber
    if name in DOCUMENT_EVENTS:
        assert json.loads(encoded.key) == json.loads(bson.json_util.dumps(event["documentKey"]))
    else:
        assert encoded.key is None  # drop, rename, dropDatabase, invalidate: no single document


def test_shapes_keep_what_consumers_need() -> None:
    decoded = {
        name: decode_value(encode_events([raw(e)], ValueFormat.JSON)[0].value, ValueFormat.JSON)
        for name, e in EVENTS.items()
        if "splitEvent" not in e
    }
    update = decoded["update"]["updateDescription"]
    assert update["truncatedArrays"] == [{"field": "history", "newSize": 5}]
    assert update["removedFields"] == ["name"] and update["updatedFields"]["address.city"] == "London"
    assert decoded["update_disambiguated_paths"]["updateDescription"]["disambiguatedPaths"] == {
        "a.0": ["a", "0"],
        "b.c.d": ["b", "c", "d"],
    }
    assert decoded["update_post_image_gone"]["fullDocument"] is None  # updateLookup found no document
    assert "fullDocument" not in decoded["update"]
    assert decoded["delete_with_pre_image"]["fullDocumentBeforeChange"] == {"_id": 12, "name": "Alan T."}
    assert decoded["rename"]["to"] == {"db": "shop", "coll": "orders_2024"}
    assert decoded["dropDatabase"]["ns"] == {"db": "shop"}
    transaction = [decoded["insert_in_transaction"], decoded["update_in_transaction"]]
    assert {(e["lsid"]["id"], e["txnNumber"]) for e in transaction} == {(EVENTS["insert_in_transaction"]["lsid"]["id"], 3)}
    assert transaction[0]["clusterTime"] == transaction[1]["clusterTime"]  # one commit, one cluster time
    assert json.loads(encode_events([raw(EVENTS["insert_sharded"])], ValueFormat.JSON)[0].key) == {"region": "eu", "_id": 1001}


def test_fixture_event_ids_increase_in_stream_order() -> None:
    ids = [event["_id"]["_data"] for event in EVENTS.values()]
    assert ids == sorted(ids)


def _as_memoryview(event: RawBSONDocument) -> RawBSONDocument:
    """The document as pymongo hands one of 4 KB and more: over a memoryview of the reply."""
    return RawBSONDocument(memoryview(bytes(event.raw)), RAW_CODEC_OPTIONS)


@pytest.mark.parametrize("buffer", ["bytes", "memoryview"])
def test_split_fragments_are_reassembled_into_the_documented_event(buffer: str) -> None:
    first, second = raw(EVENTS["split_fragment_1_of_2"]), raw(EVENTS["split_fragment_2_of_2"])
    if buffer == "memoryview":
        first, second = _as_memoryview(first), _as_memoryview(second)
    assert is_fragment(first) and is_fragment(second) and not is_fragment(raw(EVENTS["update"]))
    assembler = FragmentAssembler()
    assert assembler.add(first) is None and assembler.pending
    whole = bson.decode(assembler.add(second).raw)
    assert not assembler.pending
    assert "splitEvent" not in whole
    assert whole["_id"] == EVENTS["split_fragment_2_of_2"]["_id"]  # resuming after it continues with the next event
    assert whole["fullDocument"]["largeField"] == "after" and whole["fullDocumentBeforeChange"]["largeField"] == "before"
    assert whole["operationType"] == "update" and whole["ns"] == {"db": "shop", "coll": "media"}
    (encoded,) = encode_events([bson.encode(whole)], ValueFormat.JSON)
    assert encoded.key == b'{"_id":0}'


def test_a_fragment_out_of_order_is_an_error() -> None:
    with pytest.raises(ValueError, match="fragment 2 of 2"):
        FragmentAssembler().add(raw(EVENTS["split_fragment_2_of_2"]))


@pytest.mark.parametrize("buffer", ["bytes", "memoryview"])
def test_positions_never_pass_half_a_split_event(buffer: str) -> None:
    assembler = BatchAssembler(split_supported=True)
    insert, first, second, update = (
        raw(EVENTS[n]) for n in ("insert", "split_fragment_1_of_2", "split_fragment_2_of_2", "update")
    )
    if buffer == "memoryview":  # the fragments, as pymongo hands documents of 4 KB and more
        first, second = _as_memoryview(first), _as_memoryview(second)
    post_batch = raw({"_data": EVENTS["split_fragment_1_of_2"]["_id"]["_data"]})

    events, position, invalidated = assembler.add([insert, first], post_batch, cursor_closed=False)
    assert [e["operationType"] for e in events] == ["insert"]
    assert position == Position.from_token(EVENTS["insert"]["_id"])  # not the fragment's post-batch token
    assert not invalidated

    events, position, _ = assembler.add([], raw({"_data": "ff"}), cursor_closed=False)
    assert events == [] and position is None  # still waiting for fragment 2

    events, position, _ = assembler.add([second, update], raw({"_data": EVENTS["update"]["_id"]["_data"]}), cursor_closed=False)
    assert [e["operationType"] for e in events] == ["update", "update"]
    assert position == Position.from_token(EVENTS["update"]["_id"])


def test_an_invalidate_is_resumed_with_start_after() -> None:
    assembler = BatchAssembler(split_supported=False)
    events, position, invalidated = assembler.add([raw(EVENTS["drop"]), raw(EVENTS["invalidate"])], None, cursor_closed=True)
    assert invalidated and len(events) == 2
    assert position == Position.from_token(EVENTS["invalidate"]["_id"], start_after=True)
    assert position.stream_options() == {"startAfter": EVENTS["invalidate"]["_id"]}


def test_a_quiet_batch_reports_the_post_batch_token() -> None:
    events, position, _ = BatchAssembler(split_supported=False).add([], raw({"_data": "82AA"}), cursor_closed=False)
    assert events == [] and position == Position(token='{"_data":"82AA"}')


def test_the_change_stream_stage_follows_the_settings() -> None:
    settings = StreamSettings(
        full_document=FullDocumentMode.REQUIRED,
        full_document_before_change=PreImageMode.WHEN_AVAILABLE,
        show_expanded_events=True,
        pipeline=[{"$project": {"fullDocument.secret": 0}}],
    )
    options = StreamOptions(settings, NamespaceFilter(ScopeSettings(include_databases=["shop"])), split_supported=True)
    position = Position.from_token({"_data": "82AA"})
    pipeline = options.pipeline(StreamSpec(StreamLayout.DEPLOYMENT), position)
    assert pipeline[0] == {
        "$changeStream": {
            "fullDocument": "required",
            "fullDocumentBeforeChange": "whenAvailable",
            "showExpandedEvents": True,
            "allChangesForCluster": True,
            "resumeAfter": {"_data": "82AA"},
        }
    }
    assert "$match" in pipeline[1]
    assert pipeline[2] == {"$project": {"fullDocument.secret": 0}}
    assert pipeline[-1] == {"$changeStreamSplitLargeEvent": {}}  # always last

    collection = StreamOptions(StreamSettings(full_document=FullDocumentMode.DEFAULT), options.namespaces)
    stages = collection.pipeline(StreamSpec(StreamLayout.COLLECTION, "shop", "orders"), Position.from_time((5, 1)))
    assert stages == [{"$changeStream": {"startAtOperationTime": bson.Timestamp(5, 1)}}]


@pytest.mark.parametrize(
    ("version", "supported"),
    [([7, 0, 2, 0], True), ([8, 0, 0, 0], True), ([6, 0, 9, 0], True), ([6, 0, 8, 0], False), ([5, 0, 0, 0], False), ([], False)],
)
def test_split_events_need_mongodb_7_or_6_0_9(version: list[int], supported: bool) -> None:
    assert split_events_supported({"versionArray": version}) is supported
