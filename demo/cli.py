"""``lakehouse-demo`` (``make demo``): the whole pipeline on this machine, then a summary.

    lakehouse-demo                    load, stream for 60 s, catch up, dbt build, summary, stop
    lakehouse-demo --duration 300     ... with five minutes of changes
    lakehouse-demo --keep-running     stay live (``make demo-live``): dbt rebuilds on a schedule
    lakehouse-demo --lake s3          the lake on the local stack's S3-compatible object store (SeaweedFS)

Kafka and the MongoDB stand-in are started for the run; ``MONGO_URI=mongodb://...`` uses a
real replica set instead. Every option is also a ``DEMO_*`` environment variable.
Exit status (``lakehouse_common.lifecycle.ExitCode``): 0 when the verification (MongoDB
against silver document by document, ``spark_jobs.verify``) finds every collection equal,
4 (DIFFERENCES_FOUND) when it does not, 1 (FAILED) on an error or when dbt failed, 2 on bad
settings, 130 when interrupted.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from demo.run import DemoRun
from demo.settings import DemoSettings
from lakehouse_common.cli import load_cli_settings

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    duration: Annotated[
        float | None, typer.Option(help="Seconds the generator keeps changing data (DEMO_DURATION_SECONDS, 60).")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Changes per second (DEMO_RATE, 40).")] = None,
    scale: Annotated[float | None, typer.Option(help="Dataset size factor (DEMO_SCALE, 1.0: about 11k documents).")] = None,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Keep the pipeline live until Ctrl-C.")] = False,
    dbt_every: Annotated[float | None, typer.Option(help="With --keep-running: minutes between dbt rebuilds (2).")] = None,
    lake: Annotated[
        str | None, typer.Option(help="local (a directory) or s3 (the local stack's object store) (DEMO_LAKE).")
    ] = None,
) -> None:
    """Load, stream, catch up, build silver and gold, and verify silver against MongoDB document by document."""
    overrides: dict[str, Any] = {}
    for key, value in (
        ("duration_seconds", duration),
        ("rate", rate),
        ("scale", scale),
        ("dbt_interval_minutes", dbt_every),
        ("lake", lake),
    ):
        if value is not None:
            overrides[key] = value
    if keep_running:
        overrides["keep_running"] = True
    settings = load_cli_settings(DemoSettings, None, None, **overrides)
    raise typer.Exit(DemoRun(settings, Console()).run())


if __name__ == "__main__":
    app()
