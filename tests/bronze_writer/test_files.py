"""Writing Parquet files for add actions: which columns get dictionaries and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bronze_writer.files import DataFiles, dictionary_columns

ROWS = 5000


def _batch() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([f"id-{row:06d}" for row in range(ROWS)], pa.large_utf8()),
            "status": pa.array([("new", "paid", "shipped")[row % 3] for row in range(ROWS)], pa.large_utf8()),
            "amount": pa.array([row * 1.5 for row in range(ROWS)], pa.float64()),
            "partition": pa.array([row % 4 for row in range(ROWS)], pa.int32()),
            "vip": pa.array([row % 7 == 0 for row in range(ROWS)], pa.bool_()),
            "empty": pa.nulls(ROWS, pa.large_utf8()),
        }
    )


def test_only_columns_with_repeated_values_are_dictionary_encoded() -> None:
    data = _batch()
    chosen = dictionary_columns(data, data.column_names)
    assert chosen == ["status", "partition", "empty"]  # unique ids and amounts: no; booleans are bit-packed anyway
    assert dictionary_columns(data, ["id", "amount"]) == []
    assert dictionary_columns(data.slice(0, 0), data.column_names) == []


def test_files_keep_every_value_and_the_statistics_of_the_indexed_columns(tmp_path: Path) -> None:
    data = _batch()
    files = DataFiles(str(tmp_path), {}, "SNAPPY", 1 << 30, plain_columns=["id"])
    (action,) = files.write(data, indexed=["id", "amount", "status"], size_hint=1000)

    written = pq.ParquetFile(tmp_path / action.path)
    assert written.read().cast(data.schema).equals(data)  # no Arrow schema stored: large strings read back as strings
    row_group = written.metadata.row_group(0)
    encodings = {row_group.column(index).path_in_schema: row_group.column(index).encodings for index in range(6)}
    assert "RLE_DICTIONARY" in encodings["status"] and "RLE_DICTIONARY" not in encodings["amount"]
    assert "RLE_DICTIONARY" not in encodings["id"]  # a plain column is never encoded
    assert written.metadata.row_group(0).column(2).statistics is not None  # amount: indexed
    assert written.metadata.row_group(0).column(3).statistics is None  # partition: not indexed
    assert action.stats is not None
    stats = json.loads(action.stats)
    assert stats["minValues"] == {"status": "new", "amount": 0.0} and stats["maxValues"]["amount"] == 7498.5
    assert stats["nullCount"] == {"status": 0, "amount": 0}  # a plain column (id) has none, though indexed
