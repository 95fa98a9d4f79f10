"""Reading bronze as the harness needs it: which workload writes each row proves.

``write_key`` names the workload write a bronze row is the change event of (see
``chaos.workload`` for why each operation is recognised the way it is). ``BronzeWatch``
reads the lane's bronze tables incrementally while the chaos runs (only files added since
its last look), so the harness knows, within a second, when bronze has landed a write made
after a fault: that is how progress *during* the chaos is measured. The final verification
reads the tables again from scratch (``read_events``), independent of the watch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from lakehouse_common.lake import bronze_table_uri, dead_letter_uri
from spark_jobs.verify import id_from_lake

logger = logging.getLogger(__name__)

COLUMNS = [
    "__event_id",
    "__operation",
    "__document_id",
    "__full_document",
    "__update_description",
    "__ingested_at",
    "__kafka_topic",
    "__kafka_partition",
    "__kafka_offset",
]

WriteKey = tuple[str, str, int | str]
"""(operation, collection, sequence number) for inserts, updates and replaces;
(``delete``, collection, canonical document id) for deletes."""

CHANGE_OPERATIONS = ("insert", "update", "replace", "delete")


def _seq(text: str | None, *path: str) -> int | None:
    if not text:
        return None
    value: Any = json.loads(text)
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_key(collection: str, row: dict[str, Any]) -> WriteKey | None:
    """The workload write this change event records, or None (a snapshot record, an unknown event)."""
    operation = row["__operation"]
    if operation in ("insert", "replace"):
        seq = _seq(row["__full_document"], "seq")
    elif operation == "update":
        seq = _seq(row["__update_description"], "updatedFields", "seq")
    elif operation == "delete":
        return ("delete", collection, id_from_lake(row["__document_id"])) if row["__document_id"] else None
    else:
        return None
    return None if seq is None else (operation, collection, seq)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.select(COLUMNS).to_pylist()


def read_events(lake_root: str, database: str, collection: str) -> list[dict[str, Any]]:
    """Every row of one bronze table (the envelope columns above); [] when the table does not exist."""
    try:
        table = DeltaTable(bronze_table_uri(lake_root, database, collection))
    except TableNotFoundError:
        return []
    return _rows(table.to_pyarrow_table(columns=COLUMNS))


def dead_letter_count(lake_root: str) -> int:
    """Rows of the lake's dead-letter table (0 when there is none): the workload's events must never land there."""
    try:
        return DeltaTable(dead_letter_uri(lake_root)).to_pyarrow_dataset().count_rows()
    except TableNotFoundError:
        return 0


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")


@dataclass
class _Table:
    uri: str
    delta: DeltaTable | None = None
    seen: frozenset[str] = frozenset()


class BronzeWatch:
    """Follows a lane's bronze tables: which writes have landed, and when bronze last grew."""

    def __init__(self, lake_root: str, database: str, collections: Iterable[str], interval: float = 1.0) -> None:
        self._tables = {name: _Table(bronze_table_uri(lake_root, database, name)) for name in collections}
        self._interval = interval
        self._lock = threading.Lock()
        self.landed: dict[WriteKey, float] = {}  # first __ingested_at (epoch seconds) per write
        self._insert_seqs: list[tuple[int, float]] = []
        self.max_insert_seq = 0
        self.snapshot_ids: dict[str, set[str]] = {name: set() for name in self._tables}
        self.rows = 0
        self.last_growth = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def poll(self) -> None:
        """Read the files committed since the last poll."""
        for collection, table in self._tables.items():
            try:
                if table.delta is None:
                    table.delta = DeltaTable(table.uri)
                else:
                    table.delta.update_incremental()
                files = frozenset(table.delta.file_uris())
            except TableNotFoundError:
                continue
            except (DeltaError, OSError) as error:  # a commit being written: look again next time
                self.error = str(error)
                continue
            new = files - table.seen
            if not new:
                continue
            rows = [row for path in sorted(new) for row in _rows(pq.read_table(_local_path(path), columns=COLUMNS))]
            table.seen = files
            with self._lock:
                self.rows += len(rows)
                self.last_growth = time.monotonic()
                for row in rows:
                    if row["__operation"] == "snapshot" and row["__document_id"]:
                        self.snapshot_ids[collection].add(id_from_lake(row["__document_id"]))
                    key = write_key(collection, row)
                    if key is None:
                        continue
                    ingested = row["__ingested_at"].timestamp()
                    if key not in self.landed or ingested < self.landed[key]:
                        self.landed[key] = ingested
                    if key[0] == "insert":
                        seq = int(key[2])
                        self._insert_seqs.append((seq, ingested))
                        self.max_insert_seq = max(self.max_insert_seq, seq)

    def first_insert_after(self, seq: int) -> float | None:
        """When bronze first landed an insert with a sequence number above ``seq`` (None: not yet)."""
        with self._lock:
            if self.max_insert_seq <= seq:
                return None
            return min(ingested for number, ingested in self._insert_seqs if number > seq)

    def snapshot_missing(self, expected: dict[str, set[str]]) -> int:
        """How many of ``expected`` (canonical ids per collection) no snapshot record has copied yet."""
        with self._lock:
            return sum(len(ids - self.snapshot_ids.get(collection, set())) for collection, ids in expected.items())

    def missing(self, expected: Iterable[WriteKey]) -> int:
        with self._lock:
            return sum(1 for key in expected if key not in self.landed)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as error:  # the watch must never stop the run; the final check reads afresh
                self.error = f"{type(error).__name__}: {error}"
                logger.warning("bronze watch: %s", self.error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-bronze-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


__all__ = ["CHANGE_OPERATIONS", "COLUMNS", "BronzeWatch", "WriteKey", "dead_letter_count", "read_events", "write_key"]
