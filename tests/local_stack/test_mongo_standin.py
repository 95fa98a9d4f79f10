"""Change streams as the pipeline needs them, on the MongoDB stand-in and (with Docker) a real replica set.

The stand-in is mongo-java-server, not MongoDB; the same assertions run against a real
replica set wherever Docker is reachable, so they describe MongoDB's documented events.
"""

from __future__ import annotations

import time

import pymongo
from pymongo.collection import Collection


def _next_events(stream, count: int, timeout: float = 20.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            events.append(event)
    return events


def _write_lifecycle(collection: Collection) -> None:
    collection.insert_one({"_id": 1, "name": "Ada", "tier": "gold"})
    collection.update_one({"_id": 1}, {"$set": {"tier": "platinum"}, "$unset": {"name": ""}})
    collection.replace_one({"_id": 1}, {"name": "Ada Lovelace", "tier": "silver"})
    collection.delete_one({"_id": 1})


def test_watch_sees_insert_update_replace_and_delete_in_order(mongo_database: pymongo.database.Database) -> None:
    collection = mongo_database["customers"]
    collection.insert_one({"_id": 0})  # the collection must exist before it is watched on old servers
    with collection.watch() as stream:
        _write_lifecycle(collection)
        events = _next_events(stream, 4)

    assert [event["operationType"] for event in events] == ["insert", "update", "replace", "delete"]
    namespace = {"db": mongo_database.name, "coll": "customers"}
    assert all(event["ns"] == namespace and event["documentKey"] == {"_id": 1} for event in events)
    insert, update, replace, delete = events
    assert insert["fullDocument"] == {"_id": 1, "name": "Ada", "tier": "gold"}
    assert update["updateDescription"]["updatedFields"] == {"tier": "platinum"}
    assert update["updateDescription"]["removedFields"] == ["name"]
    assert "fullDocument" not in update  # the default mode carries no document for updates
    assert replace["fullDocument"] == {"_id": 1, "name": "Ada Lovelace", "tier": "silver"}
    assert "fullDocument" not in delete
    tokens = [event["_id"]["_data"] for event in events]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    times = [event["clusterTime"] for event in events]
    assert times == sorted(times)


def test_update_lookup_returns_the_current_document(mongo_database: pymongo.database.Database) -> None:
    collection = mongo_database["orders"]
    collection.insert_one({"_id": "o1", "status": "placed"})
    with collection.watch(full_document="updateLookup") as stream:
        collection.update_one({"_id": "o1"}, {"$set": {"status": "paid"}})
        (event,) = _next_events(stream, 1)
    assert event["fullDocument"] == {"_id": "o1", "status": "paid"}


def test_an_update_read_again_reports_the_values_it_wrote(mongo_database: pymongo.database.Database) -> None:
    """A resumed stream re-reads events (at least once): each must say what it changed then,
    not what later updates made of the document, or one event id would name two changes."""
    collection = mongo_database["counters"]
    collection.insert_one({"_id": 1, "version": 0})
    with collection.watch(full_document="updateLookup") as stream:
        collection.update_one({"_id": 1}, {"$inc": {"version": 1}, "$set": {"touched": True}})
        (first,) = _next_events(stream, 1)
    collection.update_one({"_id": 1}, {"$inc": {"version": 1}})
    with collection.watch(full_document="updateLookup", start_at_operation_time=first["clusterTime"]) as replay:
        again, later = _next_events(replay, 2)
    assert again["_id"] == first["_id"]
    assert again["updateDescription"] == first["updateDescription"]
    assert again["updateDescription"]["updatedFields"] == {"version": 1, "touched": True}
    assert later["updateDescription"]["updatedFields"] == {"version": 2}


def test_a_stream_resumes_after_a_given_token(mongo_database: pymongo.database.Database) -> None:
    collection = mongo_database["products"]
    collection.insert_one({"_id": 0})
    with collection.watch() as stream:
        for number in range(1, 6):
            collection.insert_one({"_id": number})
        events = _next_events(stream, 5)
    resume_token = events[1]["_id"]

    with collection.watch(resume_after=resume_token) as resumed:
        after = _next_events(resumed, 3)
    assert [event["documentKey"]["_id"] for event in after] == [3, 4, 5]

    with collection.watch(start_at_operation_time=events[3]["clusterTime"]) as from_time:
        at_and_after = _next_events(from_time, 2)
    assert [event["documentKey"]["_id"] for event in at_and_after] == [4, 5]


def test_a_quiet_stream_still_advances_its_resume_token(mongo_database: pymongo.database.Database) -> None:
    collection = mongo_database["campaigns"]
    collection.insert_one({"_id": 1})
    with collection.watch(max_await_time_ms=200) as stream:
        collection.insert_one({"_id": 2})
        (event,) = _next_events(stream, 1)
        deadline = time.monotonic() + 15
        token = stream.resume_token
        while stream.resume_token == event["_id"] and time.monotonic() < deadline:
            assert stream.try_next() is None
            token = stream.resume_token
    assert token["_data"] > event["_id"]["_data"]  # the post-batch token moved past the last event
