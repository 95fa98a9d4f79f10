"""End-to-end latency, MongoDB write to bronze commit, at steady write rates and default flush settings.

Why: the demo's lag (demo/observe.py) uses cluster times of one-second resolution and mixes
start-up into its percentiles; this measures each change to the millisecond over a steady
window, at several rates, against the target p99 <= 2 x ``batch.max_latency_seconds``.

Per rate, on one real broker (local_stack.kafka) and a fresh MongoDB stand-in (it scans its
whole oplog on every getMore, so one stand-in per rate keeps an earlier rate's oplog out of
the next): ``cdc-service run`` and ``bronze-writer run`` as subprocesses with their default
stream, producer and batch settings (only names, addresses and ports are set). A priming
insert per second until cdc-service has created the topic, then bronze-writer starts and the
first primed row must land; then a writer thread inserts and updates (half each) documents
at the target rate in bulk writes every 10 ms, each change carrying its sequence number
``seq`` and the wall time just before its bulk write is sent kept in memory.

Per change: latency = ``committed_at`` of the ingest-log row whose offset range holds the
change's Kafka offset, minus its write time. Stages: write -> Kafka record timestamp (the
producer's create time in cdc-service) and Kafka timestamp -> commit. The first
``BENCH_LATENCY_WARMUP_SECONDS`` (default 5) of writes are dropped; the next
``BENCH_LATENCY_SECONDS`` (default 30) are the window. Changes written but not in bronze
after the settle wait (4 x max latency + 30 s) are counted in ``not_landed``.

Env: BENCH_LATENCY_RATES (default "100,1000,5000" changes/s), BENCH_LATENCY_SECONDS,
BENCH_LATENCY_WARMUP_SECONDS. Results: ``build/bench/latency.json``; service logs in
``build/bench/latency-work/<rate>/``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from pymongo import InsertOne, MongoClient, UpdateOne

from bronze_writer.settings import BatchSettings
from cdc_service.settings import ProducerSettings, StreamSettings
from demo.processes import ManagedProcess, console_script
from lakehouse_common import lake
from local_stack.kafka import KafkaBroker, start_kafka
from local_stack.mongo import STANDIN_DESCRIPTION, start_mongo_standin
from local_stack.paths import PROJECT_ROOT

DEFAULT_RATES = "100,1000,5000"
DEFAULT_SECONDS = 30.0
DEFAULT_WARMUP_SECONDS = 5.0
TICK_SECONDS = 0.01
DATABASE = "bench"
COLLECTION = "events"


def _log(message: str) -> None:
    print(f"[bench_latency {time.strftime('%H:%M:%S')}] {message}", flush=True)


class _SteadyWriter(threading.Thread):
    """Inserts and updates at ``rate`` changes/s for ``seconds``, recording each change's write time by ``seq``.

    Every tick the changes due so far are sent as one ordered bulk write, so the rate holds
    even when one round trip is slower than a tick; the achieved rate is what was sent.
    """

    def __init__(self, collection: Any, rate: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.rate = rate
        self.seconds = seconds
        self.written_at: list[float] = []  # index = seq
        self.started_at = 0.0  # wall clock, like the write times
        self.finished_at = 0.0
        self.error: BaseException | None = None

    def _operations(self, first: int, count: int) -> list[InsertOne[Any] | UpdateOne]:
        operations: list[InsertOne[Any] | UpdateOne] = []
        for seq in range(first, first + count):
            if seq % 2 == 0:
                operations.append(InsertOne({"_id": seq, "seq": seq, "status": "new", "amount": seq % 997}))
            else:  # an earlier insert, each updated once, so its update description names this seq alone
                operations.append(UpdateOne({"_id": seq - 1}, {"$set": {"seq": seq, "status": "updated"}}))
        return operations

    def run(self) -> None:
        try:
            started = time.monotonic()
            self.started_at = time.time()
            next_tick = started
            while (elapsed := time.monotonic() - started) < self.seconds:
                # At most a tenth of a second's changes per bulk: a stand-in that falls behind gets
                # steady bulks (the achieved rate shows it), not one huge catch-up write at the end.
                due = min(int(elapsed * self.rate) + 1 - len(self.written_at), max(1, self.rate // 10))
                if due > 0:
                    first = len(self.written_at)
                    stamp = time.time()
                    self.collection.bulk_write(self._operations(first, due), ordered=True)
                    self.written_at.extend([stamp] * due)
                next_tick += TICK_SECONDS
                time.sleep(max(0.0, next_tick - time.monotonic()))
        except BaseException as error:  # reported by the caller, never lost in the thread
            self.error = error
        self.finished_at = time.time()


def _environment(prefix: str, mongo_uri: str, bootstrap: str, lake_root: Path) -> dict[str, str]:
    """Names, addresses and ports only: every stream, producer and batch setting keeps its default."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CDC_NAME": prefix,
        "CDC_MONGO_URI": mongo_uri,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CDC_SCOPE__INCLUDE_DATABASES": json.dumps([DATABASE]),
        "CDC_TOPICS__PREFIX": prefix,
        "CDC_TOPICS__CHECKPOINT_TOPIC": f"{prefix}-checkpoints",
        "CDC_TOPICS__DEAD_LETTER_TOPIC": f"{prefix}-dead-letters",
        "CDC_SNAPSHOT__MODE": "never",
        "CDC_HTTP__HOST": "127.0.0.1",
        "CDC_HTTP__PORT": "0",
        "CDC_PROGRESS_BAR": "never",
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "BRONZE_CONSUMER__TOPIC_PATTERN": rf"^{re.escape(prefix)}\.{DATABASE}\..+",
        "BRONZE_CONSUMER__TOPIC_PREFIX": prefix,
        "BRONZE_CONSUMER__GROUP_ID": f"{prefix}-bronze",
        "BRONZE_LAKE__ROOT": str(lake_root),
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": "0",
        "BRONZE_WRITER_ID": f"{prefix}-bronze",
    }


