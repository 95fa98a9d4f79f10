"""dbt build of silver and gold over N bronze events, then an incremental build after M more;
the same again over 2N events, so the increment's growth with the history is measured.

The bronze input is the generator's dataset and change stream (initial load as snapshot
records, then changes with all four drift steps), landed in bronze's schema. The bulk is
stamped as ingested over the previous day; the incremental run reads only the bronze commits
after the ones the full build processed (by Delta version), as in a pipeline that runs dbt
every few minutes. Both builds run through the runner (``spark-jobs dbt``), tests included.
The two targets (issue 11): ``incremental_to_full_ratio`` (incremental / full at N) ≤ 0.1 and
``incremental_growth_2x`` (the increment at 2N / the increment at N) ≤ 1.25.

    BENCH_DBT_EVENTS               bronze events before the first build (default 1,000,000)
    BENCH_DBT_INCREMENTAL_EVENTS   events added before the incremental build (default 10,000)
    BENCH_DBT_GROWTH               1 (default): also measure at twice the events; 0: only at N
    BENCH_DBT_DRIVER_MEMORY        Spark driver memory for dbt (default 6g)

Writes ``dbt.json`` into the results directory; a run at the default sizes also writes its
results table into docs/silver_gold.md (between the ``bench:dbt`` markers).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from pathlib import Path
from typing import Any

from data_generator import BronzeFixtureWriter, ChangeEventEncoder, GeneratorConfig, SalesMarketingGenerator
from lakehouse_common.json_logging import configure_logging
from local_stack.paths import PROJECT_ROOT
from spark_jobs.dbt_runner import DbtResult, DbtRunner
from spark_jobs.lake_tables import layer_counts
from spark_jobs.session import SparkSettings
from spark_jobs.settings import DbtSettings, SparkJobsSettings

INITIAL_DOCUMENTS_AT_SCALE_1 = 10_000  # about, see data_generator.generator
# Commits of this many events, their ingestion times spread over a day (bronze_writer commits
# far smaller batches; an incremental run reads the new commits whatever their size).
COMMIT_EVENTS = 20_000
DEFAULT_EVENTS = 1_000_000
DEFAULT_INCREMENTAL_EVENTS = 10_000
DOCS = PROJECT_ROOT / "docs" / "silver_gold.md"
DOCS_START, DOCS_END = "<!-- bench:dbt:start -->", "<!-- bench:dbt:end -->"


def _progress(message: str) -> None:
    print(f"[bench_dbt {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _land(writer: BronzeFixtureWriter, events: Iterator[dict[str, Any]], expected: int, first: datetime, last: datetime) -> int:
    """Land a stream of events in commits, their ingestion times spread evenly from first to last."""
    commits = max(1, -(-expected // COMMIT_EVENTS))
    step = (last - first) / commits
    landed = 0
    index = 0
    while batch := list(islice(events, COMMIT_EVENTS)):
        index += 1
        writer.write(batch, min(first + step * index, last))
        landed += len(batch)
        _progress(f"landed {landed:,} / ~{expected:,} bronze events")
    return landed


def _layer(unique_id: str) -> str:
    resource, _, name = unique_id.split(".")[:3]
    if resource != "model":
        return resource
    if name.startswith("stg_mongo__"):
        return "silver_history" if name.endswith("_history") else "silver_current"
    return "intermediate" if name.startswith("int_") else "gold"


def _build_report(result: DbtResult, run_results: Path) -> dict[str, Any]:
    """Exit status, wall time, and the seconds dbt spent per layer (summed over threads)."""
    summary = result.summary or {}
    per_layer: dict[str, float] = {}
    for node in json.loads(run_results.read_text())["results"]:
        layer = _layer(node["unique_id"])
        per_layer[layer] = round(per_layer.get(layer, 0.0) + node["execution_time"], 1)
    return {
        "exit_code": result.exit_code,
        "wall_seconds": result.elapsed_seconds,
        "dbt_elapsed_seconds": summary.get("elapsed_seconds"),
        "node_seconds_by_layer": per_layer,
        "nodes": summary.get("nodes"),
        "slowest": summary.get("slowest"),
    }


def _measure(events_wanted: int, incremental_wanted: int, work: Path) -> dict[str, Any]:
    """One lake of ``events_wanted`` bronze events: its full build, then the increment's build."""
    shutil.rmtree(work, ignore_errors=True)
    lake = work / "lake"
    # About 40% of the events are the initial load (snapshot), the rest changes.
    scale = max(0.05, 0.4 * events_wanted / INITIAL_DOCUMENTS_AT_SCALE_1)
    config = GeneratorConfig(seed=42, scale=scale, drift_every=max(1, events_wanted // 10))
    generator = SalesMarketingGenerator(config)
    encoder = ChangeEventEncoder("shop")
    writer = BronzeFixtureWriter(lake)
    now = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    initial = generator.initial_load()
    stream = chain(encoder.snapshot(initial), encoder.events(generator.changes(max(0, events_wanted - len(initial)))))
    landed = _land(writer, stream, events_wanted, now - timedelta(days=1), now - timedelta(hours=1))
    landing_seconds = time.monotonic() - started
    _progress(f"generated and landed {landed:,} events in {landing_seconds:.0f}s (scale {scale:.2f})")

    settings = SparkJobsSettings(
        lake_root=str(lake),
        spark=SparkSettings(
            master="local[*]",
            app_name="bench-dbt",
            warehouse_dir=work / "warehouse",
            metastore_dir=work / "metastore",
            driver_memory=os.environ.get("BENCH_DBT_DRIVER_MEMORY", "6g"),
        ),
        dbt=DbtSettings(
            commands=["build"],
            target_path=work / "target",
            log_path=work / "logs",
            spark_conf_dir=work / "conf",
        ),
    )
    _progress(f"dbt build (full, {landed:,} events) ...")
    (full,) = DbtRunner(settings).run_all()
    _progress(f"dbt build (full): exit {full.exit_code} in {full.elapsed_seconds:.0f}s")
    full_report = _build_report(full, work / "target" / "run_results.json")

    increment = list(encoder.events(generator.changes(incremental_wanted)))
    writer.write(increment, datetime.now(UTC))
    _progress(f"landed {len(increment):,} new events; dbt build (incremental) ...")
    (incremental,) = DbtRunner(settings).run_all()
    _progress(f"dbt build (incremental): exit {incremental.exit_code} in {incremental.elapsed_seconds:.0f}s")

    counts = layer_counts(str(lake))
    return {
        "bronze_events": landed,
        "incremental_events": len(increment),
        "generator_scale": round(scale, 3),
        "bronze_landing_seconds": round(landing_seconds, 1),
        "full_build": full_report,
        "full_build_events_per_second": round(landed / full.elapsed_seconds) if full.elapsed_seconds else None,
        "incremental_build": _build_report(incremental, work / "target" / "run_results.json"),
        "incremental_events_per_second": (
            round(len(increment) / incremental.elapsed_seconds) if incremental.elapsed_seconds else None
        ),
        "incremental_to_full_ratio": (
            round(incremental.elapsed_seconds / full.elapsed_seconds, 3) if full.elapsed_seconds else None
        ),
        "silver_rows": counts["silver"],
        "silver_history_rows": counts["silver_history"],
        "gold_rows": counts["gold"],
        "source_documents": generator.document_counts(),
        # The 1-minute load average when the measurement started and ended: a shared machine's
        # figures are only comparable at similar load.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _failed(measurement: dict[str, Any]) -> bool:
    return bool(measurement["full_build"]["exit_code"] or measurement["incremental_build"]["exit_code"])


def main(results_dir: Path) -> dict[str, Any]:
    events_wanted = int(os.environ.get("BENCH_DBT_EVENTS", DEFAULT_EVENTS))
    incremental_wanted = int(os.environ.get("BENCH_DBT_INCREMENTAL_EVENTS", DEFAULT_INCREMENTAL_EVENTS))
    growth = os.environ.get("BENCH_DBT_GROWTH", "1") != "0"
    work = results_dir / "dbt-work"
    configure_logging("bench-dbt", "WARNING")  # dbt's lines go to the log only at WARNING and above

    result = _measure(events_wanted, incremental_wanted, work)
    if growth:
        # The lake at N is not needed any more: at most one lake on disk at a time.
        twice = _measure(2 * events_wanted, incremental_wanted, work)
        base, doubled = result["incremental_build"]["wall_seconds"], twice["incremental_build"]["wall_seconds"]
        result["twice_history"] = twice
        result["incremental_growth_2x"] = round(doubled / base, 3) if base and not _failed(twice) else None
    if _failed(result):
        result["incremental_to_full_ratio"] = None  # a failed build's time says nothing
    result["gold_node_seconds"] = {
        "full": result["full_build"]["node_seconds_by_layer"].get("gold", 0.0),
        "incremental": result["incremental_build"]["node_seconds_by_layer"].get("gold", 0.0),
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (results_dir / "dbt.json").write_text(json.dumps(result, indent=2))
    if events_wanted == DEFAULT_EVENTS and incremental_wanted == DEFAULT_INCREMENTAL_EVENTS:
        _write_docs_table(result)
    return result


def results_table(result: dict[str, Any]) -> str:
    """The benchmark's figures as the markdown table docs/silver_gold.md shows."""
    layers = ("silver_history", "silver_current", "intermediate", "gold", "test")

    def row(label: str, build: dict[str, Any], events: int, per_second: int | None) -> str:
        seconds = build["node_seconds_by_layer"]
        cells = [label, f"{events:,}", f"{build['wall_seconds']:.0f}", f"{per_second:,}" if per_second else "-"]
        cells += [f"{seconds.get(layer, 0):.0f}" for layer in layers]
        return "| " + " | ".join(cells) + " |"

    def rows(measurement: dict[str, Any], suffix: str) -> list[str]:
        return [
            row(
                f"full{suffix}",
                measurement["full_build"],
                measurement["bronze_events"],
                measurement["full_build_events_per_second"],
            ),
            row(
                f"incremental{suffix}",
                measurement["incremental_build"],
                measurement["incremental_events"],
                measurement["incremental_events_per_second"],
            ),
        ]

    def load(measurement: dict[str, Any]) -> str:
        start, end = measurement.get("load_average", ["?", "?"])
        return f"load average {start} at the start and {end} at the end"

    twice = result.get("twice_history")
    ratio = result["incremental_to_full_ratio"]
    lines = [
        f"Measured {result['measured_at']} on {result['machine']['cpus']} cores, {load(result)}"
        + (f" (at twice the events: {load(twice)})" if twice else "")
        + " (a shared machine: indicative figures). "
        f"Bronze: {result['bronze_events']:,} events; silver then holds "
        f"{sum(result['silver_rows'].values()):,} documents and {sum(result['silver_history_rows'].values()):,} versions. "
        "Node seconds are summed over dbt's 4 threads.",
        "",
        "| build | events | wall s | events/s | history node s | current node s | intermediate node s | gold node s | tests node s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows(result, ""),
        *(rows(twice, " (2× history)") if twice else []),
        "",
        f"The incremental build takes {ratio:.0%} of the full build's time (target ≤ 10%)."
        if ratio is not None
        else "A build failed: no ratio.",
    ]
    if twice:
        growth = result.get("incremental_growth_2x")
        lines.append(
            f"At twice the history the same increment takes {growth:.2f} times as long (target ≤ 1.25)."
            if growth is not None
            else "A build at twice the history failed: no growth figure."
        )
    return "\n".join(lines)


def _write_docs_table(result: dict[str, Any]) -> None:
    text = DOCS.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        return
    head, rest = text.split(DOCS_START, 1)
    _, tail = rest.split(DOCS_END, 1)
    DOCS.write_text(f"{head}{DOCS_START}\n{results_table(result)}\n{DOCS_END}{tail}")
