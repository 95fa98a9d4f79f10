"""A bronze commit's data files: Parquet written by pyarrow, described as Delta add actions.

Why not deltalake's own writer: for the same Arrow data, pyarrow's Parquet writer took 2.2 µs
of CPU per event against deltalake's 5.1 (1,000 events of 1.1 KB at a time, measured on
this project's machine), and it streams row groups to the file instead of holding the
encoded file in memory. The commit itself stays deltalake's (``create_write_transaction``,
with the app transactions and ``max_commit_retries=0``): only the files are ours, and
each file's statistics come from the Parquet writer's own metadata, so they are exact.

Statistics follow what deltalake writes, so readers and the exact dedupe
(bronze_writer.dedupe, which needs ``__event_id`` min/max) see the same thing: the first
``delta.dataSkippingNumIndexedCols`` (32) columns, or ``delta.dataSkippingStatsColumns``,
except the payload columns (no statistics in their Parquet either); strings cut to 64
characters, the maximum then rounded up so it stays an upper bound; timestamps in
milliseconds, the minimum rounded down and the maximum up; no min/max for a double column
holding an infinity (JSON cannot say it).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

from lakehouse_common.object_store import arrow_filesystem

STRING_STATISTICS_LENGTH = 64
DICTIONARY_SAMPLE_ROWS = 1024
DEFAULT_INDEXED_COLUMNS = 32
# Parquet codec names as pyarrow spells them, from the settings' (deltalake's) names.
_CODECS = {"SNAPPY": "snappy", "ZSTD": "zstd", "LZ4_RAW": "lz4", "GZIP": "gzip", "UNCOMPRESSED": "none"}
_SUFFIXES = {"snappy": "snappy.", "zstd": "zstd.", "lz4": "lz4raw.", "gzip": "gz.", "none": ""}
_MAX_CODE_POINT = 0x10FFFF


def local_path(uri: str) -> Path | None:
    """The directory of a table on the local file system, or None for an object store."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def stats_columns(names: Sequence[str], configuration: Mapping[str, str | None], unindexed: frozenset[str]) -> list[str]:
    """The columns whose statistics go to the Delta log, as the table's properties ask."""
    listed = configuration.get("delta.dataSkippingStatsColumns")
    if listed:
        wanted = {name.strip().strip("`") for name in listed.split(",")}
        chosen = [name for name in names if name in wanted]
    else:
        limit = int(configuration.get("delta.dataSkippingNumIndexedCols") or DEFAULT_INDEXED_COLUMNS)
        chosen = list(names) if limit < 0 else list(names[:limit])
    return [name for name in chosen if name not in unindexed]


class DataFiles:
    """Writes one table's Parquet files and describes each for its add action."""

    def __init__(
        self,
        table_uri: str,
        storage_options: Mapping[str, str],
        compression: str,
        target_file_size: int,
        plain_columns: Sequence[str],
    ) -> None:
        self.table_uri = table_uri
        self.codec = _CODECS[compression]
        self.target_file_size = target_file_size
        self.plain_columns = frozenset(plain_columns)
        self._directory = local_path(table_uri)
        # pyarrow's own file system for an object store: deltalake's stream wrapper takes bytes only.
        self._store = None if self._directory is not None else arrow_filesystem(table_uri, storage_options)

    def write(self, data: pa.Table, indexed: Sequence[str], size_hint: int) -> list[AddAction]:
        """Write ``data`` as files of about ``target_file_size`` (``size_hint``: its bytes before encoding)."""
        if data.num_rows == 0:
            return []
        files = max(1, math.ceil(size_hint / self.target_file_size))
        rows = math.ceil(data.num_rows / files)
        return [self._write_file(data.slice(start, rows), indexed) for start in range(0, data.num_rows, rows)]

    def _write_file(self, data: pa.Table, indexed: Sequence[str]) -> AddAction:
        name = f"part-00000-{uuid.uuid4()}-c000.{_SUFFIXES[self.codec]}parquet"
        candidates = [column for column in data.column_names if column not in self.plain_columns]
        collected: list[pq.FileMetaData] = []
        options = {
            "compression": self.codec,
            "use_dictionary": dictionary_columns(data, candidates),
            # Only the statistics the Delta log keeps: each file is one row group, so Parquet's own
            # would only repeat them (and cost a min/max pass over every other column).
            "write_statistics": [column for column in candidates if column in indexed],
            "row_group_size": data.num_rows,
            "store_schema": False,
            "metadata_collector": collected,
        }
        if self._directory is not None:
            path = self._directory / name
            pq.write_table(data, path, **options)
            size = os.path.getsize(path)
        else:
            assert self._store is not None
            filesystem, root = self._store
            with filesystem.open_output_stream(f"{root}/{name}") as stream:  # streamed (multipart upload)
                pq.write_table(data, stream, **options)
                size = stream.tell()
        stats = file_statistics(collected[0], data.schema, set(indexed))
        return AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps(stats, separators=(",", ":")))


