"""One canonical form for documents and ids, computed the same way for MongoDB and the lake.

Bronze and silver keep documents as relaxed Extended JSON (``__full_document``) and ids as
the relaxed Extended JSON of ``_id`` (``__document_id``). MongoDB's side goes through
pymongo's relaxed Extended JSON encoder; both sides are then parsed into plain JSON values,
so key order and number spelling (``1`` or ``1.0``) do not make equal documents differ.
"""

from __future__ import annotations

import json
from typing import Any

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS


def relaxed(value: Any) -> Any:
    """A BSON value (a pymongo document, an ObjectId, ...) as plain JSON values."""
    return json.loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS))


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def id_of(value: Any) -> str:
    """The canonical text of a MongoDB ``_id`` value."""
    return _text(relaxed(value))


def id_from_lake(document_id: str) -> str:
    """The canonical text of a lake ``__document_id`` (relaxed Extended JSON)."""
    return _text(json.loads(document_id))


__all__ = ["id_from_lake", "id_of", "relaxed"]
