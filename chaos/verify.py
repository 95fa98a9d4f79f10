"""The proof after the chaos: every write in bronze exactly once, and bronze replaying to MongoDB.

Exactly once is checked per write, not by totals: each acknowledged write must be the
change event of exactly one distinct event id in bronze (``chaos.bronze.write_key``), and
no event id may be landed twice. The final state is checked document by document: bronze's
events of each document, in event-id order (the project's ordering rule), end in MongoDB's
current document, or in a delete when MongoDB no longer has it, compared by canonical id and
document hash as ``spark-jobs verify`` compares silver (``spark_jobs.verify``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.bronze import CHANGE_OPERATIONS, WriteKey, write_key
from chaos.workload import Write
from spark_jobs.verify import Side, id_from_lake, lake_document_hash

DOCUMENT_OPERATIONS = (*CHANGE_OPERATIONS, "snapshot")
EXAMPLES = 20  # how many offending items a report lists


def expected_key(write: Write) -> WriteKey:
    if write.kind.value == "delete":
        return ("delete", write.collection, write.document_id)
    return (write.kind.value, write.collection, write.seq)


@dataclass
class DeliveryCheck:
    """How bronze's change events compare with the workload's acknowledged writes."""

    writes: int = 0
    change_events: dict[str, int] = field(default_factory=dict)  # distinct change-event ids per collection
    writes_by_collection: dict[str, int] = field(default_factory=dict)
    lost: list[Write] = field(default_factory=list)
    duplicate_rows: dict[str, int] = field(default_factory=dict)  # event id -> extra rows with that id
    repeated_writes: dict[WriteKey, list[str]] = field(default_factory=dict)  # one write under several event ids
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # change events that match no write

    @property
    def duplicated(self) -> int:
        """Rows beyond the first per event id, plus writes landed under more than one event id."""
        return sum(self.duplicate_rows.values()) + sum(len(ids) - 1 for ids in self.repeated_writes.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "writes_by_collection": self.writes_by_collection,
            "change_events": self.change_events,
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            "unexpected": len(self.unexpected),
            "examples": {
                "lost": [
                    {"seq": w.seq, "collection": w.collection, "operation": w.kind.value, "document_id": w.document_id}
                    for w in self.lost[:EXAMPLES]
                ],
                "duplicate_event_ids": dict(list(self.duplicate_rows.items())[:EXAMPLES]),
                "repeated_writes": [
                    {"write": list(key), "event_ids": ids} for key, ids in list(self.repeated_writes.items())[:EXAMPLES]
                ],
                "unexpected": self.unexpected[:EXAMPLES],
            },
        }


def check_delivery(writes: Iterable[Write], events: Mapping[str, list[dict[str, Any]]]) -> DeliveryCheck:
    """Match every write with its change event in bronze (``events``: rows per collection)."""
    writes = list(writes)
    check = DeliveryCheck(writes=len(writes))
    check.writes_by_collection = dict(Counter(write.collection for write in writes))
    expected = {expected_key(write): write for write in writes}
    found: dict[WriteKey, list[str]] = defaultdict(list)
    for collection, rows in events.items():
        copies = Counter(row["__event_id"] for row in rows)
        for event_id, count in copies.items():
            if count > 1:
                check.duplicate_rows[event_id] = count - 1
        seen: set[str] = set()
        changes = 0
        for row in rows:
            event_id = row["__event_id"]
            if event_id in seen or row["__operation"] not in CHANGE_OPERATIONS:
                continue
            seen.add(event_id)
            changes += 1
            key = write_key(collection, row)
            if key is None or key not in expected:
                check.unexpected.append(
                    {
                        "collection": collection,
                        "event_id": event_id,
                        "operation": row["__operation"],
                        "document_id": row["__document_id"],
                    }
                )
                continue
            found[key].append(event_id)
        check.change_events[collection] = changes
    check.lost = sorted((write for key, write in expected.items() if key not in found), key=lambda write: write.seq)
    check.repeated_writes = {key: ids for key, ids in found.items() if len(ids) > 1}
    return check


def replay(rows: Iterable[dict[str, Any]]) -> Side:
    """A collection's documents as bronze's events say they are: per document, the last event by event id."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["__operation"] not in DOCUMENT_OPERATIONS or not row["__document_id"]:
            continue
        document_id = id_from_lake(row["__document_id"])
        current = latest.get(document_id)
        if current is None or row["__event_id"] > current["__event_id"]:
            latest[document_id] = row
    state = Side()
    for document_id, row in latest.items():
        if row["__operation"] != "delete":
            state.add(document_id, lake_document_hash(row["__full_document"] or None))
    return state


__all__ = [
    "DeliveryCheck",
    "check_delivery",
    "expected_key",
    "replay",
]
