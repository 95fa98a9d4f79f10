"""MongoDB against silver, document by document: the project's one proof of equality.

``spark-jobs verify``, the demo's verdict and the chaos harness all prove equality with this
module, so an operator and the tests mean the same thing by "silver equals MongoDB".

Each document becomes one canonical text, and each side of the comparison a map from
canonical id to the SHA-256 of that text; the sides are compared by those maps, so neither
side's documents are held twice, nor both sides' documents at once. The canonical text:

1. the document as BSON values: MongoDB's as pymongo decodes it with the event contract's
   codec options (every date kept, UUIDs as Binary), the lake's relaxed Extended JSON
   (``__full_document``, ``__document_id``) parsed back with the contract's JSON options,
   which read the native codec's text back as exactly those values (tests/native), so
   ``"2025-01-01T00:00:00Z"`` and ``"2025-01-01T00:00:00.000Z"`` are the same date;
2. those values as relaxed Extended JSON (pymongo's encoder, for both sides), parsed into
   plain JSON values with every integral double read as an integer: relaxed Extended JSON
   spells a double 1.0 and an int 1 differently, and the lake must not fail on that;
3. written with sorted keys and no whitespace (key order is not content).

A silver row flagged ``__is_deleted`` is not a document. A silver row without a document
image (``__full_document`` null: only updates without ``fullDocument`` arrived) differs
from MongoDB's document, and an id held by two silver rows counts as differing too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
import polars as pl
from bson import json_util
from deltalake.exceptions import TableNotFoundError
from pymongo.collection import Collection
from pymongo.database import Database
from rich.console import Console
from rich.table import Table

from lakehouse_common.contract import EXTENDED_JSON_OPTIONS
from spark_jobs.lake_tables import CURRENT_STATE_PREFIX, HISTORY_SUFFIX, discover_tables, silver_current_state_uri

EXAMPLES = 10  # ids listed per kind of difference
_BATCH_ROWS = 10_000  # silver rows per batch read; MongoDB's cursor batch size

# MongoDB's documents decoded as the contract decodes BSON (lakehouse_common.contract).
MONGO_CODEC_OPTIONS: bson.CodecOptions[dict[str, Any]] = bson.CodecOptions(
    tz_aware=EXTENDED_JSON_OPTIONS.tz_aware,
    uuid_representation=EXTENDED_JSON_OPTIONS.uuid_representation,
    datetime_conversion=EXTENDED_JSON_OPTIONS.datetime_conversion,
)

Digest = bytes
"""The SHA-256 of a document's canonical text."""


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def canonical_text(value: Any) -> str:
    """A BSON value's canonical text (see the module docstring)."""
    relaxed = json_util.dumps(value, json_options=EXTENDED_JSON_OPTIONS)
    plain = json.loads(relaxed, parse_float=_number)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def from_lake(text: str) -> Any:
    """A lake column's relaxed Extended JSON as BSON values, as the contract reads it back."""
    return json_util.loads(text, json_options=EXTENDED_JSON_OPTIONS)


def id_of(value: Any) -> str:
    """The canonical id of a MongoDB ``_id`` value."""
    return canonical_text(value)


def id_from_lake(document_id: str) -> str:
    """The canonical id of a lake ``__document_id``: the same text as ``id_of`` of that ``_id``."""
    return canonical_text(from_lake(document_id))


def document_hash(document: Any) -> Digest:
    """The SHA-256 of a document's canonical text."""
    return hashlib.sha256(canonical_text(document).encode()).digest()


def lake_document_hash(text: str | None) -> Digest | None:
    """The hash of a lake ``__full_document``; None for a row without a document image."""
    return None if text is None else document_hash(from_lake(text))


@dataclass
class Side:
    """One side's documents of a collection: canonical id -> hash (None: a row without an image)."""

    hashes: dict[str, Digest | None] = field(default_factory=dict)
    rows: int = 0
    repeated: set[str] = field(default_factory=set)  # ids held by more than one row

    def add(self, document_id: str, digest: Digest | None) -> None:
        self.rows += 1
        if document_id in self.hashes:
            self.repeated.add(document_id)
        self.hashes[document_id] = digest


def documents_side(documents: Iterable[Mapping[str, Any]]) -> Side:
    """MongoDB documents (as pymongo returns them) as one side."""
    side = Side()
    for document in documents:
        side.add(id_of(document["_id"]), document_hash(document))
    return side


