"""What the demo records over time, for its report (``demo.report``).

Two sources, each for what it measures best:

- **Bronze itself.** Every landed event carries three clocks: MongoDB's cluster time (the
  write), the Kafka record's timestamp (cdc-service produced it) and ``__ingested_at`` (the
  bronze commit). Read back after the run, they give the exact throughput of each stage and
  the end-to-end lag of every change, per second, with nothing sampled or lost.
- **The services' /metrics**, scraped every few seconds while they run (``MetricsSampler``):
  what an operator's dashboard sees, such as the records waiting in Kafka
  (``bronze_consumer_lag_messages``) and the checkpoint age, which no table holds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from prometheus_client.parser import text_string_to_metric_families

from demo.observe import COPY_OPERATIONS
from lakehouse_common.lake import bronze_table_uri

logger = logging.getLogger(__name__)

# Series the sampler keeps, per service: how the samples of one name combine into one value.
SAMPLED_SERIES: dict[str, dict[str, str]] = {
    "cdc-service": {
        "cdc_events_published_total": "sum",
        "cdc_lag_seconds": "max",
        "cdc_checkpoint_age_seconds": "max",
        "cdc_dead_letters_total": "sum",
    },
    "bronze-writer": {
        "bronze_rows_total": "sum",
        "bronze_consumer_lag_messages": "sum",
        "bronze_last_end_to_end_lag_seconds": "max",
        "bronze_dead_letters_total": "sum",
        "bronze_rescued_values_total": "sum",
    },
}

# At most this many buckets per series: a long demo gets wider buckets, not a heavier report.
MAX_BUCKETS = 900


def scrape(url: str, wanted: Mapping[str, str], timeout: float = 3.0) -> dict[str, float]:
    """One /metrics scrape reduced to one value per wanted series name (absent names left out)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    values: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and not math.isnan(sample.value):
                values.setdefault(sample.name, []).append(sample.value)
    return {name: (max(found) if wanted[name] == "max" else sum(found)) for name, found in values.items()}


class MetricsSampler:
    """Scrapes each service's /metrics every ``interval_seconds`` in a thread, until ``stop()``.

    A scrape that fails (a service starting up or already stopped) is left out of the series,
    not retried: the next tick is a few seconds away.
    """

    def __init__(self, endpoints: Mapping[str, str], interval_seconds: float = 2.0) -> None:
        self.endpoints = dict(endpoints)
        self.interval_seconds = interval_seconds
        self.samples: list[dict[str, Any]] = []
        self.failed_scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-metrics-sampler", daemon=True)

    def start(self) -> MetricsSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for service, url in self.endpoints.items():
                try:
                    values = scrape(url, SAMPLED_SERIES.get(service, {}))
                except (OSError, urllib.error.URLError, ValueError):
                    self.failed_scrapes += 1
                    continue
                self.samples.append({"at": round(time.time(), 3), "service": service, "values": values})
            self._stop.wait(self.interval_seconds)


def _bronze_clocks(lake_root: Path, database: str, collections: Iterable[str]) -> pl.DataFrame | None:
    columns = ["__operation", "__cluster_time", "__kafka_timestamp", "__ingested_at"]
    frames: list[pl.DataFrame] = []
    for collection in collections:
        try:
            table = DeltaTable(bronze_table_uri(str(lake_root), database, collection))
        except TableNotFoundError:
            continue
        frames.append(pl.from_arrow(table.to_pyarrow_table(columns=columns)))  # type: ignore[arg-type]
    if not frames:
        return None
    clocks = pl.concat(frames).select(
        pl.col("__operation").alias("operation"),
        *(
            pl.col(f"__{name}").dt.epoch("ms").truediv(1000).alias(name)
            for name in ("cluster_time", "kafka_timestamp", "ingested_at")
        ),
    )
    return clocks if clocks.height else None


def _rate(times: pl.Series, start: float, width: int) -> list[list[float]]:
    """[bucket start (Unix seconds), events per second] for every bucket from the first to the last event."""
    times = times.drop_nulls()
    if times.is_empty():
        return []
    counts = times.to_frame("t").select(((pl.col("t") - start) // width).cast(pl.Int64).alias("bucket")).group_by("bucket").len()
    by_bucket = dict(zip(counts["bucket"].to_list(), counts["len"].to_list(), strict=True))
    first, last = min(by_bucket), max(by_bucket)
    return [[start + bucket * width, round(by_bucket.get(bucket, 0) / width, 3)] for bucket in range(first, last + 1)]


def pipeline_series(lake_root: Path, database: str, collections: Iterable[str]) -> dict[str, Any]:
    """Per-stage throughput and end-to-end lag over the run, read back from bronze.

    ``throughput``: events per second by MongoDB cluster time (changes only: a snapshot copy
    is no write), by Kafka record timestamp and by bronze commit time (snapshot included).
    ``lag``: per bucket of cluster time, the median and maximum seconds from the MongoDB
    write to Kafka and to the bronze commit. Cluster times have one-second resolution, so
    each lag is good to about a second.
    """
    clocks = _bronze_clocks(lake_root, database, collections)
    if clocks is None:
        return {"bucket_seconds": 1, "throughput": {}, "lag": []}
    bounds = clocks.select(
        pl.min_horizontal(pl.col("cluster_time").min(), pl.col("ingested_at").min()).alias("first"),
        pl.max_horizontal(pl.col("cluster_time").max(), pl.col("ingested_at").max()).alias("last"),
    ).row(0)
    start, end = math.floor(bounds[0]), bounds[1]
    width = max(1, math.ceil((end - start + 1) / MAX_BUCKETS))
    changes = clocks.filter(~pl.col("operation").is_in(COPY_OPERATIONS))
    lag: list[dict[str, float]] = []
    if changes.height:
        per_bucket = (
            changes.with_columns(
                (start + ((pl.col("cluster_time") - start) // width) * width).alias("at"),
                (pl.col("ingested_at") - pl.col("cluster_time")).clip(lower_bound=0).alias("to_bronze"),
                (pl.col("kafka_timestamp") - pl.col("cluster_time")).clip(lower_bound=0).alias("to_kafka"),
            )
            .group_by("at")
            .agg(
                pl.len().alias("events"),
                pl.col("to_bronze").median().alias("to_bronze_p50"),
                pl.col("to_bronze").max().alias("to_bronze_max"),
                pl.col("to_kafka").median().alias("to_kafka_p50"),
            )
            .sort("at")
        )
        lag = [
            {key: (round(value, 3) if isinstance(value, float) else value) for key, value in row.items()}
            for row in per_bucket.iter_rows(named=True)
        ]
    return {
        "bucket_seconds": width,
        "throughput": {
            "mongodb": _rate(changes["cluster_time"], start, width),
            "kafka": _rate(clocks["kafka_timestamp"], start, width),
            "bronze": _rate(clocks["ingested_at"], start, width),
        },
        "lag": lag,
    }


__all__ = ["MAX_BUCKETS", "SAMPLED_SERIES", "MetricsSampler", "pipeline_series", "scrape"]
