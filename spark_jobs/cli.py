"""``spark-jobs``: the dbt runner, table maintenance and lake counts.

    spark-jobs dbt                      run the configured dbt commands once (a CronJob)
    spark-jobs dbt --every 15           ... every 15 minutes, serving /metrics and health
    spark-jobs dbt -- build -s silver   run this dbt command instead
    spark-jobs maintain                 OPTIMIZE (Z-ORDER where configured) and VACUUM every table
    spark-jobs counts                   rows per silver and gold table, as JSON
    spark-jobs verify                   MongoDB against silver, document by document (--json)
    spark-jobs scaffold shop.tickets    silver models, their yml and the source entry of a new collection
    spark-jobs spark-defaults DIR       write spark-defaults.conf for other Spark processes

Settings come from SPARK_JOBS_* environment variables and/or ``--config file.yaml``.
Exit codes are ``lakehouse_common.lifecycle.ExitCode``: ``dbt`` run once exits FAILED when
a dbt command failed (dbt's own status is in the log) and INTERRUPTED when a stop request
cut the run short; ``dbt --every`` runs until stopped and then exits OK. ``scaffold`` exits
BAD_CONFIGURATION when it refuses the arguments (a name collision, files that exist without
--force) and FAILED when the bronze table cannot be read (it does not exist yet).
``verify`` exits OK when silver holds exactly MongoDB's documents, DIFFERENCES_FOUND when
any collection differs, BAD_CONFIGURATION without a usable MongoDB URI, and FAILED when
MongoDB does not answer, a silver table cannot be read or there is nothing to compare.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Annotated

import typer
from deltalake.exceptions import DeltaError
from prometheus_client import CollectorRegistry
from rich.console import Console

from lakehouse_common.cli import config_option, load_cli_settings
from lakehouse_common.lifecycle import ExitCode, stop_on_signals
from lakehouse_common.observability import ObservabilityServer, Status
from lakehouse_common.redaction import redact
from spark_jobs.dbt_runner import DbtResult, DbtRunner, absolute_lake_root
from spark_jobs.lake_tables import layer_counts
from spark_jobs.scaffold import Namespace, ScaffoldRefused, plan_scaffold
from spark_jobs.session import build_spark_session, write_spark_defaults
from spark_jobs.settings import Layer, SparkJobsSettings

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
logger = logging.getLogger("spark_jobs")

ConfigOption = Annotated[Path | None, config_option("SPARK_JOBS_CONFIG")]


def _settings(config: Path | None, **overrides: object) -> SparkJobsSettings:
    return load_cli_settings(SparkJobsSettings, config, "spark-jobs", **overrides)


def dbt_exit_code(results: list[DbtResult], planned: int, stop: threading.Event) -> ExitCode:
    """OK when every planned command ran and passed; INTERRUPTED when a stop cut the run short; else FAILED."""
    if stop.is_set() and (len(results) < planned or any(not result.ok for result in results)):
        return ExitCode.INTERRUPTED
    return ExitCode.OK if all(result.ok for result in results) else ExitCode.FAILED


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt(
    context: typer.Context,
    config: ConfigOption = None,
    every: Annotated[float | None, typer.Option(help="Minutes between runs; without it, run once.")] = None,
) -> None:
    """Run dbt (the configured commands, or the one after --) and exit with dbt's status."""
    settings = _settings(config)
    updates: dict[str, object] = {}
    if context.args:
        updates["commands"] = [" ".join(context.args)]
    if every is not None:
        updates["interval_minutes"] = every
    if updates:
        settings = settings.model_copy(update={"dbt": settings.dbt.model_copy(update=updates)})
    stop = threading.Event()
    registry = CollectorRegistry()
    runner = DbtRunner(settings, stop=stop, registry=registry)
    planned = len(settings.dbt.commands)
    if settings.dbt.interval_minutes is None:
        with stop_on_signals(stop):
            results = runner.run_all()
        raise typer.Exit(dbt_exit_code(results, planned, stop))
    server = ObservabilityServer(
        registry,
        liveness=lambda: Status(not stop.is_set(), "stopping" if stop.is_set() else ""),
        readiness=lambda: Status(
            all(result.ok for result in runner.last_results),
            "; ".join(f"{result.command} exited {result.exit_code}" for result in runner.last_results if not result.ok),
        ),
        host=settings.http.host,
        port=settings.http.port,
    ).start()
    try:
        with stop_on_signals(stop):
            runner.run_forever()
    finally:
        server.stop()
    # A schedule ends on a stop request: that is its normal end (each run's outcome is in the
    # log, the metrics and /readyz while it runs).
    raise typer.Exit(ExitCode.OK)