def dictionary_columns(data: pa.Table, candidates: Sequence[str]) -> list[str]:
    """The columns worth dictionary-encoding: fewer distinct values than half of a sample's rows.

    Dictionary encoding hashes every value until the dictionary outgrows its page (1 MB), so
    on a column of unique values (ids, keys, times, free text) it is pure cost: it measured
    a third of the Parquet writer's CPU on the benchmark's events. On repeated values
    (operation, status, partition) it shrinks the column, so those keep it.
    """
    names = [name for name in candidates if not pa.types.is_boolean(data.schema.field(name).type)]  # bit-packed already
    if not names or data.num_rows == 0:
        return []
    frame = pl.from_arrow(data.select(names))
    assert isinstance(frame, pl.DataFrame)
    step = max(1, data.num_rows // DICTIONARY_SAMPLE_ROWS)
    sample = frame.gather_every(step)
    distinct = sample.select(pl.all().n_unique()).row(0, named=True)
    return [name for name in names if distinct[name] * 2 <= sample.height]


def file_statistics(metadata: pq.FileMetaData, schema: pa.Schema, indexed: set[str]) -> dict[str, object]:
    """The Delta statistics of one file, from its Parquet metadata (every row group)."""
    minimums: dict[str, object] = {}
    maximums: dict[str, object] = {}
    nulls: dict[str, int] = {}
    groups = [metadata.row_group(index) for index in range(metadata.num_row_groups)]
    for position, field in enumerate(schema):
        if field.name not in indexed:
            continue
        statistics = [group.column(position).statistics for group in groups if group.num_rows]
        if not statistics or any(item is None or not item.has_null_count for item in statistics):
            continue
        nulls[field.name] = sum(item.null_count for item in statistics)
        bounded = [item for item in statistics if item.has_min_max]
        if not bounded:
            continue
        low = min(item.min_raw if pa.types.is_timestamp(field.type) else item.min for item in bounded)
        high = max(item.max_raw if pa.types.is_timestamp(field.type) else item.max for item in bounded)
        bounds = _json_bounds(field.type, low, high)
        if bounds is not None:
            minimums[field.name], maximums[field.name] = bounds
    return {"numRecords": metadata.num_rows, "minValues": minimums, "maxValues": maximums, "nullCount": nulls}


def _json_bounds(arrow_type: pa.DataType, low: object, high: object) -> tuple[object, object] | None:
    """A column's min and max as the Delta log writes them; None when they cannot be said exactly."""
    if pa.types.is_timestamp(arrow_type):
        assert isinstance(low, int) and isinstance(high, int) and arrow_type.unit == "us"
        return _timestamp(low // 1000), _timestamp(-(-high // 1000))
    if isinstance(low, str) and isinstance(high, str):
        ceiling = string_upper_bound(high)
        return (low[:STRING_STATISTICS_LENGTH], ceiling) if ceiling is not None else None
    if isinstance(low, float) and isinstance(high, float) and not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


def string_upper_bound(value: str) -> str | None:
    """``value`` cut to 64 characters and, if cut, rounded up (its last character raised); None if impossible."""
    if len(value) <= STRING_STATISTICS_LENGTH:
        return value
    prefix = value[:STRING_STATISTICS_LENGTH]
    for index in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[index])
        if code < _MAX_CODE_POINT:
            raised = code + 1 if not 0xD800 <= code + 1 <= 0xDFFF else 0xE000  # surrogates are no characters
            return prefix[:index] + chr(raised)
    return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(millis: int) -> str:
    return (_EPOCH + timedelta(milliseconds=millis)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


__all__ = ["DataFiles", "dictionary_columns", "file_statistics", "local_path", "stats_columns", "string_upper_bound"]
