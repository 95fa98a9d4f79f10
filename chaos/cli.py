"""``lakehouse-chaos`` (``make chaos``): faults against the real pipeline, then proof that nothing was lost.

    lakehouse-chaos                         50 fault cycles per delivery mode (both modes)
    lakehouse-chaos --cycles 5              a short run (one fault of each kind)
    lakehouse-chaos --mode exactly_once     one delivery mode only
    lakehouse-chaos --seed 1234             the same fault schedule and workload again

Every option is also a ``CHAOS_*`` environment variable (docs/chaos.md). The run starts
its own Kafka broker and MongoDB stand-in and stops everything it started. Exit status
(lakehouse_common.lifecycle.ExitCode): 0 when every write is in bronze exactly once and
bronze and silver equal MongoDB in every mode; 1 when anything was lost, duplicated or
differs, or a service exited on its own; 2 on bad settings; 130 when interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from cdc_service.settings import DeliveryMode
from chaos.run import ChaosRun
from chaos.settings import ChaosSettings
from lakehouse_common.cli import load_cli_settings

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    cycles: Annotated[int | None, typer.Option(help="Fault cycles per delivery mode (CHAOS_CYCLES, 50).")] = None,
    mode: Annotated[
        list[DeliveryMode] | None, typer.Option(help="Delivery mode to run (repeatable; CHAOS_MODES, both).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the schedule and the workload (CHAOS_SEED).")] = None,
    rate: Annotated[float | None, typer.Option(help="Workload writes per second (CHAOS_RATE, 40).")] = None,
    silver: Annotated[bool | None, typer.Option("--silver/--no-silver", help="Build and compare silver (CHAOS_SILVER).")] = None,
) -> None:
    """Run the workload under faults in each delivery mode, verify bronze and silver, write result.json."""
    overrides: dict[str, Any] = {}
    for key, value in (("cycles", cycles), ("modes", mode), ("seed", seed), ("rate", rate), ("silver", silver)):
        if value is not None:
            overrides[key] = value
    settings = load_cli_settings(ChaosSettings, None, None, **overrides)
    console = Console() if sys.stdout.isatty() else Console(width=140)  # a log file keeps whole lines
    raise typer.Exit(ChaosRun(settings, console).run())


if __name__ == "__main__":
    app()
