"""Copies while streaming: chunks between watermarks, on signal, under concurrent writes.

Against the MongoDB stand-in and, where Docker is, a real replica set (``mongo_endpoint``):
the final check is always that the published events, replayed per document in event-id
order, give MongoDB's final state.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Timestamp, json_util
from bson.raw_bson import RawBSONDocument
from cdc_support import apply_events, read_topic

from cdc_service.checkpoints import CopyProgress, CopyState, load_checkpoints
from cdc_service.incremental import (
    BRACKETS,
    ChunkContents,
    ChunkRead,
    ChunkTask,
    ChunkWindow,
    CopyCursor,
    IncrementalCopies,
    id_key,
    read_chunk,
)
from cdc_service.metrics import CdcMetrics
from cdc_service.signals import ROUND_TRIP_RAW
from cdc_service.snapshot import CopyTask
from lakehouse_common.contract import absence_position, parse_snapshot_event_id, snapshot_complete_event_id
from local_stack.paths import PROJECT_ROOT

pytestmark = pytest.mark.timeout(300)


def _mixed_ids(count: int) -> list[Any]:
    """_id values of several BSON types, so chunks cross type brackets."""
    ids: list[Any] = []
    for number in range(count):
        kind = number % 4
        ids.append([number, f"key-{number:05d}", ObjectId(), float(number) + 0.5][kind])
    return ids


def _key(document_id: Any) -> str:
    return json.dumps(json_util.loads(json_util.dumps({"_id": document_id})), sort_keys=True, default=str)


def _mongo_state(collection: Any) -> dict[str, dict[str, Any]]:
    return {_key(document["_id"]): json_util.loads(json_util.dumps(document)) for document in collection.find()}


def _change(event: dict[str, Any]) -> str:
    """The change an event id names. An update's fullDocument is left out: updateLookup returns the
    document as it is when looked up, so an update re-published after a restart (at least once)
    may carry a later image under the same id; its updateDescription is the change itself."""
    named = {key: value for key, value in event.items() if not (key == "fullDocument" and event["operationType"] == "update")}
    return json_util.dumps(named, sort_keys=True)


def _published_state(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: json_util.loads(json_util.dumps(document)) for key, document in apply_events(records).items()}


class Writer(threading.Thread):
    """Concurrent updates, inserts and deletes while the copy runs."""

    def __init__(self, collection: Any, ids: list[Any], *, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.ids = list(ids)
        self.pause = pause
        self.stop = threading.Event()
        self.writes = 0
        self.random = random.Random(7)

    def run(self) -> None:
        while not self.stop.is_set():
            choice = self.random.random()
            document_id = self.random.choice(self.ids)
            if choice < 0.7:
                self.collection.update_one({"_id": document_id}, {"$inc": {"version": 1}, "$set": {"touched": True}})
            elif choice < 0.85:
                new_id = f"new-{self.writes:06d}"
                self.collection.insert_one({"_id": new_id, "version": 0})
                self.ids.append(new_id)
            else:
                self.collection.delete_one({"_id": document_id})
            self.writes += 1
            time.sleep(self.pause)


def _cdc(env: dict[str, str], *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc_service.cli", *arguments],
        env={**__import__("os").environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_signalled_copy_under_concurrent_writes_ends_in_mongodbs_state(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    items = mongo_database["items"]
    ids = _mixed_ids(3000)
    items.insert_many([{"_id": document_id, "version": 0, "payload": "x" * 100} for document_id in ids])
    env = cdc_env(
        CDC_SNAPSHOT__MODE="never",  # nothing copied at start: only the signalled copy brings these documents
        CDC_SNAPSHOT__SIGNAL_COLLECTION=f"{mongo_database.name}.cdc_signals",
        CDC_SNAPSHOT__CHUNK_SIZE="400",
    )
    service = run_service(env)
    service.streaming(1)
    writer = Writer(items, ids)
    writer.start()
    try:
        copy = _cdc(env, "snapshot", "--stream", f"coll:{mongo_database.name}.items")
    finally:
        writer.stop.set()
        writer.join()
    assert copy.returncode == 0, copy.stdout + copy.stderr
    assert "the running service" in copy.stdout and "accepted signal" in copy.stdout, copy.stdout
    assert f"{mongo_database.name}.items: done" in copy.stdout, copy.stdout

    topic = f"{env['CDC_TOPICS__PREFIX']}.{mongo_database.name}.items"
    final = items.count_documents({})
    time.sleep(2)  # the last writes reach the topic
    records = read_topic(kafka_broker.bootstrap_servers, topic, idle_s=3.0, timeout_s=120)
    assert _published_state(records) == _mongo_state(items)
    snapshots = [r for r in records if r["headers"].operation == "snapshot"]
    progress = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).copies[f"{mongo_database.name}.items"]
    assert progress.state == CopyState.DONE and progress.copied == len(snapshots)
    assert progress.chunks >= len(ids) // 400
    assert writer.writes > 100 and final > 0
    # Every record sorts right after its chunk's high watermark: its position is no change event of the topic.
    changes = {r["headers"].event_id for r in records if r["headers"].operation not in ("snapshot", "snapshotComplete")}
    assert all(parse_snapshot_event_id(r["headers"].event_id).position not in changes for r in snapshots)
    # One marker, at the first chunk's low watermark, under the copy's attempt, below every record of the copy.
    [marker] = [r for r in records if r["headers"].operation == "snapshotComplete"]
    assert marker["headers"].event_id == snapshot_complete_event_id(progress.start_position, progress.attempt)
    assert marker["event"]["snapshot"] == {"position": progress.start_position, "attempt": 1, "documents": progress.copied}
    assert (marker["event"]["clusterTime"].time, marker["event"]["clusterTime"].inc) == progress.start_cluster_time
    assert marker["key"] is None and "documentKey" not in marker["event"]
    below = absence_position(marker["headers"].event_id, "snapshotComplete")
    assert below is not None and all(below < r["headers"].event_id for r in snapshots)
    assert service.service.metrics.events_published.labels("snapshotComplete", f"{mongo_database.name}.items")._value.get() == 1  # noqa: SLF001
    service.stop()
    signal = mongo_database["cdc_signals"].find_one({"type": "execute-snapshot"})
    assert signal["status"] == "done" and signal["finished"][0]["published"] == progress.copied
    assert mongo_database["cdc_signals"].count_documents({"_id": {"$regex": "^wm:"}}) == 0  # watermarks cleaned up
    shown = _cdc(env, "checkpoint", "show", "--json")
    assert json.loads(shown.stdout)["copies"][f"{mongo_database.name}.items"]["copied"] == progress.copied
    assert f"copy {mongo_database.name}.items (signal): done" in _cdc(env, "checkpoint", "show").stdout


# ---------------------------------------------------------------- chunks in BSON order of _id


def _every_id_type(real: bool) -> list[Any]:
    ids = [
        MinKey(),
        None,
        float("nan"),
        float("-inf"),
        -5,
        Int64(2),
        2.5,
        Decimal128("3.25"),
        10**12,
        float("inf"),
        "",
        "a",
        "b",
        "ž",
        {},
        {"a": 1},
        {"a": 1, "b": 2},
        {"z": 0},
        Binary(b""),
        Binary(b"\x01"),
        ObjectId(b"\x00" * 12),
        ObjectId(),
        False,
        True,
        datetime(1969, 1, 1, tzinfo=UTC),
        datetime(2024, 5, 1, tzinfo=UTC),
        Timestamp(0, 1),
        Timestamp(1_700_000_000, 3),
        MaxKey(),
    ]
    if real:  # the stand-in's $gt does not compare binary values of different subtypes; MongoDB does
        ids.append(Binary(b"\x00" * 16, 4))
    return ids


def _read_all(collection: Any, limit: int, *, max_bytes: int = 1 << 30, query: dict[str, Any] | None = None) -> list[list[Any]]:
    chunks: list[list[Any]] = []
    cursor = CopyCursor()
    while not cursor.exhausted:
        contents = read_chunk(collection, cursor, limit=limit, max_bytes=max_bytes, query=query)
        assert len(contents.documents) <= limit
        assert contents.documents or contents.cursor.exhausted
        chunks.append([bson.decode(document.raw)["_id"] for document in contents.documents])
        cursor = contents.cursor
    return chunks


def _same(left: list[Any], right: list[Any]) -> bool:
    return [bson.encode({"_id": value}) for value in left] == [bson.encode({"_id": value}) for value in right]


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 1000])
def test_chunks_cover_every_id_once_in_bson_order_across_types(mongo_endpoint, mongo_database, limit) -> None:
    collection = mongo_database["mixed"]
    ids = _every_id_type(mongo_endpoint.is_real)
    random.Random(limit).shuffle(ids)
    collection.insert_many([{"_id": value, "keep": index % 2 == 0} for index, value in enumerate(ids)])
    raw = collection.with_options(codec_options=ROUND_TRIP_RAW)
    chunks = _read_all(raw, limit)
    read = [value for chunk in chunks for value in chunk]
    assert sorted(bson.encode({"_id": v}) for v in read) == sorted(bson.encode({"_id": v}) for v in ids)  # each once
    assert all(len(chunk) == limit for chunk in chunks[:-2])  # chunks are full but near the end
    # Bracket by bracket in MongoDB's type order, and within each in the server's own order.
    brackets = [_bracket_of(value) for value in read]
    assert brackets == sorted(brackets)
    expected = [document["_id"] for document in collection.find().sort("_id", 1)]
    for bracket in set(brackets):
        mine = [value for value in read if _bracket_of(value) == bracket]
        assert _same(mine, [value for value in expected if _bracket_of(value) == bracket]), bracket


def test_a_filter_narrows_every_chunk_and_a_byte_limit_still_takes_one_document(mongo_endpoint, mongo_database) -> None:
    collection = mongo_database["mixed"]
    ids = _every_id_type(mongo_endpoint.is_real)
    collection.insert_many([{"_id": value, "keep": index % 2 == 0, "blob": "x" * 500} for index, value in enumerate(ids)])
    raw = collection.with_options(codec_options=ROUND_TRIP_RAW)
    kept = [value for index, value in enumerate(ids) if index % 2 == 0]
    read = [value for chunk in _read_all(raw, 4, query={"keep": True}) for value in chunk]
    assert sorted(bson.encode({"_id": v}) for v in read) == sorted(bson.encode({"_id": v}) for v in kept)
    one_each = _read_all(raw, 100, max_bytes=10)  # every document is larger than the limit
    assert all(len(chunk) == 1 for chunk in one_each[:-1])
    assert sum(len(chunk) for chunk in one_each) == len(ids)


def _bracket_of(value: Any) -> int:
    for index, bracket in enumerate(BRACKETS):
        if bracket.name == "NaN" and isinstance(value, float) and value != value:
            return index
        if bracket.name == "number" and isinstance(value, (int, float, Int64, Decimal128)) and not isinstance(value, bool):
            return index
    kinds = {
        type(None): "null",
        str: "string",
        dict: "object",
        bytes: "binData",
        Binary: "binData",
        ObjectId: "objectId",
        bool: "bool",
        datetime: "date",
        Timestamp: "timestamp",
    }
    name = "minKey" if isinstance(value, MinKey) else "maxKey" if isinstance(value, MaxKey) else kinds[type(value)]
    return next(index for index, bracket in enumerate(BRACKETS) if bracket.name == name)


# ---------------------------------------------------------------- the window rule


def _window(
    documents: list[dict[str, Any]], changed: list[tuple[str, Any]], low: str = "0100", high: str = "0200"
) -> ChunkWindow:
    raws = [RawBSONDocument(bson.encode(document), ROUND_TRIP_RAW) for document in documents]
    task = ChunkTask("db.c", "coll:db.c", "copy", 1, "copy:1:n", CopyCursor(), 10, 1 << 20, None)
    contents = ChunkContents(raws, [id_key(raw) for raw in raws], CopyCursor(len(BRACKETS), None))
    window = ChunkWindow(task, low=low, high=high, read=ChunkRead(task, contents))
    window.changed = [(event_id, None if key is None else bson.encode({"_id": key})) for event_id, key in changed]
    return window


def test_a_change_between_the_watermarks_takes_its_document_out_of_the_chunk() -> None:
    documents = [{"_id": 1, "v": 0}, {"_id": "two", "v": 0}, {"_id": 3, "v": 0}]
    window = _window(documents, [("0050", 1), ("0150", "two"), ("0250", 3)])
    kept, superseded = window.kept()
    assert [bson.decode(document.raw)["_id"] for document in kept] == [1, 3]  # before L: read; after H: sorts later
    assert superseded == 1
    assert window.ready("0200") and window.ready("0300") and not window.ready("01ff") and not window.ready(None)


def test_a_drop_between_the_watermarks_takes_the_whole_chunk_out() -> None:
    window = _window([{"_id": 1}, {"_id": 2}], [("0150", None)])
    assert window.kept() == ([], 2)
    assert _window([{"_id": 1}], [("0250", None)]).kept()[1] == 0


def test_the_stream_notes_document_and_collection_events_of_the_chunk_in_flight() -> None:
    copies = IncrementalCopies("svc", 10, 1 << 20, CdcMetrics())
    copies.begin("db.c", "db:db", reason="signal")
    [task] = copies.schedule(lambda stream_id: True)
    assert copies.schedule(lambda stream_id: True) == []  # one chunk in flight per copy
    events = [
        {"_id": {"_data": "0110"}, "operationType": "update", "ns": {"db": "db", "coll": "c"}, "documentKey": {"_id": 7}},
        {"_id": {"_data": "0120"}, "operationType": "insert", "ns": {"db": "db", "coll": "other"}, "documentKey": {"_id": 8}},
        {"_id": {"_data": "0130"}, "operationType": "rename", "ns": {"db": "db", "coll": "x"}, "to": {"db": "db", "coll": "c"}},
        {"_id": {"_data": "0140"}, "operationType": "createIndexes", "ns": {"db": "db", "coll": "c"}},
    ]
    copies.observe("db:db", [RawBSONDocument(bson.encode(event)) for event in events])
    window = copies._in_flight["db.c"]  # noqa: SLF001 - the window's notes
    assert window.changed == [("0110", bson.encode({"_id": 7})), ("0130", None)]
    assert copies.on_watermark("0105", f"wm:{task.window}:low", (1, 1))
    assert copies.on_watermark("0150", f"wm:{task.window}:high", (1, 2))
    assert not copies.on_watermark("0160", "a signal", None)
    raws = [RawBSONDocument(bson.encode({"_id": 7}), ROUND_TRIP_RAW)]
    copies.on_read(ChunkRead(task, ChunkContents(raws, [id_key(raws[0])], CopyCursor(len(BRACKETS), None))))
    assert copies.finished(lambda stream_id: "0149") == []  # the stream has not reached the high watermark
    [finished] = copies.finished(lambda stream_id: "0150")
    assert finished.documents == [] and finished.superseded == 1 and finished.high == "0150"
    assert finished.progress.state == CopyState.DONE and finished.progress.start_position == "0105"
    assert b"svc/copy/" in next(iter(copies.records()))
    assert [progress.namespace for progress in copies.committed()] == ["db.c"]


def _finish_chunk(copies: IncrementalCopies, low: str, high: str, low_time: tuple[int, int], *, last: bool) -> Any:
    """One chunk of db.c through its watermarks and read (of one document), published and committed."""
    [task] = copies.schedule(lambda stream_id: True)
    copies.on_watermark(low, f"wm:{task.window}:low", low_time)
    copies.on_watermark(high, f"wm:{task.window}:high", (low_time[0], low_time[1] + 1))
    raws = [RawBSONDocument(bson.encode({"_id": task.chunk}), ROUND_TRIP_RAW)]
    cursor = CopyCursor(len(BRACKETS), None) if last else CopyCursor(3, id_key(raws[0]))
    copies.on_read(ChunkRead(task, ChunkContents(raws, [id_key(raws[0])], cursor)))
    [finished] = copies.finished(lambda stream_id: high)
    copies.committed()
    return finished


@pytest.mark.parametrize("query", [None, '{"status": "open"}'])
def test_the_last_chunk_of_a_full_copy_names_the_copy_at_its_first_low_watermark(query: str | None) -> None:
    copies = IncrementalCopies("svc", 1, 1 << 20, CdcMetrics(), snapshot_attempt=lambda namespace: 2)
    copies.begin("db.c", "coll:db.c", reason="signal", query=query)
    first = _finish_chunk(copies, "0105", "0150", (10, 1), last=False)
    assert first.completed_full_copy() is None  # not done yet
    last = _finish_chunk(copies, "0205", "0250", (20, 1), last=True)
    if query is not None:
        assert last.completed_full_copy() is None  # a filtered copy says nothing of the documents it skipped
        return
    assert last.completed_full_copy() == CopyTask("coll:db.c", "db", "c", "0105", 3, (10, 1))
    assert last.progress.copied == 2
    # The checkpointed copy keeps where and when it began.
    restored = CopyProgress.from_dict(json.loads(last.progress.to_json()))
    assert (restored.start_position, restored.start_cluster_time) == ("0105", (10, 1))


def test_chunks_in_flight_begin_again_when_their_watermarks_may_be_lost() -> None:
    """The signal stream followed from now again (its history lost): a window whose watermarks
    it may never see is dropped, and the chunk begins again with a new window."""
    copies = IncrementalCopies("svc", 10, 1 << 20, CdcMetrics())
    copies.begin("db.c", "coll:db.c", reason="signal")
    [first] = copies.schedule(lambda stream_id: True)
    copies.reopen_windows()
    assert copies.on_watermark("0105", f"wm:{first.window}:low", (1, 1))  # a watermark of the old window: ignored
    [again] = copies.schedule(lambda stream_id: True)
    assert again.chunk == first.chunk and again.window != first.window
    assert set(again.stale_watermarks) == {f"wm:{first.window}:low", f"wm:{first.window}:high"}
    assert copies._in_flight["db.c"].low is None  # noqa: SLF001 - the new window saw nothing yet


def test_a_copy_numbers_its_attempt_above_every_snapshot_of_the_collection() -> None:
    copies = IncrementalCopies("svc", 10, 1 << 20, CdcMetrics(), snapshot_attempt=lambda namespace: 4)
    assert copies.begin("db.c", "coll:db.c", reason="signal").attempt == 5
    copies.cancel(["db.c"], "stopped")
    assert copies.begin("db.c", "coll:db.c", reason="signal").attempt == 6


def test_id_keys_match_between_documents_and_their_events_document_keys() -> None:
    stored = RawBSONDocument(bson.encode({"_id": {"a": 1}, "x": 2}), ROUND_TRIP_RAW)
    key = RawBSONDocument(bson.encode({"_id": {"a": 1}}), ROUND_TRIP_RAW)
    sharded = RawBSONDocument(bson.encode({"region": "eu", "_id": {"a": 1}}), ROUND_TRIP_RAW)
    late = RawBSONDocument(bson.encode({"x": 2, "_id": {"a": 1}}), ROUND_TRIP_RAW)
    assert id_key(stored) == id_key(key) == id_key(sharded) == id_key(late) == bson.encode({"_id": {"a": 1}})
    assert id_key(RawBSONDocument(bson.encode({"_id": Int64(1)}))) != id_key(RawBSONDocument(bson.encode({"_id": 1})))


# ---------------------------------------------------------------- signals by hand, scope changes, no service


def _wait_for(predicate: Any, timeout: float = 120.0, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {message}")


def _signal_env(cdc_env: Any, database: str, **extra: str) -> dict[str, str]:
    return cdc_env(CDC_SNAPSHOT__MODE="never", CDC_SNAPSHOT__SIGNAL_COLLECTION=f"{database}.cdc_signals", **extra)


def test_signal_documents_copy_a_filtered_part_refuse_bad_ones_and_stop_a_copy(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    items, signals = mongo_database["items"], mongo_database["cdc_signals"]
    items.insert_many([{"_id": number, "status": "open" if number % 3 == 0 else "closed"} for number in range(300)])
    mongo_database["big"].insert_many([{"_id": number} for number in range(5000)])
    namespace = f"{mongo_database.name}.items"
    service = run_service(_signal_env(cdc_env, mongo_database.name, CDC_SNAPSHOT__CHUNK_SIZE="50"))
    service.streaming(2)
    signals.insert_many(
        [
            {"_id": "bad-filter", "type": "execute-snapshot", "data": {"data-collections": [namespace], "filter": {"$bogus": 1}}},
            {"_id": "out-of-scope", "type": "execute-snapshot", "data": {"data-collections": ["elsewhere.items"]}},
            {"_id": "unknown", "type": "make-coffee"},
            {
                "_id": "open-only",
                "type": "execute-snapshot",
                "data": {"data-collections": [namespace], "filter": {"status": "open"}},
            },
        ]
    )
    done = _wait_for(lambda: (signals.find_one({"_id": "open-only", "status": "done"})), message="the filtered copy")
    assert done["service"] == service.settings.name and done["finished"][0]["published"] == 100
    rejected = {document["_id"]: document["reason"] for document in signals.find({"status": "rejected"})}
    assert set(rejected) == {"bad-filter", "out-of-scope", "unknown"}
    assert "refused" in rejected["bad-filter"] and "not captured" in rejected["out-of-scope"]
    assert "make-coffee" in rejected["unknown"]

    topic = f"{service.settings.topics.prefix}.{namespace}"
    records = read_topic(kafka_broker.bootstrap_servers, topic, expect=100)
    assert {r["headers"].operation for r in records} == {"snapshot"}  # a filtered copy publishes no marker
    assert sorted(r["event"]["documentKey"]["_id"] for r in records) == list(range(0, 300, 3))
    assert service.exit_code is None  # bad signals never stop the service

    # A copy stopped by a stop-snapshot signal ends as cancelled, and its signal says so.
    big = f"{mongo_database.name}.big"
    signals.insert_one({"_id": "big", "type": "execute-snapshot", "data": {"data-collections": [big]}})
    _wait_for(lambda: service.service.metrics.copy_chunks.labels(big)._value.get() >= 2, message="two chunks")  # noqa: SLF001
    signals.insert_one({"_id": "stop", "type": "stop-snapshot", "data": {"data-collections": [big]}})
    stopped = _wait_for(lambda: signals.find_one({"_id": "big", "status": "done"}), message="the stopped copy")
    assert stopped["finished"][0]["state"] == "cancelled" and stopped["finished"][0]["published"] < 5000
    assert signals.find_one({"_id": "stop"})["finished"][0]["stopped"] == [big]
    assert service.stop() == 0
    metrics = service.service.metrics
    assert metrics.signals.labels("execute-snapshot", "rejected")._value.get() == 2  # noqa: SLF001
    assert metrics.copy_documents.labels(namespace)._value.get() == 100  # noqa: SLF001


def test_a_collection_renamed_into_the_scope_is_copied_while_it_streams(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    """Its documents have no events under the new name (the stand-in's rename, like $out, writes none):
    only the chunked copy brings them; changes made meanwhile keep their order."""
    staging = mongo_database["staging"]
    staging.insert_many([{"_id": number, "version": 0} for number in range(500)])
    env = cdc_env(
        CDC_SNAPSHOT__SIGNAL_COLLECTION=f"{mongo_database.name}.cdc_signals",
        CDC_SNAPSHOT__CHUNK_SIZE="120",
        CDC_SCOPE__EXCLUDE_COLLECTIONS=f'["{mongo_database.name}.staging"]',
    )
    mongo_database["other"].insert_one({"_id": 0})
    service = run_service(env)
    service.streaming(1)
    mongo_database.client.admin.command("renameCollection", f"{mongo_database.name}.staging", to=f"{mongo_database.name}.items")
    items = mongo_database["items"]
    _wait_for(lambda: service.service.metrics.copies_running._value.get() == 1, message="the copy to start")  # noqa: SLF001
    for number in range(0, 500, 7):
        items.update_one({"_id": number}, {"$set": {"version": 1}})
    items.delete_many({"_id": {"$gte": 480}})
    namespace = f"{mongo_database.name}.items"
    _wait_for(
        lambda: service.service.metrics.copies_running._value.get() == 0
        and service.service.metrics.copy_chunks.labels(namespace)._value.get() > 0,
        message="the copy",
    )  # noqa: SLF001
    time.sleep(2)
    records = read_topic(kafka_broker.bootstrap_servers, f"{env['CDC_TOPICS__PREFIX']}.{namespace}", idle_s=3.0)
    service.stop()
    assert _published_state(records) == _mongo_state(items)
    assert Counter(r["event"]["operationType"] for r in records)["snapshot"] >= 400
    progress = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).copies[namespace]
    assert progress.reason == "new-collection" and progress.state == CopyState.DONE


def test_signals_written_before_the_service_follows_the_collection_are_executed_once(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    """Followed from now, the signal stream cannot see what was written before it opened: the
    service reads the unanswered signals from the collection then (and an insert seen both
    ways runs once)."""
    items, signals = mongo_database["items"], mongo_database["cdc_signals"]
    items.insert_many([{"_id": number} for number in range(120)])
    namespace = f"{mongo_database.name}.items"
    signals.insert_many(
        [
            {"_id": "early", "type": "execute-snapshot", "data": {"data-collections": [namespace]}},
            {"_id": "odd", "type": "make-coffee"},
            {"_id": "answered", "type": "execute-snapshot", "data": {"data-collections": [namespace]}, "status": "withdrawn"},
        ]
    )
    service = run_service(_signal_env(cdc_env, mongo_database.name, CDC_SNAPSHOT__CHUNK_SIZE="50"))
    done = _wait_for(lambda: signals.find_one({"_id": "early", "status": "done"}), message="the early signal's copy")
    assert done["finished"][0]["published"] == 120
    assert signals.find_one({"_id": "odd"})["status"] == "rejected"
    assert signals.find_one({"_id": "answered"})["status"] == "withdrawn"  # answered signals are never executed
    records = read_topic(kafka_broker.bootstrap_servers, f"{service.settings.topics.prefix}.{namespace}", expect=121)
    assert Counter(r["event"]["operationType"] for r in records) == {"snapshot": 120, "snapshotComplete": 1}
    assert service.stop() == 0
    metrics = service.service.metrics
    assert metrics.signals.labels("execute-snapshot", "accepted")._value.get() == 1  # noqa: SLF001
    assert metrics.signals.labels("unknown", "rejected")._value.get() == 1  # noqa: SLF001


def test_a_collection_added_to_the_include_list_is_copied_in_chunks_while_the_others_stream(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    """After a restart with a longer include list, the new collection streams at once and its
    documents are copied in chunks (no snapshot first), under concurrent writes."""
    database = mongo_database.name
    first, added = mongo_database["first"], mongo_database["added"]
    first.insert_many([{"_id": number, "version": 0} for number in range(50)])
    ids = list(range(1500))
    added.insert_many([{"_id": number, "version": 0, "payload": "y" * 50} for number in ids])
    env = cdc_env(
        CDC_SNAPSHOT__SIGNAL_COLLECTION=f"{database}.cdc_signals",
        CDC_SNAPSHOT__CHUNK_SIZE="200",
        CDC_SCOPE__INCLUDE_COLLECTIONS=f'["{database}.first"]',
    )
    service = run_service(env)
    service.streaming(1)
    first.update_one({"_id": 1}, {"$set": {"version": 1}})
    assert service.stop() == 0

    wider = {**env, "CDC_SCOPE__INCLUDE_COLLECTIONS": f'["{database}.first", "{database}.added"]'}
    service = run_service(wider)
    namespace = f"{database}.added"
    writer = Writer(added, ids)
    writer.start()
    try:
        _wait_for(
            lambda: service.service.metrics.copy_chunks.labels(namespace)._value.get() > 0  # noqa: SLF001
            and service.service.metrics.copies_running._value.get() == 0,
            message="the added collection's copy",
        )  # noqa: SLF001
        writes_during_copy = writer.writes
        first.update_one({"_id": 2}, {"$set": {"version": 2}})  # the other stream went on meanwhile
        _wait_for(lambda: writer.writes > 50, message="50 writes")  # a fast copy may end first; the stream takes the rest
    finally:
        writer.stop.set()
        writer.join()
    time.sleep(2)
    prefix = env["CDC_TOPICS__PREFIX"]
    records = read_topic(kafka_broker.bootstrap_servers, f"{prefix}.{namespace}", idle_s=3.0, timeout_s=120)
    first_records = read_topic(kafka_broker.bootstrap_servers, f"{prefix}.{database}.first", idle_s=3.0)
    service.stop()
    assert _published_state(records) == _mongo_state(added)
    assert _published_state(first_records) == _mongo_state(first)
    assert Counter(r["event"]["operationType"] for r in first_records)["snapshot"] == 50  # not copied again
    progress = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).copies[namespace]
    assert progress.reason == "new-collection" and progress.state == CopyState.DONE and progress.chunks >= 1500 // 200
    assert writes_during_copy > 0


def test_an_offline_snapshot_after_a_copy_on_signal_numbers_its_attempt_above_the_copy(
    cdc_env, run_service, mongo_database, kafka_broker
) -> None:
    """One attempt counter per collection for both kinds of copy: a snapshot's records and a
    chunk's never share an id, even where its position and a chunk's high watermark are one token."""
    items, signals = mongo_database["items"], mongo_database["cdc_signals"]
    items.insert_many([{"_id": number} for number in range(40)])
    env = _signal_env(cdc_env, mongo_database.name)
    namespace = f"{mongo_database.name}.items"
    service = run_service(env)
    service.streaming(1)
    signals.insert_one({"_id": "copy", "type": "execute-snapshot", "data": {"data-collections": [namespace]}})
    _wait_for(lambda: signals.find_one({"_id": "copy", "status": "done"}), message="the copy on signal")
    assert service.stop() == 0
    offline = _cdc(env, "snapshot", "--offline", "--stream", f"coll:{namespace}")
    assert offline.returncode == 0, offline.stderr
    records = read_topic(kafka_broker.bootstrap_servers, f"{env['CDC_TOPICS__PREFIX']}.{namespace}", expect=82)
    snapshots = [r for r in records if r["headers"].operation == "snapshot"]
    attempts = Counter(parse_snapshot_event_id(r["headers"].event_id).attempt for r in snapshots)
    assert attempts == {1: 40, 2: 40}, attempts  # the copy on signal, then the offline snapshot above it
    assert len({r["headers"].event_id for r in snapshots}) == 80
    markers = [r["event"]["snapshot"] for r in records if r["headers"].operation == "snapshotComplete"]
    assert sorted((m["attempt"], m["documents"]) for m in markers) == [(1, 40), (2, 40)]


def test_without_a_running_service_the_snapshot_command_withdraws_its_signal_and_copies_offline(
    cdc_env, mongo_database, kafka_broker
) -> None:
    mongo_database["items"].insert_many([{"_id": number} for number in range(30)])
    env = _signal_env(cdc_env, mongo_database.name)
    stream = f"coll:{mongo_database.name}.items"
    filtered = _cdc(env, "snapshot", "--stream", stream, "--filter", '{"_id": 1}', "--accept-timeout", "1")
    assert filtered.returncode == 1 and "need one" in filtered.stderr
    copy = _cdc(env, "snapshot", "--stream", stream, "--accept-timeout", "1")
    assert copy.returncode == 0, copy.stderr
    assert "no running service accepted the signal" in copy.stdout and "copying offline" in copy.stdout
    assert {d["status"] for d in mongo_database["cdc_signals"].find()} == {"withdrawn"}
    records = read_topic(kafka_broker.bootstrap_servers, f"{env['CDC_TOPICS__PREFIX']}.{mongo_database.name}.items", expect=31)
    assert Counter(r["event"]["operationType"] for r in records) == {"snapshot": 30, "snapshotComplete": 1}
    streams = load_checkpoints(
        {"bootstrap.servers": kafka_broker.bootstrap_servers}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"]
    ).streams
    assert streams[f"coll:{mongo_database.name}.items"].kind == "snapshot"  # the offline copy, as before


def test_a_snapshot_command_interrupted_before_any_service_answered_withdraws_its_signal(
    cdc_env, mongo_database, kafka_broker
) -> None:
    """Ctrl-C while waiting for the running service: the signal is withdrawn, so no service
    starts that copy later (a pending signal is executed whenever a service reads it)."""
    mongo_database["items"].insert_one({"_id": 1})
    env = _signal_env(cdc_env, mongo_database.name)
    command = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdc_service.cli",
            "snapshot",
            "--stream",
            f"coll:{mongo_database.name}.items",
            "--accept-timeout",
            "600",
        ],
        env={**__import__("os").environ, **env},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: mongo_database["cdc_signals"].find_one(), message="the signal")
        command.send_signal(__import__("signal").SIGINT)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130, stderr
    assert "withdrawn" in stderr
    assert [d["status"] for d in mongo_database["cdc_signals"].find()] == ["withdrawn"]


# ---------------------------------------------------------------- a crash in mid-copy


def _log_events(path: Any, message: str) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"message": "{message}"' in line:
            found.append(json.loads(line))
    return found


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_sigkill_in_mid_copy_resumes_from_the_last_chunk(
    delivery, cdc_env, service_process, mongo_database, kafka_broker, tmp_path
) -> None:
    items, signals = mongo_database["items"], mongo_database["cdc_signals"]
    ids = _mixed_ids(6000)
    items.insert_many([{"_id": document_id, "version": 0} for document_id in ids])
    env = _signal_env(cdc_env, mongo_database.name, CDC_SNAPSHOT__CHUNK_SIZE="100", CDC_PRODUCER__DELIVERY=delivery)
    bootstrap = kafka_broker.bootstrap_servers
    namespace = f"{mongo_database.name}.items"

    def progress() -> Any:
        checkpoints = load_checkpoints({"bootstrap.servers": bootstrap}, env["CDC_TOPICS__CHECKPOINT_TOPIC"], env["CDC_NAME"])
        return checkpoints.copies.get(namespace)

    first = service_process(env)
    _wait_for(lambda: _log_events(tmp_path / "service-0.log", "streaming"), message="the service to stream")
    time.sleep(1)
    writer = Writer(items, ids, pause=0.005)
    writer.start()
    signals.insert_one({"_id": "copy", "type": "execute-snapshot", "data": {"data-collections": [namespace]}})
    _wait_for(lambda: len(_log_events(tmp_path / "service-0.log", "copy chunk read")) >= 8, message="eight chunks read")
    first.kill()  # SIGKILL in mid-copy: no drain, no last checkpoint
    first.wait(10)
    at_kill = progress()
    durable = at_kill.chunks
    assert at_kill.running and durable >= 5
    second = service_process(env)
    _wait_for(lambda: (signals.find_one({"_id": "copy"}) or {}).get("status") == "done", timeout=240, message="the copy")
    writer.stop.set()
    writer.join()
    time.sleep(2)
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    records = read_topic(bootstrap, f"{env['CDC_TOPICS__PREFIX']}.{namespace}", isolation=isolation, idle_s=3.0, timeout_s=120)
    second.terminate()
    assert second.wait(60) == 0

    [resumed] = _log_events(tmp_path / "service-1.log", "resuming a copy")
    assert resumed["from_chunk"] == durable + 1
    read_before = {event["chunk"] for event in _log_events(tmp_path / "service-0.log", "copy chunk read")}
    read_after = [event["chunk"] for event in _log_events(tmp_path / "service-1.log", "copy chunk read")]
    assert min(read_after) == durable + 1 and len(read_after) == len(set(read_after))
    assert len(read_before & set(read_after)) <= 1  # at most the chunk in flight is read again
    assert _published_state(records) == _mongo_state(items)
    assert writer.writes > 50


def test_a_copy_killed_mid_way_then_an_offline_snapshot_then_run_loses_no_change_and_shares_no_id(
    cdc_env, service_process, mongo_database, kafka_broker, tmp_path
) -> None:
    """Issue 10's rule with copies on signal: bronze dedupes exactly by event id, so a record
    may repeat (at least once) but no two different changes may share an id. SIGKILL in
    mid-copy, `snapshot --offline` of the stream, then `run`: the copy goes on, and the
    topic replayed once per id gives MongoDB's state."""
    items, signals = mongo_database["items"], mongo_database["cdc_signals"]
    ids = list(range(3000))
    items.insert_many([{"_id": number, "version": 0} for number in ids])
    env = _signal_env(cdc_env, mongo_database.name, CDC_SNAPSHOT__CHUNK_SIZE="100")
    namespace = f"{mongo_database.name}.items"
    first = service_process(env)
    _wait_for(lambda: _log_events(tmp_path / "service-0.log", "streaming"), message="the service to stream")
    writer = Writer(items, ids, pause=0.005)
    writer.start()
    signals.insert_one({"_id": "copy", "type": "execute-snapshot", "data": {"data-collections": [namespace]}})
    _wait_for(lambda: len(_log_events(tmp_path / "service-0.log", "copy chunk read")) >= 5, message="five chunks read")
    first.kill()
    first.wait(10)
    offline = _cdc(env, "snapshot", "--offline", "--stream", f"coll:{namespace}")
    assert offline.returncode == 0, offline.stderr
    second = service_process(env)
    _wait_for(lambda: (signals.find_one({"_id": "copy"}) or {}).get("status") == "done", timeout=240, message="the copy")
    writer.stop.set()
    writer.join()
    time.sleep(2)
    records = read_topic(
        kafka_broker.bootstrap_servers,
        f"{env['CDC_TOPICS__PREFIX']}.{namespace}",
        isolation="read_uncommitted",
        idle_s=3.0,
        timeout_s=120,
    )
    second.terminate()
    assert second.wait(60) == 0
    by_id: dict[str, set[str]] = {}
    for record in records:
        by_id.setdefault(record["headers"].event_id, set()).add(_change(record["event"]))
    shared = {event_id for event_id, changes in by_id.items() if len(changes) > 1}
    assert not shared, {event_id: sorted(by_id[event_id]) for event_id in sorted(shared)[:3]}  # an id names one change
    once = list({record["headers"].event_id: record for record in records}.values())  # bronze's exact dedupe
    assert _published_state(once) == _mongo_state(items)
    attempts = {parse_snapshot_event_id(r["headers"].event_id).attempt for r in once if r["headers"].operation == "snapshot"}
    assert attempts == {1, 2}  # the copy on signal, then the offline snapshot above it (the copy kept its number)
    assert writer.writes > 50


def test_checkpointed_copies_go_on_on_the_stream_covering_them_now_or_end_with_the_reason() -> None:
    running = {
        name: CopyProgress(name, f"coll:{name}", f"c{index}", 1, "signal", chunks=3)
        for index, name in enumerate(["db.moved", "db.dropped", "db.excluded", "db.same"])
    }
    finished = CopyProgress("db.done", "coll:db.done", "c9", 2, "signal", state="done")
    copies = IncrementalCopies("svc", 10, 1 << 20, CdcMetrics())
    copies.restore(
        {**running, "db.done": finished},
        in_scope=lambda namespace: namespace != "db.excluded",
        covering=lambda namespace: {"db.moved": "db:db", "db.same": "coll:db.same", "db.excluded": "db:db"}.get(namespace),
    )
    assert copies.progress("db.moved").stream_id == "db:db" and copies.running("db.moved")
    assert copies.running("db.same") and copies.progress("db.done") == finished
    assert "dropped" in copies.progress("db.dropped").detail and not copies.running("db.dropped")
    assert "scope" in copies.progress("db.excluded").detail
    assert {task.namespace for task in copies.schedule(lambda stream_id: True)} == {"db.moved", "db.same"}
    assert copies.known() == {"db.moved", "db.dropped", "db.excluded", "db.same", "db.done"}
