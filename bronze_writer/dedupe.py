"""Exact de-duplication: a record is dropped only for what the table provably holds.

Two filters, both exact and both counted (ingest log, metrics):

1. **Offsets.** A record at an offset the table already landed for its partition (the Delta
   app transaction) is a re-read of that record. Offsets continue from what bronze landed
   unless Kafka was replaced under it, which bronze_writer.offsets detects before reading.
2. **Event ids.** A record is a duplicate when the table already holds its exact
   ``__event_id`` (any partition), or when the same id appears earlier in the batch.

Ids above everything a partition ever landed (its mark) need no lookup: that is the common
case and costs nothing. That rests on a document's events all going to one partition (its
key's); a record of no document (a snapshot-complete marker, a transaction-end record, a drop
or rename) has no key, so a republished one may land in another partition, below whose mark
it is not: those rows, a few per collection, are always looked up. Ids at or below the mark
(re-deliveries, replays, republished delivery failures, a forged id far above the others)
are looked up in the table itself: the files' ``__event_id`` min/max statistics rule out
almost every file, and the ids of a file that must be read are kept, since Delta files never
change (bounded cache, least recently used first). So one record with a huge id costs one
read of its file, not a read of the table per batch.

deltalake 1.6.6 truncates string statistics to 64 characters, the minimum to a prefix and
the maximum rounded up (measured); the comparisons below stay right for truncated bounds
of either kind, and a file without statistics is always read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl
from deltalake import DeltaTable

EVENT_ID = "__event_id"
DOCUMENT_KEY = "__document_key"  # null: a record of no document, published without a key
_MIN = f"min.{EVENT_ID}"
_MAX = f"max.{EVENT_ID}"


@dataclass
class Lookup:
    """Which of the asked ids a table holds, and what it took to know."""

    held: pl.Series
    files_read: int = 0
    files_searched: int = 0


class EventIdIndex:
    """The event ids a table's files hold, read on demand; shared by every table of a writer."""

    def __init__(self, max_cached_bytes: int) -> None:
        self.max_cached_bytes = max_cached_bytes
        self._files: OrderedDict[str, pl.Series] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def lookup(self, table: DeltaTable, ids: pl.Series, storage_options: Mapping[str, str] | None = None) -> Lookup:
        """The ids of ``ids`` that the loaded snapshot of ``table`` holds (exact)."""
        wanted = ids.drop_nulls().unique().sort()
        if wanted.is_empty():
            return Lookup(wanted)
        uris = candidate_files(table, wanted)
        held: list[pl.Series] = []
        files_read = 0
        for uri in uris:
            file_ids = self._cached(uri)
            if file_ids is None:
                file_ids = _read_ids(uri, storage_options)
                files_read += 1
                self._remember(uri, file_ids)
            held.append(wanted.filter(contains(file_ids, wanted)))
        found = pl.concat(held).unique() if held else wanted.clear()
        return Lookup(found, files_read, len(uris))

    def _cached(self, uri: str) -> pl.Series | None:
        with self._lock:
            ids = self._files.get(uri)
            if ids is not None:
                self._files.move_to_end(uri)
            return ids

    def _remember(self, uri: str, ids: pl.Series) -> None:
        size = int(ids.estimated_size())
        if size > self.max_cached_bytes:
            return
        with self._lock:
            if uri in self._files:
                return
            self._files[uri] = ids
            self._bytes += size
            while self._bytes > self.max_cached_bytes and self._files:
                _uri, evicted = self._files.popitem(last=False)
                self._bytes -= int(evicted.estimated_size())


def _read_ids(uri: str, storage_options: Mapping[str, str] | None) -> pl.Series:
    frame = pl.read_parquet(uri, columns=[EVENT_ID], storage_options=dict(storage_options) if storage_options else None)
    return frame[EVENT_ID].drop_nulls().unique().sort()


def contains(sorted_haystack: pl.Series, needles: pl.Series) -> pl.Series:
    """For each needle, whether the sorted haystack holds it (binary search, vectorized)."""
    if sorted_haystack.is_empty():
        return pl.Series([False] * len(needles))
    index = sorted_haystack.search_sorted(needles).clip(upper_bound=len(sorted_haystack) - 1)
    return sorted_haystack.gather(index) == needles


