"""The generator's operations as MongoDB change events, without MongoDB.

Events follow MongoDB's documented shapes (and the project's event contract for
snapshot records), with BSON types, so they can be encoded exactly as cdc_service would
(``lakehouse_common.contract``) or landed directly in bronze tables
(``data_generator.bronze``). Resume tokens are the cluster time as 16 hex digits, like the
MongoDB stand-in's, so event ids order the way real ones do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from bson import Timestamp

from data_generator.operations import Delete, Insert, Operation, Replace, Update
from lakehouse_common.contract import Operation as OperationType
from lakehouse_common.contract import snapshot_complete_event_id, snapshot_event_id


def resume_token(cluster_time: Timestamp) -> str:
    """The event id of a change at ``cluster_time`` (fixed-width hex, ordered like the time)."""
    return f"{(cluster_time.time << 32) | cluster_time.inc:016x}"


class ChangeEventEncoder:
    """Turns operations into change events with strictly increasing cluster times.

    ``update_lookup`` mirrors the change stream's ``fullDocument: "updateLookup"``: with it,
    update events carry the document after the change; without it they carry only the
    ``updateDescription``, as MongoDB sends them by default.
    """

    def __init__(self, database: str, *, update_lookup: bool = True) -> None:
        self.database = database
        self.update_lookup = update_lookup
        self._last = Timestamp(0, 0)

    @property
    def last_token(self) -> str:
        return resume_token(self._last)

    def _tick(self, at: datetime) -> Timestamp:
        seconds = max(int(at.timestamp()), self._last.time)
        increment = self._last.inc + 1 if seconds == self._last.time else 1
        self._last = Timestamp(seconds, increment)
        return self._last

    def _envelope(
        self, operation_type: str, collection: str, cluster_time: Timestamp, event_id: str, at: datetime
    ) -> dict[str, Any]:
        return {
            "_id": {"_data": event_id},
            "operationType": operation_type,
            "clusterTime": cluster_time,
            "wallTime": at,
            "ns": {"db": self.database, "coll": collection},
        }

    def event(self, operation: Operation) -> dict[str, Any]:
        """One change event for one operation."""
        cluster_time = self._tick(operation.at)
        event_type = {Insert: "insert", Update: "update", Replace: "replace", Delete: "delete"}[type(operation)]
        event = self._envelope(event_type, operation.collection, cluster_time, resume_token(cluster_time), operation.at)
        event["documentKey"] = {"_id": operation.document_id}
        if isinstance(operation, Update):
            event["updateDescription"] = operation.update_description()
            if self.update_lookup:
                event["fullDocument"] = operation.document
        elif isinstance(operation, (Insert, Replace)):
            event["fullDocument"] = operation.document
        return event

    def events(self, operations: Iterable[Operation]) -> Iterator[dict[str, Any]]:
        for operation in operations:
            yield self.event(operation)

    def snapshot(self, inserts: Iterable[Insert], *, attempt: int = 0) -> Iterator[dict[str, Any]]:
        """Snapshot records of documents, as cdc_service's initial copy publishes them.

        Their ids are ``<position>.<attempt>.<ordinal>`` with position the last token issued so far,
        so they sort after every earlier event and before every later one.
        """
        position: str | None = None
        for ordinal, insert in enumerate(inserts):
            if position is None:
                cluster_time = self._tick(insert.at)
                position = resume_token(cluster_time)
            event = self._envelope(
                OperationType.SNAPSHOT.value,
                insert.collection,
                self._last,
                snapshot_event_id(position, ordinal, attempt=attempt),
                insert.at,
            )
            event["documentKey"] = {"_id": insert.document_id}
            event["fullDocument"] = insert.document
            yield event

    def full_copy(self, collection: str, inserts: list[Insert], *, attempt: int, at: datetime) -> list[dict[str, Any]]:
        """A re-snapshot of a whole collection: its records, then its snapshot-complete marker."""
        position_time = self._tick(at)
        position = resume_token(position_time)
        records = []
        for ordinal, insert in enumerate(inserts, start=1):
            record = self._envelope(
                OperationType.SNAPSHOT.value, collection, position_time, snapshot_event_id(position, ordinal, attempt=attempt), at
            )
            records.append(record | {"documentKey": {"_id": insert.document_id}, "fullDocument": insert.document})
        marker = self._envelope(
            OperationType.SNAPSHOT_COMPLETE.value, collection, position_time, snapshot_complete_event_id(position, attempt), at
        )
        marker["snapshot"] = {"position": position, "attempt": attempt, "documents": len(records)}
        return [*records, marker]

    def drop(self, collection: str, at: datetime) -> dict[str, Any]:
        """The ``drop`` event of a collection (no documentKey)."""
        return self._envelope(OperationType.DROP.value, collection, self._tick(at), resume_token(self._last), at)


__all__ = ["ChangeEventEncoder", "resume_token"]
