"""The run's verdict on the terminal: one row per delivery mode, then how fast bronze recovered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.faults import Victim


def _count(value: Any) -> str:
    if value is None:
        return "-"
    return f"[red]{value:,}[/]" if value else "0"


def _seconds(figures: Mapping[str, Any]) -> str:
    if not figures.get("count"):
        return "-"
    return f"{figures['p50']:.1f} / {figures['max']:.1f} ({figures['count']})"


def render(console: Console, result: Mapping[str, Any]) -> None:
    """The summary table (per mode) and the recovery table (per victim)."""
    modes: Mapping[str, Mapping[str, Any]] = result["modes"]
    verdicts = Table(title=f"chaos: seed {result['seed']}, {result['duration_seconds']:.0f}s, load {result['machine']['load_average_after']}")
    for column in ("mode", "cycles", "kills", "writes", "lost", "duplicated", "bronze replay ≠", "silver ≠", "exits", "stalls", "verdict"):
        verdicts.add_column(column, justify="left" if column in ("mode", "kills", "verdict") else "right")
    for name, mode in modes.items():
        layers = mode["state_mismatches_by_layer"]
        kills = ", ".join(f"{victim} {count}" for victim, count in mode["kills"].items() if count)
        verdicts.add_row(
            name,
            str(mode["cycles"]),
            kills,
            f"{mode['writes']:,}",
            _count(mode["lost"]),
            _count(mode["duplicated"]),
            _count(layers["bronze_replay"]),
            _count(layers["silver"]),
            _count(len(mode["unexpected_exits"])),
            str(mode["stalls"]),
            "[green]clean[/]" if mode["ok"] else "[red]FAILED[/]",
        )
    console.print(verdicts)
    recovery = Table(title="fault to bronze landing a newer write, seconds: p50 / max (samples)")
    recovery.add_column("victim")
    for name in modes:
        recovery.add_column(name, justify="right")
    for victim in Victim:
        recovery.add_row(victim.value, *(_seconds(mode["recovery_seconds"][victim.value]) for mode in modes.values()))
    recovery.add_row(
        "writer start → partitions assigned",
        *(_seconds(mode["writer_restart_seconds"]["partitions_assigned"]) for mode in modes.values()),
    )
    recovery.add_row(
        "writer start → first commit", *(_seconds(mode["writer_restart_seconds"]["first_commit"]) for mode in modes.values())
    )
    console.print(recovery)


__all__ = ["render"]
