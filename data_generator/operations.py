"""The changes the generator makes, independent of where they are applied.

The same operations drive MongoDB (``data_generator.mongo``) and the offline change-event
stream (``data_generator.change_events``), so both produce one history. Every operation
carries the document as it is after the change: the generator never mutates a document
in place, so an operation's ``document`` stays a faithful post-image however long it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Insert:
    collection: str
    document: dict[str, Any]
    at: datetime

    @property
    def document_id(self) -> Any:
        return self.document["_id"]


@dataclass(frozen=True, slots=True)
class Update:
    """``$set``, ``$unset`` and ``$push`` of single values on top-level fields."""

    collection: str
    document_id: Any
    document: dict[str, Any]
    at: datetime
    set_fields: dict[str, Any] = field(default_factory=dict)
    unset_fields: tuple[str, ...] = ()
    push_fields: dict[str, Any] = field(default_factory=dict)

    def mongo_update(self) -> dict[str, Any]:
        """The update document for ``update_one``."""
        update: dict[str, Any] = {}
        if self.set_fields:
            update["$set"] = self.set_fields
        if self.unset_fields:
            update["$unset"] = {name: "" for name in self.unset_fields}
        if self.push_fields:
            update["$push"] = self.push_fields
        return update

    def update_description(self) -> dict[str, Any]:
        """``updateDescription`` as MongoDB reports it: a push is a set of the new array index."""
        updated = dict(self.set_fields)
        for name, value in self.push_fields.items():
            updated[f"{name}.{len(self.document[name]) - 1}"] = value
        return {"updatedFields": updated, "removedFields": list(self.unset_fields), "truncatedArrays": []}


@dataclass(frozen=True, slots=True)
class Replace:
    collection: str
    document: dict[str, Any]
    at: datetime

    @property
    def document_id(self) -> Any:
        return self.document["_id"]


@dataclass(frozen=True, slots=True)
class Delete:
    collection: str
    document_id: Any
    at: datetime


Operation = Insert | Update | Replace | Delete

__all__ = ["Delete", "Insert", "Operation", "Replace", "Update"]
