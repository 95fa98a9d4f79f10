"""SCD type 2: one version per event, valid from its cluster time to the next event's, in event-id order."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from bson import json_util

from data_generator import COLLECTIONS
from lakehouse_common.contract import EXTENDED_JSON_OPTIONS, absence_position


def _with_absences(document_id: str, events: list[dict], markers: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The document's versions in id order: its events, and a version closing it at each absence
    position it was alive just below (for a copy's marker: and had no event above)."""
    timeline = sorted(
        [(event["_id"]["_data"], event) for event in events]
        + [(f"{position}!{document_id}", marker) for position, marker in markers],
        key=lambda item: item[0],
    )
    last_event_id = events[-1]["_id"]["_data"]
    versions: list[tuple[str, dict]] = []
    alive = False
    for version_id, event in timeline:
        if "documentKey" in event:
            versions.append((version_id, event))
            alive = event["operationType"] != "delete"
        elif alive and (event["operationType"] != "snapshotComplete" or last_event_id < version_id):
            versions.append((version_id, event))
            alive = False
    return versions


def _expected_history(events: list[dict]) -> dict[str, pl.DataFrame]:
    distinct = {event["_id"]["_data"]: event for event in events}
    by_collection: dict[str, list[dict]] = {}
    markers: dict[str, list[tuple[str, dict]]] = {}
    for event in sorted(distinct.values(), key=lambda item: item["_id"]["_data"]):
        position = absence_position(event["_id"]["_data"], event["operationType"])
        if position is not None:
            markers.setdefault(event["ns"]["coll"], []).append((position, event))
        elif "documentKey" in event:
            by_collection.setdefault(event["ns"]["coll"], []).append(event)
    expected = {}
    for collection, collection_events in by_collection.items():
        per_document: dict[str, list[dict]] = {}
        for event in collection_events:
            key = json_util.dumps(event["documentKey"]["_id"], json_options=EXTENDED_JSON_OPTIONS, separators=(",", ":"))
            per_document.setdefault(key, []).append(event)
        rows = []
        for key, document_events in per_document.items():
            versions = _with_absences(key, document_events, markers.get(collection, []))
            for index, (version_id, event) in enumerate(versions):
                following = versions[index + 1][1] if index + 1 < len(versions) else None
                rows.append(
                    {
                        "__document_id": key,
                        "__event_id": version_id,
                        "__operation": event["operationType"],
                        "__is_deleted": event["operationType"] == "delete" or "documentKey" not in event,
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


def _current_versions(history: pl.DataFrame, identifiers: list[str]) -> dict[str, dict]:
    current = history.filter(pl.col("__is_current") & pl.col("__document_id").is_in(identifiers))
    return {row["__document_id"]: row for row in current.iter_rows(named=True)}


def test_a_re_snapshot_closes_the_documents_it_no_longer_found(built_lake) -> None:
    history = built_lake.history["stg_mongo__web_sessions_history"]
    gone = built_lake.absence.unseen_deleted_session_ids
    current = _current_versions(history, gone)
    assert sorted(current) == sorted(gone)
    for identifier, version in current.items():
        assert version["__operation"] == "snapshotComplete" and version["__is_deleted"]
        assert version["__event_id"].endswith(f".!{identifier}")
        before = history.filter((pl.col("__document_id") == identifier) & ~pl.col("__is_current"))
        assert before["__valid_to"].max() == version["__valid_from"], "the last version closes where absence begins"
    assert not built_lake.silver["stg_mongo__web_sessions"]["__document_id"].is_in(gone).any()


def test_a_drop_closes_every_document_and_inserted_again_they_come_back(built_lake) -> None:
    history = built_lake.history["stg_mongo__social_engagement_history"]
    dropped = _current_versions(history, built_lake.absence.dropped_post_ids)
    assert {row["__operation"] for row in dropped.values()} == {"drop"}
    assert len(dropped) == len(built_lake.absence.dropped_post_ids)
    reinserted = _current_versions(history, built_lake.absence.reinserted_post_ids)
    assert {row["__operation"] for row in reinserted.values()} == {"insert"}
    closed_by_drop = history.filter(
        pl.col("__document_id").is_in(built_lake.absence.reinserted_post_ids) & (pl.col("__operation") == "drop")
    )
    assert closed_by_drop.height == len(built_lake.absence.reinserted_post_ids), "each was closed by the drop first"
    silver = built_lake.silver["stg_mongo__social_engagement"]["__document_id"]
    assert not silver.is_in(built_lake.absence.dropped_post_ids).any()
    assert set(built_lake.absence.reinserted_post_ids) <= set(silver)
