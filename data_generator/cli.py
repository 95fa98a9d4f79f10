"""``lakehouse-generator``: the sales and marketing dataset, into MongoDB or straight to bronze.

    lakehouse-generator load --uri mongodb://... --database shop      the initial dataset
    lakehouse-generator run --uri ... --rate 20 --duration 300          keep changing it
    lakehouse-generator bronze --lake-root build/lake --changes 5000    bronze tables, no MongoDB
    lakehouse-generator events --out events.jsonl --changes 5000        change events as JSON lines

``run`` loads the dataset first when the database is empty, and otherwise continues from
what the database holds; a first Ctrl-C (or SIGTERM) ends it after the current change, a
second at once. The same seed and sizes give the same data. Exit codes are
``lakehouse_common.lifecycle.ExitCode``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pymongo
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_generator.bronze import BronzeFixtureWriter
from data_generator.change_events import ChangeEventEncoder
from data_generator.config import GeneratorConfig
from data_generator.generator import SalesMarketingGenerator
from data_generator.mongo import MongoWriter
from lakehouse_common.contract import to_relaxed_json
from lakehouse_common.lifecycle import ExitCode, stop_on_signals
from lakehouse_common.redaction import redact

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

Seed = Annotated[int, typer.Option(help="Random seed.")]
Scale = Annotated[float, typer.Option(help="Size factor (1.0: about 11k initial documents).")]
HistoryDays = Annotated[int, typer.Option(help="Days of history in the initial load.")]
DriftEvery = Annotated[int, typer.Option(help="Changes between schema-drift steps.")]
Uri = Annotated[str, typer.Option(envvar="MONGO_URI", help="MongoDB connection string.")]
Database = Annotated[str, typer.Option(help="Database to write.")]


def _config(seed: int, scale: float, history_days: int, drift_every: int) -> GeneratorConfig:
    return GeneratorConfig(seed=seed, scale=scale, history_days=history_days, drift_every=drift_every)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)


@app.command()
def load(
    uri: Uri = "mongodb://127.0.0.1:27017/?directConnection=true",
    database: Database = "shop",
    seed: Seed = 42,
    scale: Scale = 1.0,
    history_days: HistoryDays = 60,
    drift_every: DriftEvery = 2000,
    drop: Annotated[bool, typer.Option(help="Drop the database first.")] = False,
) -> None:
    """Write the initial dataset into MongoDB."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    if drop:
        client.drop_database(database)
    writer = MongoWriter(client[database])
    if any(writer.counts().values()):
        typer.echo(f"database {database} already holds generated data: use --drop, or `run` to continue it", err=True)
        raise typer.Exit(ExitCode.FAILED)
    generator = SalesMarketingGenerator(_config(seed, scale, history_days, drift_every))
    with _progress() as progress:
        task = progress.add_task(f"loading into {redact(uri)} {database}", total=None)
        writer.load(generator, progress=lambda done, total: progress.update(task, completed=done, total=total))
    typer.echo(json.dumps(writer.counts()))


@app.command()
def run(
    uri: Uri = "mongodb://127.0.0.1:27017/?directConnection=true",
    database: Database = "shop",
    rate: Annotated[float | None, typer.Option(help="Changes per second (default: as fast as possible).")] = 20.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many changes.")] = None,
    seed: Seed = 42,
    scale: Scale = 1.0,
    history_days: HistoryDays = 60,
    drift_every: DriftEvery = 2000,
) -> None:
    """Keep changing the dataset (loading it first if the database is empty) until stopped."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    writer = MongoWriter(client[database], batch_size=500)
    config = _config(seed, scale, history_days, drift_every)
    generator = writer.resume_generator(config)
    with _progress() as progress:
        if generator is None:
            generator = SalesMarketingGenerator(config)
            task = progress.add_task("initial load", total=None)
            writer.load(generator, progress=lambda done, total: progress.update(task, completed=done, total=total))
        stop = threading.Event()
        task = progress.add_task(f"changes into {database}", total=limit)
        with stop_on_signals(stop):
            writer.run(
                generator,
                rate_per_second=rate,
                limit=limit,
                duration_seconds=duration,
                stop=stop,
                progress=lambda done, total: progress.update(task, completed=done),
            )
    typer.echo(json.dumps(writer.counts()))


def _event_stream(
    generator: SalesMarketingGenerator, encoder: ChangeEventEncoder, changes: int, snapshot: bool
) -> Iterator[dict[str, Any]]:
    initial = generator.initial_load()
    yield from encoder.snapshot(initial) if snapshot else encoder.events(initial)
    yield from encoder.events(generator.changes(changes))


@app.command()
def bronze(
    lake_root: Annotated[Path, typer.Option(help="Lake root: bronze tables go to <root>/bronze/<database>/<collection>.")],
    database: Database = "shop",
    changes: Annotated[int, typer.Option(help="Changes after the initial load.")] = 5000,
    batch_size: Annotated[int, typer.Option(help="Events per bronze commit.")] = 50_000,
    snapshot: Annotated[bool, typer.Option(help="Initial load as snapshot records (else inserts).")] = True,
    update_lookup: Annotated[bool, typer.Option(help="Updates carry the full document.")] = True,
    seed: Seed = 42,
    scale: Scale = 1.0,
    history_days: HistoryDays = 60,
    drift_every: DriftEvery = 2000,
) -> None:
    """Land the dataset and its changes directly as bronze Delta tables (no MongoDB, no Kafka)."""
    generator = SalesMarketingGenerator(_config(seed, scale, history_days, drift_every))
    encoder = ChangeEventEncoder(database, update_lookup=update_lookup)
    writer = BronzeFixtureWriter(lake_root.resolve())
    batch: list[dict[str, Any]] = []
    landed = 0
    with _progress() as progress:
        task = progress.add_task("landing bronze", total=None)
        for event in _event_stream(generator, encoder, changes, snapshot):
            batch.append(event)
            if len(batch) >= batch_size:
                writer.write(batch, datetime.now(UTC))
                landed += len(batch)
                batch.clear()
                progress.update(task, completed=landed)
        if batch:
            writer.write(batch, datetime.now(UTC))
            landed += len(batch)
            progress.update(task, completed=landed)
    typer.echo(json.dumps({"events": landed, "documents": generator.document_counts()}))


@app.command()
def events(
    out: Annotated[Path, typer.Option(help="Output file: one change event per line, relaxed Extended JSON.")],
    database: Database = "shop",
    changes: Annotated[int, typer.Option(help="Changes after the initial load.")] = 5000,
    snapshot: Annotated[bool, typer.Option(help="Initial load as snapshot records (else inserts).")] = True,
    update_lookup: Annotated[bool, typer.Option(help="Updates carry the full document.")] = True,
    seed: Seed = 42,
    scale: Scale = 1.0,
    history_days: HistoryDays = 60,
    drift_every: DriftEvery = 2000,
) -> None:
    """Write the change events MongoDB would emit for the dataset, without MongoDB."""
    generator = SalesMarketingGenerator(_config(seed, scale, history_days, drift_every))
    encoder = ChangeEventEncoder(database, update_lookup=update_lookup)
    count = 0
    with out.open("wb") as handle:
        for event in _event_stream(generator, encoder, changes, snapshot):
            handle.write(to_relaxed_json(event) + b"\n")
            count += 1
    typer.echo(json.dumps({"events": count, "documents": generator.document_counts()}))


__all__ = ["app"]