def candidate_files(table: DeltaTable, wanted: pl.Series) -> list[str]:
    """The files of the snapshot whose ``__event_id`` statistics admit one of the sorted ``wanted`` ids.

    A file may hold id x when ``min <= x`` and ``x[:len(max)] <= max``: true for exact
    bounds, for a truncated minimum (a prefix, lower still) and for a truncated maximum
    whether rounded up or merely cut. Among the ids at or above a file's minimum the
    smallest has the smallest prefix, so one binary search per file decides.
    """
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return []
    uris = _file_uris(table, actions["path"].to_list())
    if _MIN not in actions.columns or _MAX not in actions.columns:
        return uris
    count = len(wanted)
    first = wanted.search_sorted(actions[_MIN].fill_null(""), side="left")
    smallest = wanted.gather(first.clip(upper_bound=count - 1))
    frame = pl.DataFrame({"uri": uris, "first": first, "smallest": smallest, "max": actions[_MAX]})
    admitted = frame.filter(
        pl.col("max").is_null()
        | ((pl.col("first") < count) & (pl.col("smallest").str.slice(0, pl.col("max").str.len_chars()) <= pl.col("max")))
    )
    return admitted["uri"].to_list()


def _file_uris(table: DeltaTable, paths: list[str]) -> list[str]:
    """Full URIs of the add actions' paths (``file_uris`` lists the same files in the same order)."""
    uris = table.file_uris()
    if len(uris) == len(paths) and all(uri.endswith(path.rsplit("/", 1)[-1]) for uri, path in zip(uris, paths, strict=True)):
        return uris
    by_name = {uri.rsplit("/", 1)[-1]: uri for uri in uris}
    return [by_name[path.rsplit("/", 1)[-1]] for path in paths]


@dataclass
class Pending:
    """The rows of one topic's batch a table does not hold yet, and what was filtered, by reason."""

    frame: pl.DataFrame
    advancing: dict[int, int]  # partition -> last offset of the batch, for partitions that move forward
    already_landed: int  # records at offsets the table had landed (re-reads)
    duplicates: int  # records whose event id the table holds, or that repeat an earlier record of the batch
    looked_up: int  # distinct ids at or below their partition's mark, looked up in the table
    files_read: int
    rereads: dict[int, tuple[int, int, int]]  # partition -> (count, first offset, last offset) of the re-reads


def pending_rows(
    frame: pl.DataFrame,
    last_offsets: Mapping[int, int],
    landed: Mapping[int, int | None],
    marks: Mapping[int, str],
    lookup: Callable[[pl.Series], Lookup],
) -> Pending:
    """Filter a decoded frame (rows in offset order per partition) down to what is new to the table.

    ``landed`` is each partition's last landed offset (None: nothing), ``marks`` the highest
    event id each partition ever landed, ``lookup`` asks the table which ids it holds.
    """
    advancing = {
        partition: last
        for partition, last in last_offsets.items()
        if landed.get(partition) is None or last > landed[partition]  # type: ignore[operator]
    }
    landed_offset = pl.col("__kafka_partition").replace_strict(
        {partition: -1 if offset is None else offset for partition, offset in landed.items()},
        default=-1,
        return_dtype=pl.Int64,
    )
    reread = pl.col("__kafka_offset") <= landed_offset
    rereads: dict[int, tuple[int, int, int]] = {}
    flagged = frame.with_columns(reread.alias("__reread"))
    if flagged["__reread"].any():
        summary = (
            flagged.filter("__reread")
            .group_by("__kafka_partition")
            .agg(pl.len(), pl.col("__kafka_offset").min().alias("first"), pl.col("__kafka_offset").max().alias("last"))
        )
        rereads = {partition: (count, first, last) for partition, count, first, last in summary.iter_rows()}
        frame = flagged.filter(~pl.col("__reread")).drop("__reread")
    already_landed = sum(count for count, _first, _last in rereads.values())

    mark = pl.col("__kafka_partition").replace_strict(dict(marks), default="", return_dtype=pl.String)
    flags = frame.select(
        pl.col(EVENT_ID).is_first_distinct().alias("first"),
        ((pl.col(EVENT_ID) <= mark) | pl.col(DOCUMENT_KEY).is_null()).alias("below"),
    )
    keep = flags["first"]
    looked_up = files_read = 0
    candidates = frame.filter(flags["first"] & flags["below"])[EVENT_ID]
    if not candidates.is_empty():
        found = lookup(candidates)
        looked_up, files_read = candidates.n_unique(), found.files_read
        if not found.held.is_empty():
            keep = keep & ~(flags["below"] & contains(found.held.sort(), frame[EVENT_ID]))
    kept = frame.filter(keep) if not keep.all() else frame
    return Pending(kept, advancing, already_landed, frame.height - kept.height, looked_up, files_read, rereads)


__all__ = ["EventIdIndex", "Lookup", "Pending", "candidate_files", "contains", "pending_rows"]
