"""Silver and gold in the lake: where their tables are, and how many rows they hold.

dbt writes every silver table to ``<lake root>/silver/<model>`` and every gold table to
``<lake root>/gold/<model>`` (the models' ``location_root``), next to bronze's
``<lake root>/bronze/<db>/<collection>`` (``lakehouse_common.lake``). Silver's current state
of a collection is the model ``stg_mongo__<collection>``, its history
``stg_mongo__<collection>_history``. Counting reads the tables with Polars: no Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
from deltalake.exceptions import DeltaError
from pyarrow import fs as pafs

from lakehouse_common.lake import path_segment
from lakehouse_common.object_store import arrow_filesystem

CURRENT_STATE_PREFIX = "stg_mongo__"
HISTORY_SUFFIX = "_history"
_MAX_DEPTH = 3  # bronze/<db>/<collection>


@dataclass(frozen=True)
class LakeTable:
    """A Delta table in the lake: its layer, its path below the layer and its URI."""

    layer: str
    name: str
    uri: str

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"


def layer_table_uri(root: str, layer: str, name: str) -> str:
    return "/".join([root.rstrip("/"), layer, path_segment(name)])


def silver_current_state_uri(root: str, collection: str) -> str:
    return layer_table_uri(root, "silver", CURRENT_STATE_PREFIX + collection)


def silver_history_uri(root: str, collection: str) -> str:
    return layer_table_uri(root, "silver", CURRENT_STATE_PREFIX + collection + HISTORY_SUFFIX)


def gold_table_uri(root: str, name: str) -> str:
    return layer_table_uri(root, "gold", name)


def discover_tables(lake_root: str, layers: list[str], storage_options: Mapping[str, str] | None = None) -> list[LakeTable]:
    """Every Delta table under ``<lake_root>/<layer>`` for the given layers, sorted."""
    filesystem, root = arrow_filesystem(lake_root, storage_options or {})
    scheme = lake_root.split("://", 1)[0] + "://" if "://" in lake_root else ""
    tables: list[LakeTable] = []
    for layer in layers:
        base = f"{root.rstrip('/')}/{layer}"
        pending = [(base, 0)]
        while pending:
            directory, depth = pending.pop()
            entries = filesystem.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
            children = [entry for entry in entries if entry.type == pafs.FileType.Directory]
            if any(child.base_name == "_delta_log" for child in children):
                tables.append(LakeTable(layer, directory[len(base) + 1 :], scheme + directory))
                continue
            if depth < _MAX_DEPTH:
                pending.extend((child.path, depth + 1) for child in children)
    return sorted(tables, key=lambda table: table.key)


def row_count(uri: str, storage_options: Mapping[str, str] | None = None) -> int:
    """Rows in a Delta table, deletion vectors applied (silver's merges write them).

    Polars applies them; deltalake's pyarrow datasets refuse such tables, and its ``count()``
    adds up the files' row counts without subtracting deleted rows.
    """
    frame = pl.scan_delta(uri, storage_options=dict(storage_options or {})).select(pl.len()).collect()
    return int(frame.item())


def layer_counts(
    lake_root: str, storage_options: Mapping[str, str] | None = None, *, skip_uncommitted: bool = False
) -> dict[str, dict[str, int]]:
    """Rows per table: silver current state and history keyed by collection, gold by table.

    ``skip_uncommitted`` leaves out tables with a log but no commit yet (dbt creating them
    right now, or a failed create) instead of raising, for counts taken while dbt runs.
    """
    counts: dict[str, dict[str, int]] = {"silver": {}, "silver_history": {}, "gold": {}}
    for table in discover_tables(lake_root, ["silver", "gold"], storage_options):
        try:
            rows = row_count(table.uri, storage_options)
        except DeltaError:
            if skip_uncommitted:
                continue
            raise
        if table.layer == "gold":
            counts["gold"][table.name] = rows
        elif table.name.startswith(CURRENT_STATE_PREFIX):
            collection = table.name.removeprefix(CURRENT_STATE_PREFIX)
            if collection.endswith(HISTORY_SUFFIX):
                counts["silver_history"][collection.removesuffix(HISTORY_SUFFIX)] = rows
            else:
                counts["silver"][collection] = rows
    return counts


__all__ = [
    "CURRENT_STATE_PREFIX",
    "HISTORY_SUFFIX",
    "LakeTable",
    "discover_tables",
    "gold_table_uri",
    "layer_counts",
    "layer_table_uri",
    "row_count",
    "silver_current_state_uri",
    "silver_history_uri",
]