def _topic_exists(bootstrap: str, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


def _bronze_rows(table_uri: str) -> pl.DataFrame | None:
    """The bronze rows with their Kafka position, timestamp and ``seq`` (null for priming inserts)."""
    from deltalake import DeltaTable

    try:
        table = DeltaTable(table_uri)
    except Exception:  # not created yet
        return None
    columns = [
        "__operation",
        "__kafka_partition",
        "__kafka_offset",
        "__kafka_timestamp",
        "__full_document",
        "__update_description",
    ]
    frame = pl.read_delta(table, columns=columns)
    return frame.with_columns(
        pl.coalesce(
            pl.col("__update_description").str.json_path_match("$.updatedFields.seq"),
            pl.col("__full_document").str.json_path_match("$.seq"),
        )
        .cast(pl.Int64, strict=False)
        .alias("seq")
    ).drop("__full_document", "__update_description")


def _landed_rows(table_uri: str) -> int:
    frame = _bronze_rows(table_uri)
    return 0 if frame is None else frame.height


def _commits(lake_root: Path, table_uri: str) -> pl.DataFrame:
    """One row per (commit, partition): the offset range it holds and when it was committed."""
    log = pl.read_delta(lake.ingest_log_uri(str(lake_root)), columns=["table_uri", "committed_at", "offset_ranges"])
    rows = []
    for committed_at, ranges in log.filter(pl.col("table_uri") == table_uri).select("committed_at", "offset_ranges").rows():
        for position, (first, last) in json.loads(ranges).items():
            rows.append(
                {"partition": int(position.rsplit("/", 1)[1]), "first": first, "last": last, "committed_at": committed_at}
            )
    schema: dict[str, pl.DataType] = {
        "partition": pl.Int32(),
        "first": pl.Int64(),
        "last": pl.Int64(),
        "committed_at": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame(rows, schema=schema)


def _percentiles(values: pl.Series) -> dict[str, float | None]:
    if values.is_empty():
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    quantile = values.quantile
    return {
        "p50_ms": round(float(quantile(0.5, "linear") or 0), 1),
        "p95_ms": round(float(quantile(0.95, "linear") or 0), 1),
        "p99_ms": round(float(quantile(0.99, "linear") or 0), 1),
        "max_ms": round(float(values.max() or 0), 1),  # type: ignore[arg-type]
    }


def _wait_for(condition: Any, timeout: float, what: str, processes: list[ManagedProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if not process.running():
                raise RuntimeError(f"{process.name} exited with {process.poll()}: {process.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f}s")
        time.sleep(0.5)


def _measure(rate: int, broker: KafkaBroker, work: Path, seconds: float, warmup: float, p99_target_ms: float) -> dict[str, Any]:
    prefix = f"lat{rate}"
    work.mkdir(parents=True, exist_ok=True)
    lake_root = work / "lake"
    topic = f"{prefix}.{DATABASE}.{COLLECTION}"
    table_uri = lake.bronze_table_uri(str(lake_root), DATABASE, COLLECTION)
    standin = start_mongo_standin(work / "mongo", heap="2g")
    client: MongoClient[dict[str, Any]] = MongoClient(standin.uri)
    env = _environment(prefix, standin.uri, broker.bootstrap_servers, lake_root)
    processes: list[ManagedProcess] = []
    try:
        collection = client[DATABASE][COLLECTION]
        cdc = ManagedProcess("cdc-service", [console_script("cdc-service"), "run"], env, work / "cdc-service.log", PROJECT_ROOT)
        processes.append(cdc)
        primes = 0

        def primed_topic() -> bool:
            nonlocal primes
            collection.insert_one({"_id": -1 - primes})  # an int _id like the measured ones: no rescued type
            primes += 1
            return _topic_exists(broker.bootstrap_servers, topic)

        _wait_for(primed_topic, 120, "cdc-service created no topic", processes)
        bronze = ManagedProcess(
            "bronze-writer", [console_script("bronze-writer"), "run"], env, work / "bronze-writer.log", PROJECT_ROOT
        )
        processes.append(bronze)
        _wait_for(lambda: _landed_rows(table_uri) > 0, 120, "bronze landed nothing", processes)
        load_before = round(os.getloadavg()[0], 1)
        _log(f"{rate}/s: streaming; writing for {warmup + seconds:.0f}s")
        writer = _SteadyWriter(collection, rate, warmup + seconds)
        writer.start()
        while writer.is_alive():  # a timed join, so Ctrl-C still reaches this thread
            writer.join(1.0)
        if writer.error is not None:
            raise RuntimeError(f"the writer failed: {writer.error!r}")
        written = len(writer.written_at)
        load_during = round(os.getloadavg()[0], 1)
        settle = 4 * BatchSettings().max_latency_seconds + 30

        def all_landed() -> bool:
            frame = _bronze_rows(table_uri)
            return frame is not None and frame["seq"].drop_nulls().n_unique() >= written

        try:
            _wait_for(all_landed, settle, "not everything landed", processes)
        except RuntimeError as error:
            _log(f"{rate}/s: {error}; counting what is missing")
        frame = _bronze_rows(table_uri)
        assert frame is not None
    finally:
        for process in reversed(processes):
            process.stop()
        client.close()
        standin.stop()
    commits = _commits(lake_root, table_uri)
    events = (
        frame.filter(pl.col("seq").is_not_null())
        .unique("seq", keep="first")
        .sort("__kafka_partition", "__kafka_offset")
        .join_asof(
            commits.sort("partition", "first"),
            left_on="__kafka_offset",
            right_on="first",
            by_left="__kafka_partition",
            by_right="partition",
            check_sortedness=False,  # sorted within each partition above, which is what the join needs
        )
        .filter(pl.col("__kafka_offset") <= pl.col("last"))
    )
    written_at = pl.DataFrame(
        {"seq": range(written), "written_at": writer.written_at}, schema={"seq": pl.Int64, "written_at": pl.Float64}
    )
    window_start = writer.started_at + warmup
    joined = written_at.join(events, on="seq", how="left").with_columns(
        ((pl.col("committed_at").dt.epoch("us") / 1000) - pl.col("written_at") * 1000).alias("latency_ms"),
        ((pl.col("__kafka_timestamp").dt.epoch("us") / 1000) - pl.col("written_at") * 1000).alias("to_kafka_ms"),
        ((pl.col("committed_at") - pl.col("__kafka_timestamp")).dt.total_microseconds() / 1000).alias("kafka_to_commit_ms"),
    )
    window = joined.filter(pl.col("written_at") >= window_start)
    landed = window.filter(pl.col("latency_ms").is_not_null())
    window_seconds = writer.finished_at - window_start
    figures = _percentiles(landed["latency_ms"])
    result: dict[str, Any] = {
        "target_rate": rate,
        "achieved_rate": round(window.height / window_seconds, 1) if window_seconds > 0 else None,
        "events": landed.height,
        **figures,
        "not_landed": joined.filter(pl.col("latency_ms").is_null()).height,
        "met": figures["p99_ms"] is not None and figures["p99_ms"] <= p99_target_ms,
        "stages": {
            "write_to_kafka": _percentiles(landed["to_kafka_ms"]),
            "kafka_to_commit": _percentiles(landed["kafka_to_commit_ms"]),
        },
        "written": written,
        "warmup_dropped": joined.height - window.height,
        "commits": commits.height,
        "window_seconds": round(window_seconds, 1),
        "load_average": [load_before, load_during, round(os.getloadavg()[0], 1)],
    }
    _log(f"{rate}/s: {result}")
    shutil.rmtree(lake_root, ignore_errors=True)
    return result


def main(results_dir: Path) -> dict[str, Any]:
    rates = [int(rate) for rate in os.environ.get("BENCH_LATENCY_RATES", DEFAULT_RATES).split(",") if rate.strip()]
    seconds = float(os.environ.get("BENCH_LATENCY_SECONDS", DEFAULT_SECONDS))
    warmup = float(os.environ.get("BENCH_LATENCY_WARMUP_SECONDS", DEFAULT_WARMUP_SECONDS))
    batch, producer, stream = BatchSettings(), ProducerSettings(), StreamSettings()
    p99_target_ms = 2 * batch.max_latency_seconds * 1000
    work = results_dir / "latency-work"
    shutil.rmtree(work, ignore_errors=True)
    load_before = round(os.getloadavg()[0], 1)
    broker = start_kafka(work / "kafka", heap="1g")
    try:
        measured = [_measure(rate, broker, work / str(rate), seconds, warmup, p99_target_ms) for rate in rates]
    finally:
        broker.stop()
    result: dict[str, Any] = {
        "rates": measured,
        "p99_target_ms": p99_target_ms,
        "met": all(entry["met"] and entry["not_landed"] == 0 for entry in measured),
        "flush_settings": {
            "bronze.batch.max_latency_seconds": batch.max_latency_seconds,
            "bronze.batch.max_rows": batch.max_rows,
            "bronze.batch.max_bytes": batch.max_bytes,
            "cdc.producer.linger_ms": producer.linger_ms,
            "cdc.producer.batch_size_bytes": producer.batch_size_bytes,
            "cdc.stream.max_await_ms": stream.max_await_ms,
            "cdc.stream.idle_poll_interval_seconds": stream.idle_poll_interval_seconds,
            "cdc.stream.batch_size": stream.batch_size,
        },
        "window_seconds": seconds,
        "warmup_seconds": warmup,
        "mongo": STANDIN_DESCRIPTION,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}",
        "load_average": [load_before, round(os.getloadavg()[0], 1)],  # shared cores: others' work skews the figures
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(PROJECT_ROOT / "build" / "bench"), indent=2))
