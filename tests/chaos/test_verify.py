"""The proof's rules on hand-made bronze rows: a lost, a duplicated and a repeated write are caught."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from chaos.verify import check_delivery, replay
from chaos.workload import Write, WriteKind
from spark_jobs.verify import compare, document_hash, documents_side, id_of

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _row(
    event_id: str,
    operation: str,
    document_id: Any,
    document: dict[str, Any] | None = None,
    updated: dict[str, Any] | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    return {
        "__event_id": event_id,
        "__operation": operation,
        "__document_id": json.dumps(document_id),
        "__full_document": json.dumps(document) if document is not None else None,
        "__update_description": json.dumps({"updatedFields": updated, "removedFields": []}) if updated is not None else None,
        "__ingested_at": NOW,
        "__kafka_topic": "cdc.db.people",
        "__kafka_partition": 0,
        "__kafka_offset": offset,
    }


def _writes() -> list[Write]:
    return [
        Write(1, "people", WriteKind.INSERT, id_of("a"), 0.0),
        Write(2, "people", WriteKind.UPDATE, id_of("a"), 0.0),
        Write(3, "people", WriteKind.INSERT, id_of("b"), 0.0),
        Write(4, "people", WriteKind.REPLACE, id_of("b"), 0.0),
        Write(5, "people", WriteKind.DELETE, id_of("a"), 0.0),
    ]


def _clean_rows() -> list[dict[str, Any]]:
    return [
        _row("e1", "insert", "a", {"_id": "a", "seq": 1}),
        # updateLookup: the update's image already shows a later state; its own seq is in updatedFields
        _row("e2", "update", "a", {"_id": "a", "seq": 9}, updated={"seq": 2}),
        _row("e3", "insert", "b", {"_id": "b", "seq": 3}),
        _row("e4", "replace", "b", {"_id": "b", "seq": 4, "x": 1.0}),
        _row("e5", "delete", "a"),
    ]


def test_every_write_once_is_clean() -> None:
    check = check_delivery(_writes(), {"people": _clean_rows()})
    assert (check.lost, check.duplicated, check.unexpected) == ([], 0, [])
    assert check.change_events == {"people": 5}


def test_a_missing_event_is_a_lost_write() -> None:
    rows = [row for row in _clean_rows() if row["__event_id"] != "e2"]
    check = check_delivery(_writes(), {"people": rows})
    assert [write.seq for write in check.lost] == [2]


def test_a_row_landed_twice_is_a_duplicate() -> None:
    rows = [*_clean_rows(), _row("e3", "insert", "b", {"_id": "b", "seq": 3}, offset=7)]
    check = check_delivery(_writes(), {"people": rows})
    assert check.duplicate_rows == {"e3": 1}
    assert check.duplicated == 1 and check.lost == []


def test_one_write_under_two_event_ids_is_a_duplicate() -> None:
    rows = [*_clean_rows(), _row("e3-again", "insert", "b", {"_id": "b", "seq": 3})]
    check = check_delivery(_writes(), {"people": rows})
    assert list(check.repeated_writes.values()) == [["e3", "e3-again"]]
    assert check.duplicated == 1


def test_an_event_matching_no_write_is_unexpected() -> None:
    rows = [*_clean_rows(), _row("e6", "insert", "c", {"_id": "c", "seq": 99})]
    check = check_delivery(_writes(), {"people": rows})
    assert [item["event_id"] for item in check.unexpected] == ["e6"]


def test_replay_takes_the_last_event_by_event_id_not_by_arrival() -> None:
    rows = list(reversed(_clean_rows()))
    state = replay(rows)
    assert state.hashes == {id_of("b"): document_hash({"_id": "b", "seq": 4, "x": 1.0})}
    mongo = documents_side([{"_id": "b", "seq": 4, "x": 1}])
    assert compare(mongo, state, layer_name="bronze").mismatches == 0  # 1 and 1.0 are the same number in both canonical forms


def test_replay_leaves_an_image_missing_where_bronze_has_none() -> None:
    rows = [*_clean_rows(), _row("e6", "update", "b", None, updated={"seq": 6})]
    diff = compare(documents_side([{"_id": "b", "seq": 6}]), replay(rows), layer_name="bronze")
    assert diff.differing == [id_of("b")] and diff.as_dict()["bronze"] == 1