@app.command()
def maintain(
    config: ConfigOption = None,
    layer: Annotated[list[str] | None, typer.Option(help="Layer to maintain (repeatable): bronze, silver, gold.")] = None,
    retention_hours: Annotated[float | None, typer.Option(help="VACUUM retention in hours.")] = None,
    optimize: Annotated[bool, typer.Option(help="Compact (OPTIMIZE, Z-ORDER where configured).")] = True,
    vacuum: Annotated[bool, typer.Option(help="VACUUM after compaction.")] = True,
) -> None:
    """OPTIMIZE and VACUUM the lake's Delta tables, logging a report per table; exits 1 if any failed."""
    from spark_jobs.maintenance import maintain as run_maintenance

    settings = _settings(config)
    updates: dict[str, object] = {}
    if layer:
        allowed: tuple[Layer, ...] = ("bronze", "silver", "gold")
        unknown = [name for name in layer if name not in allowed]
        if unknown:
            typer.echo(f"unknown layer(s) {unknown}: choose from {list(allowed)}", err=True)
            raise typer.Exit(ExitCode.BAD_CONFIGURATION)
        updates["layers"] = layer
    if retention_hours is not None:
        updates["retention_hours"] = retention_hours
    maintenance = settings.maintenance.model_copy(update=updates)
    # Tables are addressed by path: an in-memory catalog leaves the local metastore to dbt.
    spark_settings = settings.spark.model_copy(
        update={"extra_conf": {**settings.spark.extra_conf, "spark.sql.catalogImplementation": "in-memory"}}
    )
    spark = build_spark_session(spark_settings, settings.object_store_options())
    try:
        reports = run_maintenance(
            spark,
            absolute_lake_root(settings.lake_root),
            maintenance,
            compact=optimize,
            clean=vacuum,
            storage_options=settings.object_store_options(),
        )
    finally:
        spark.stop()
    failed = [report["table"] for report in reports if "error" in report]
    logger.log(
        logging.ERROR if failed else logging.INFO,
        "maintenance finished",
        extra={"tables": len(reports), "failed": failed, "reports": reports},
    )
    raise typer.Exit(ExitCode.FAILED if failed else ExitCode.OK)


@app.command()
def counts(config: ConfigOption = None) -> None:
    """Rows per silver (current state and history, by collection) and gold table, as JSON."""
    settings = _settings(config)
    counted = layer_counts(absolute_lake_root(settings.lake_root), settings.object_store_options())
    typer.echo(json.dumps(counted, indent=2, sort_keys=True))


