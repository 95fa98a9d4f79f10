"""``bronze-writer run|status|compact|vacuum``: land the CDC topics in Delta bronze tables.

Configuration comes from ``BRONZE_*`` environment variables and/or ``--config FILE.yaml``
(see docs/bronze_writer.md); it is validated before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bronze_writer.settings import BronzeSettings
from lakehouse_common.cli import config_option, load_cli_settings
from lakehouse_common.errors import ConfigError, LakehouseError
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.object_store import probe_conditional_commits

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

ConfigOption = config_option("BRONZE_CONFIG")
TableOption = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="Only this table, as <db>.<collection> (repeatable).")
]


def _settings(config: Path | None) -> BronzeSettings:
    return load_cli_settings(BronzeSettings, config, "bronze-writer")


def _writable_settings(config: Path | None) -> BronzeSettings:
    """Settings for a command that commits: on an object store, first prove its conditional writes work."""
    settings = _settings(config)
    try:
        probe_conditional_commits(settings.lake.root, settings.lake.deltalake_options(), settings.replica_name)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION) from None
    except LakehouseError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    return settings


def _tables(settings: BronzeSettings, names: list[str] | None) -> list[str]:
    from bronze_writer.maintenance import discover_tables
    from lakehouse_common.lake import bronze_table_uri

    if names:
        uris = []
        for name in names:
            database, _, collection = name.partition(".")
            if not collection:
                typer.echo(f"error: --table {name!r}: expected <db>.<collection>", err=True)
                raise typer.Exit(2)
            uris.append(bronze_table_uri(settings.lake.root, database, collection))
        return uris
    return discover_tables(settings)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Consume the CDC topics and land them in bronze until SIGTERM/SIGINT."""
    from bronze_writer.app import BronzeWriter

    settings = _writable_settings(config)
    try:
        BronzeWriter(settings).run()
    except LakehouseError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    config: ConfigOption = None,
    table: TableOption = None,
    kafka: Annotated[bool, typer.Option(help="Ask Kafka for high watermarks to show the lag.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per table: Delta version and, per partition, the landed offset, last event id and lag."""
    from bronze_writer.maintenance import add_kafka_high_watermarks, table_status

    settings = _settings(config)
    statuses = [table_status(uri, settings) for uri in _tables(settings, table)]
    if kafka:
        add_kafka_high_watermarks(statuses, settings)
    if as_json:
        payload = [
            {
                "table": status.uri,
                "version": status.version,
                "error": status.error,
                "partitions": [
                    {
                        "topic": partition.topic,
                        "partition": partition.partition,
                        "landed_offset": partition.landed_offset,
                        "last_event_id": partition.last_event_id,
                        "high_watermark": partition.high_watermark,
                        "lag": partition.lag,
                    }
                    for partition in status.partitions
                ],
            }
            for status in statuses
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    if not statuses:
        typer.echo(f"no bronze tables under {settings.lake.root}")
        return
    for status in statuses:
        typer.echo(f"{status.uri}  version {status.version}" + (f"  ({status.error})" if status.error else ""))
        for partition in status.partitions:
            lag = "?" if partition.lag is None else str(partition.lag)
            typer.echo(
                f"  {partition.topic}[{partition.partition}]  offset {partition.landed_offset}  "
                f"last event {partition.last_event_id}  lag {lag}"
            )


@app.command()
def compact(config: ConfigOption = None, table: TableOption = None) -> None:
    """Bin-pack small files into files of the target size (deltalake optimize)."""
    from bronze_writer.maintenance import compact_table

    settings = _writable_settings(config)
    for uri in _tables(settings, table):
        metrics = compact_table(uri, settings)
        typer.echo(f"{uri}: {metrics.get('numFilesRemoved', 0)} files -> {metrics.get('numFilesAdded', 0)}")


@app.command()
def vacuum(
    config: ConfigOption = None,
    table: TableOption = None,
    retention_hours: Annotated[int | None, typer.Option(help="Override maintenance.vacuum_retention_hours.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List the files without deleting them.")] = False,
) -> None:
    """Delete files that no version within the retention needs (deltalake vacuum)."""
    from bronze_writer.maintenance import vacuum_table

    settings = _writable_settings(config)
    for uri in _tables(settings, table):
        removed = vacuum_table(uri, settings, retention_hours, dry_run)
        typer.echo(f"{uri}: {len(removed)} files {'would be ' if dry_run else ''}removed")


__all__ = ["app"]
