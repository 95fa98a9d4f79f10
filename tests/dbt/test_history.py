"""SCD type 2: one version per event, valid from its cluster time to the next event's, in event-id order."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from bson import json_util

from data_generator import COLLECTIONS
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS


def _expected_history(events: list[dict]) -> dict[str, pl.DataFrame]:
    distinct = {event["_id"]["_data"]: event for event in events}
    by_collection: dict[str, list[dict]] = {}
    for event in sorted(distinct.values(), key=lambda item: item["_id"]["_data"]):
        by_collection.setdefault(event["ns"]["coll"], []).append(event)
    expected = {}
    for collection, collection_events in by_collection.items():
        versions: dict[str, list[dict]] = {}
        for event in collection_events:
            key = json_util.dumps(event["documentKey"]["_id"], json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))
            versions.setdefault(key, []).append(event)
        rows = []
        for key, document_events in versions.items():
            for index, event in enumerate(document_events):
                following = document_events[index + 1] if index + 1 < len(document_events) else None
                rows.append(
                    {
                        "__document_id": key,
                        "__event_id": event["_id"]["_data"],
                        "__operation": event["operationType"],
                        "__is_deleted": event["operationType"] == "delete",
                        "__valid_from": datetime.fromtimestamp(event["clusterTime"].time, UTC),
                        "__valid_to": datetime.fromtimestamp(following["clusterTime"].time, UTC) if following else None,
                        "__is_current": following is None,
                    }
                )
        expected[collection] = pl.DataFrame(rows).sort("__event_id")
    return expected


def test_history_has_every_version_with_its_validity(built_lake) -> None:
    expected = _expected_history(built_lake.events)
    for collection in COLLECTIONS:
        actual = built_lake.history[f"stg_mongo__{collection}_history"].select(expected[collection].columns).sort("__event_id")
        assert actual.to_dicts() == expected[collection].to_dicts(), f"{collection} history differs"


def test_late_events_slot_into_the_timeline(built_lake) -> None:
    for event in built_lake.late_events:
        history = built_lake.history[f"stg_mongo__{event['ns']['coll']}_history"]
        row = history.filter(pl.col("__event_id") == event["_id"]["_data"]).row(0, named=True)
        assert not row["__is_current"] and row["__valid_to"] is not None, "a late older event closes at the next version"


def test_the_current_version_matches_the_current_state(built_lake) -> None:
    for collection in COLLECTIONS:
        history = built_lake.history[f"stg_mongo__{collection}_history"]
        current = history.filter(pl.col("__is_current") & ~pl.col("__is_deleted"))
        assert sorted(current["__document_id"]) == sorted(built_lake.state[collection])