@app.command()
def verify(
    config: ConfigOption = None,
    mongo_uri: Annotated[
        str | None, typer.Option(help="MongoDB connection string (default: SPARK_JOBS_VERIFY__MONGO_URI).")
    ] = None,
    database: Annotated[
        str | None, typer.Option(help="MongoDB database (default: verify.database, else dbt.mongo_database).")
    ] = None,
    collection: Annotated[
        list[str] | None, typer.Option(help="Collection to compare (repeatable; default: every collection with a silver table).")
    ] = None,
    lake_root: Annotated[str | None, typer.Option(help="Lake root (default: the settings' lake_root).")] = None,
    examples: Annotated[int | None, typer.Option(min=0, help="Ids listed per kind of difference (default 10).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Compare MongoDB with silver's current state document by document; exit 4 on any difference."""
    import pymongo

    from spark_jobs.verify import render, silver_collections, verify_silver

    settings = _settings(config, **({"lake_root": lake_root} if lake_root is not None else {}))
    options = settings.verify
    uri = mongo_uri or (options.mongo_uri.get_secret_value() if options.mongo_uri else None)
    if not uri:
        typer.echo("error: no MongoDB to compare with: give --mongo-uri or set SPARK_JOBS_VERIFY__MONGO_URI", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION)
    database = database or options.database or settings.dbt.mongo_database
    root = absolute_lake_root(settings.lake_root)
    storage = settings.object_store_options()
    shown = options.examples if examples is None else examples
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=int(options.server_selection_timeout_seconds * 1000)
        )
    except pymongo.errors.ConfigurationError as error:
        typer.echo(f"error: the MongoDB URI {redact(uri)} is not usable: {redact(str(error))}", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION) from None
    try:
        collections = list(collection or options.collections) or silver_collections(root, storage)
        if not collections:  # nothing compared proves nothing
            typer.echo(f"error: nothing to verify: {root} has no silver tables and no --collection was given", err=True)
            raise typer.Exit(ExitCode.FAILED)
        diffs = verify_silver(client[database], collections, root, storage)
    except pymongo.errors.PyMongoError as error:
        logger.error("verify failed: MongoDB", extra={"mongo_uri": redact(uri), "error": redact(str(error))})
        typer.echo(f"error: MongoDB at {redact(uri)} did not answer: {redact(str(error))}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    except (DeltaError, OSError) as error:
        logger.error("verify failed: silver", extra={"lake_root": root, "error": str(error)})
        typer.echo(f"error: silver in {root} cannot be read: {error}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    finally:
        client.close()
    results = {name: diff.as_dict(shown) for name, diff in diffs.items()}
    verified = all(diff.ok for diff in diffs.values())
    logger.log(
        logging.INFO if verified else logging.ERROR,
        "verify finished",
        extra={
            "verified": verified,
            "database": database,
            "collections": {name: diff.mismatches for name, diff in diffs.items()},
        },
    )
    if as_json:
        report = {"verified": verified, "database": database, "lake_root": root, "collections": results}
        typer.echo(json.dumps(report, indent=2))
    else:
        console = Console()
        render(console, results)
        console.print("[green]silver holds exactly MongoDB's documents[/]" if verified else "[red]silver differs from MongoDB[/]")
    raise typer.Exit(ExitCode.OK if verified else ExitCode.DIFFERENCES_FOUND)


@app.command()
def scaffold(
    namespace: Annotated[str, typer.Argument(help="The collection as <database>.<collection>.")],
    config: ConfigOption = None,
    lake_root: Annotated[str | None, typer.Option(help="Lake root (default: the settings' lake_root).")] = None,
    project_dir: Annotated[Path | None, typer.Option(help="The dbt project (default: the settings' dbt.project_dir).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite the collection's generated files.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print what would be written; write nothing.")] = False,
) -> None:
    """Write the silver models, their yml and the source entry of a collection, from its bronze table's columns."""
    settings = _settings(config, **({"lake_root": lake_root} if lake_root is not None else {}))
    try:
        plan = plan_scaffold(
            Namespace.parse(namespace),
            lake_root=absolute_lake_root(settings.lake_root),
            project_dir=project_dir or settings.dbt.project_dir,
            default_database=settings.dbt.mongo_database,
            storage_options=settings.object_store_options(),
            force=force,
        )
    except ScaffoldRefused as refusal:
        logger.error("scaffold refused", extra={"namespace": namespace, "reason": str(refusal)})
        typer.echo(f"error: {refusal}", err=True)
        raise typer.Exit(refusal.exit_code) from None
    if dry_run:
        typer.echo(plan.describe())
    else:
        plan.write()
    logger.info(
        "scaffold planned (dry run)" if dry_run else "scaffold written",
        extra={
            "namespace": str(plan.namespace),
            "source_table": plan.table,
            "models": list(plan.models),
            "columns": plan.columns,
            "files": {str(planned.path): planned.action for planned in plan.files},
        },
    )
    raise typer.Exit(ExitCode.OK)


@app.command("spark-defaults")
def spark_defaults(directory: Path, config: ConfigOption = None) -> None:
    """Write spark-defaults.conf (Delta, warehouse, metastore) into DIRECTORY, for SPARK_CONF_DIR."""
    settings = _settings(config)
    typer.echo(str(write_spark_defaults(settings.spark, directory, settings.object_store_options())))


__all__ = ["app", "dbt_exit_code"]
