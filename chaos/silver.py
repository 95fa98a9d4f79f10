"""Silver against MongoDB, document by document: the harness's one silver comparison.

This is deliberately one small function: issue 11 §8 adds ``lakehouse verify`` (MongoDB
against silver by a hash of each document's canonical form), and once that is on main this
module's ``compare_silver`` is to be replaced by a call to it, so the harness and operators
prove equality the same way. Until then it reads each collection's silver current state
(``stg_mongo__<collection>``: ``__document_id`` and the lossless ``__full_document``) and
compares it with MongoDB's documents in the canonical form of ``chaos.canonical``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import polars as pl
from deltalake.exceptions import TableNotFoundError

from chaos.canonical import id_from_lake
from chaos.verify import Documents, StateDiff, compare
from spark_jobs.lake_tables import silver_current_state_uri


def _silver_documents(lake_root: str, collection: str) -> Documents | None:
    uri = silver_current_state_uri(lake_root, collection)
    try:
        frame = pl.scan_delta(uri)
        columns = frame.collect_schema().names()
        wanted = ["__document_id", "__full_document"] + (["__is_deleted"] if "__is_deleted" in columns else [])
        rows = frame.select(wanted).collect().to_dicts()
    except (TableNotFoundError, FileNotFoundError, OSError):
        return None
    documents: Documents = {}
    for row in rows:
        if row.get("__is_deleted"):
            continue
        text = row["__full_document"]
        documents[id_from_lake(row["__document_id"])] = json.loads(text) if text else None
    return documents


def compare_silver(lake_root: str, mongo: Mapping[str, Documents]) -> dict[str, StateDiff]:
    """Per collection of ``mongo`` (canonical documents by id): how silver's current state differs.

    A silver table that does not exist counts every MongoDB document as missing.
    """
    diffs = {}
    for collection, documents in mongo.items():
        silver = _silver_documents(lake_root, collection)
        diffs[collection] = compare(documents, silver if silver is not None else {})
    return diffs


__all__ = ["compare_silver"]