def mongo_side(collection: Collection[Any]) -> Side:
    """A MongoDB collection's documents, streamed through a cursor, as one side."""
    documents = collection.with_options(codec_options=MONGO_CODEC_OPTIONS).find({}, batch_size=_BATCH_ROWS // 10)
    try:
        return documents_side(documents)
    finally:
        documents.close()


def _silver_batches(uri: str, storage_options: Mapping[str, str] | None) -> Iterator[pl.DataFrame]:
    frame = pl.scan_delta(uri, storage_options=dict(storage_options or {}))
    columns = frame.collect_schema().names()
    if "__is_deleted" in columns:  # flag mode keeps deleted documents: they are not documents
        frame = frame.filter(~pl.col("__is_deleted").fill_null(False))
    # Only the two columns, in batches: silver's documents are never all in memory at once.
    yield from frame.select("__document_id", "__full_document").collect_batches(chunk_size=_BATCH_ROWS)


def silver_side(lake_root: str, collection: str, storage_options: Mapping[str, str] | None = None) -> Side | None:
    """Silver's current state of a collection (``stg_mongo__<collection>``) as one side; None without the table."""
    side = Side()
    try:
        for batch in _silver_batches(silver_current_state_uri(lake_root, collection), storage_options):
            for document_id, text in batch.iter_rows():
                side.add(id_from_lake(document_id) if document_id is not None else "null", lake_document_hash(text))
    except (TableNotFoundError, FileNotFoundError):
        return None
    return side


@dataclass
class StateDiff:
    """One collection's documents in a layer against MongoDB's, by canonical id and hash."""

    mongo: int = 0  # MongoDB's documents
    rows: int = 0  # the layer's documents (rows, deleted ones left out)
    missing: list[str] = field(default_factory=list)  # in MongoDB, not in the layer
    extra: list[str] = field(default_factory=list)  # in the layer, not in MongoDB
    differing: list[str] = field(default_factory=list)  # in both, with a different hash (or several rows)
    table: bool = True  # False: the layer has no table for the collection
    layer: str = "silver"

    @property
    def mismatches(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.differing)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def as_dict(self, examples: int = EXAMPLES) -> dict[str, Any]:
        """Counts, and up to ``examples`` ids of each kind of difference."""
        return {
            "ok": self.ok,
            "mongo": self.mongo,
            self.layer: self.rows,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "differing": len(self.differing),
            "mismatches": self.mismatches,
            f"{self.layer}_table": self.table,
            "examples": {
                "missing": self.missing[:examples],
                "extra": self.extra[:examples],
                "differing": self.differing[:examples],
            },
        }


def compare(mongo: Side, layer: Side | None, *, layer_name: str = "silver") -> StateDiff:
    """How ``layer`` differs from MongoDB's side; a layer without a table misses every document."""
    held = layer or Side()
    diff = StateDiff(mongo=mongo.rows, rows=held.rows, table=layer is not None, layer=layer_name)
    diff.missing = sorted(document_id for document_id in mongo.hashes if document_id not in held.hashes)
    diff.extra = sorted(document_id for document_id in held.hashes if document_id not in mongo.hashes)
    diff.differing = sorted(
        document_id
        for document_id, digest in mongo.hashes.items()
        if document_id in held.hashes and (held.hashes[document_id] != digest or document_id in held.repeated)
    )
    return diff


def silver_collections(lake_root: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """The collections with a silver current-state table (their table names, unescaped when plain)."""
    names = [table.name for table in discover_tables(lake_root, ["silver"], storage_options)]
    return sorted(
        name.removeprefix(CURRENT_STATE_PREFIX)
        for name in names
        if name.startswith(CURRENT_STATE_PREFIX) and not name.endswith(HISTORY_SUFFIX)
    )


def verify_silver(
    database: Database[Any],
    collections: Sequence[str],
    lake_root: str,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, StateDiff]:
    """Per collection: MongoDB's documents (read now) against silver's current state."""
    return {
        collection: compare(mongo_side(database[collection]), silver_side(lake_root, collection, storage_options))
        for collection in collections
    }


def verification_table(results: Mapping[str, Mapping[str, Any]], title: str = "silver against MongoDB") -> Table:
    """Per collection (``StateDiff.as_dict`` shapes): counts, differences and the verdict."""
    table = Table(title=title)
    for column in ("collection", "MongoDB", "silver", "missing in silver", "extra in silver", "differing", "verdict"):
        table.add_column(column, justify="left" if column in ("collection", "verdict") else "right")
    for collection, result in results.items():
        silver = f"{result['silver']:,}" if result.get("silver_table", True) else "no table"
        verdict = "[green]equal[/]" if result["ok"] else "[red]DIFFERENT[/]"
        counts = (f"{result[key]:,}" for key in ("mongo", "missing", "extra", "differing"))
        mongo, missing, extra, differing = counts
        table.add_row(collection, mongo, silver, missing, extra, differing, verdict)
    return table


def describe_differences(collection: str, result: Mapping[str, Any]) -> list[str]:
    """One line per kind of difference of a collection, with its example ids."""
    lines = []
    for kind, label in (("missing", "missing in silver"), ("extra", "extra in silver"), ("differing", "differing")):
        if result[kind]:
            ids = result["examples"][kind]
            more = f" (and {result[kind] - len(ids):,} more)" if result[kind] > len(ids) else ""
            lines.append(f"{collection}: {result[kind]:,} {label}: {', '.join(ids)}{more}")
    return lines


def render(console: Console, results: Mapping[str, Mapping[str, Any]]) -> None:
    """The table, then the ids of every difference."""
    console.print(verification_table(results))
    for collection, result in results.items():
        for line in describe_differences(collection, result):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


__all__ = [
    "EXAMPLES",
    "MONGO_CODEC_OPTIONS",
    "Digest",
    "Side",
    "StateDiff",
    "canonical_text",
    "compare",
    "describe_differences",
    "document_hash",
    "documents_side",
    "from_lake",
    "id_from_lake",
    "id_of",
    "lake_document_hash",
    "mongo_side",
    "render",
    "silver_collections",
    "silver_side",
    "verification_table",
    "verify_silver",
]
