"""``bronze-writer run|status|compact|vacuum|reset-offsets``: land the CDC topics in Delta bronze tables.

Configuration comes from ``BRONZE_*`` environment variables and/or ``--config FILE.yaml``
(see docs/bronze_writer.md); it is validated before anything starts. Exit codes are
``lakehouse_common.lifecycle.ExitCode``: 0 done, 1 a fatal error (logged), 2 bad settings or
arguments, 130 a second stop signal.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from bronze_writer.settings import BronzeSettings
from lakehouse_common.cli import config_option, load_cli_settings
from lakehouse_common.errors import ConfigError, LakehouseError
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.object_store import probe_conditional_commits

logger = logging.getLogger("bronze_writer")

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
                raise typer.Exit(ExitCode.BAD_CONFIGURATION)
            uris.append(bronze_table_uri(settings.lake.root, database, collection))
        return uris
    return discover_tables(settings)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Consume the CDC topics and land them in bronze until SIGTERM/SIGINT (a second one stops at once)."""
    from bronze_writer.app import BronzeWriter
    from bronze_writer.errors import describe, is_native_panic

    settings = _writable_settings(config)
    try:
        BronzeWriter(settings).run()
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION) from None
    except BaseException as error:
        if not isinstance(error, Exception) and not is_native_panic(error):
            raise  # KeyboardInterrupt, SystemExit
        logger.error("bronze writer failed", exc_info=error)
        typer.echo(f"error: {describe(error)}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None


@app.command("reset-offsets")
def reset_offsets(
    topic: Annotated[str, typer.Option(help="The topic whose partitions continue elsewhere.")],
    config: ConfigOption = None,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", "-p", help="Only this partition (repeatable; default: all).")
    ] = None,
    to: Annotated[
        str, typer.Option(help="Where landing continues: earliest, latest, or the next offset to land.")
    ] = "earliest",
) -> None:
    """Record in the topic's bronze table where its partitions continue, after an offset discontinuity.

    For a topic deleted and recreated, or moved to another Kafka cluster: the writer stops
    (policy ``fail``) naming this command. Stop every bronze-writer replica first. The commit
    holds no data; it moves the partitions' offsets and records the cluster and topic ids.
    Events the table holds already are still recognized by their ids.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from bronze_writer.offsets import KafkaInspector
    from bronze_writer.tables import BronzeTable, namespace_for_topic

    settings = _settings(config)
    if to not in ("earliest", "latest") and not to.isdigit():
        typer.echo(f"error: --to {to!r}: expected earliest, latest or an offset", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION)
    database, collection = namespace_for_topic(topic, settings.consumer.topic_prefix, settings.consumer.topic_tables)
    table = BronzeTable(settings.lake, database, collection)
    if table.version is None:
        typer.echo(f"error: no bronze table for {topic} at {table.uri}", err=True)
        raise typer.Exit(ExitCode.FAILED)
    admin = AdminClient(dict(settings.kafka.librdkafka_config()))
    inspector = KafkaInspector(admin)
    try:
        partitions = sorted(partition or _partitions_of(admin, topic))
        identity = inspector.identities([topic])[topic]
        watermarks = inspector.watermarks((topic, number) for number in partitions)
    except KafkaException as error:
        typer.echo(f"error: Kafka did not answer about {topic}: {error}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    index = {"earliest": 0, "latest": 1}
    next_offsets = {
        number: int(to) if to.isdigit() else watermarks[(topic, number)][index[to]] for number in partitions
    }
    before = {number: table.landed_offset(topic, number) for number in partitions}
    table.reset_offsets(topic, next_offsets, identity, f"reset-offsets --to {to}", settings.replica_name)
    for number in partitions:
        low, high = watermarks[(topic, number)]
        previous = before[number]
        typer.echo(
            f"{topic}[{number}]: next offset {'none' if previous is None else previous + 1} -> {next_offsets[number]} "
            f"(Kafka has {low} to {high - 1})"
        )


def _partitions_of(admin: object, topic: str) -> list[int]:
    metadata = admin.list_topics(topic, timeout=15)  # type: ignore[attr-defined]
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        typer.echo(f"error: Kafka does not know topic {topic}", err=True)
        raise typer.Exit(ExitCode.FAILED)
    return list(found.partitions)


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
    claims: Annotated[
        bool, typer.Option(help="Also collect claims (default unless --table is given); see maintenance.claim_*.")
    ] = True,
    claim_retention_hours: Annotated[
        int | None, typer.Option(help="Override maintenance.claim_retention_hours.")
    ] = None,
) -> None:
    """Delete files that no version within the retention needs (deltalake vacuum), and claims no record needs."""
    from bronze_writer.maintenance import collect_claims, vacuum_table

    settings = _writable_settings(config)
    for uri in _tables(settings, table):
        removed = vacuum_table(uri, settings, retention_hours, dry_run)
        typer.echo(f"{uri}: {len(removed)} files {'would be ' if dry_run else ''}removed")
    if claims and not table:
        result = collect_claims(settings, claim_retention_hours, dry_run)
        verb = "would be deleted" if dry_run else "deleted"
        typer.echo(
            f"claims: {result.deleted} landed ({result.deleted_bytes} bytes) and {result.orphans_deleted} orphans "
            f"({result.orphans_deleted_bytes} bytes) {verb}; {result.kept} landed kept, {result.orphans_kept} never "
            f"marked landed kept ({result.orphans_kept_bytes} bytes"
            + (f", oldest {result.oldest_orphan.isoformat()}" if result.oldest_orphan else "") + ")"
        )


__all__ = ["app"]
