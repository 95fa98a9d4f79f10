"""The demo's result: rows per layer per collection, the verification, lag, a few gold KPIs; JSON and tables.

The verdict is the verification (``spark_jobs.verify``: MongoDB against silver document by
document); the rows per layer are shown beside it, they decide nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from rich.console import Console
from rich.table import Table

from spark_jobs.lake_tables import gold_table_uri
from spark_jobs.verify import describe_differences, verification_table


def _gold(lake_root: Path | str, name: str, storage_options: Mapping[str, str] | None = None) -> pl.DataFrame | None:
    try:
        table = DeltaTable(gold_table_uri(str(lake_root), name), storage_options=dict(storage_options or {}))
        return pl.from_arrow(table.to_pyarrow_table())  # type: ignore[return-value]
    except TableNotFoundError:
        return None


def _sum(frame: pl.DataFrame | None, column: str) -> float | None:
    if frame is None or column not in frame.columns:
        return None
    return float(frame[column].cast(pl.Float64).fill_null(0).sum())


def gold_kpis(lake_root: Path | str, storage_options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Headline figures from the marts; a figure whose mart or column is missing is left out."""
    kpis: dict[str, Any] = {}
    orders = _gold(lake_root, "orders", storage_options)
    revenue = _sum(orders, "revenue")
    if orders is not None and revenue is not None:
        revenue_orders = orders.filter(pl.col("revenue").cast(pl.Float64).fill_null(0) > 0).height
        kpis["revenue"] = round(revenue, 2)
        kpis["revenue_orders"] = revenue_orders
        kpis["average_order_value"] = round(revenue / revenue_orders, 2) if revenue_orders else None
    customers = _gold(lake_root, "customers", storage_options)
    if customers is not None and "lifetime_value" in customers.columns:
        kpis["paying_customers"] = customers.filter(pl.col("lifetime_value").cast(pl.Float64).fill_null(0) > 0).height
    campaigns = _gold(lake_root, "campaign_performance", storage_options)
    spend, attributed = _sum(campaigns, "spend"), _sum(campaigns, "attributed_revenue")
    if spend is not None and attributed is not None:
        kpis["ad_spend"] = round(spend, 2)
        kpis["roas"] = round(attributed / spend, 3) if spend else None
    if campaigns is not None and {"roas", "campaign_id"} <= set(campaigns.columns):
        best = campaigns.filter(pl.col("roas").is_not_null()).sort("roas", descending=True).head(1)
        if best.height:
            kpis["best_campaign_by_roas"] = {"campaign_id": best["campaign_id"][0], "roas": round(float(best["roas"][0]), 3)}
    funnel = _gold(lake_root, "conversion_funnel", storage_options)
    sessions, purchased = _sum(funnel, "sessions"), _sum(funnel, "purchased")
    if sessions and purchased is not None:
        kpis["sessions"] = int(sessions)
        kpis["conversion_rate"] = round(purchased / sessions, 4)
    return kpis


def verification_problems(verification: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per collection and kind of difference the verification found, with example ids."""
    return [line for collection, result in verification.items() for line in describe_differences(collection, result)]


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(console: Console, summary: Mapping[str, Any]) -> None:
    """Rows per layer and collection, the verification, then the lag and the KPIs, as small tables."""
    layers = Table(title=f"rows per layer (MongoDB: {summary['mongo_kind']})")
    for column in ("collection", "mongo", "bronze events", "silver current"):
        layers.add_column(column, justify="left" if column == "collection" else "right")
    for collection, expected in summary["mongo"].items():
        layers.add_row(
            collection, _number(expected), _number(summary["bronze"].get(collection)), _number(summary["silver"].get(collection))
        )
    console.print(layers)
    verified = "[green]verified[/]" if summary["verified"] else "[red]NOT verified[/]"
    console.print(verification_table(summary["verification"], f"verification, document by document: {verified}"))

    figures = Table(title="end-to-end lag and gold KPIs", show_header=False)
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    lag = summary.get("lag") or {}
    figures.add_row("lag of the last MongoDB write to bronze (s)", _number(summary.get("lag_seconds")))
    figures.add_row(
        "lag p50 / p95 / max over change events (s)",
        " / ".join(_number(lag.get(k)) for k in ("p50_seconds", "p95_seconds", "max_seconds")),
    )
    labels = {
        "revenue": "revenue (paid, shipped, delivered)",
        "revenue_orders": "orders with revenue",
        "average_order_value": "average order value",
        "paying_customers": "paying customers",
        "ad_spend": "ad spend",
        "roas": "ROAS (attributed revenue / spend)",
        "sessions": "web sessions",
        "conversion_rate": "session conversion rate",
    }
    kpis = summary.get("kpis") or {}
    for key, label in labels.items():
        if key in kpis:
            value = kpis[key]
            figures.add_row(label, f"{value:.1%}" if key == "conversion_rate" and value is not None else _number(value))
    if "best_campaign_by_roas" in kpis:
        best = kpis["best_campaign_by_roas"]
        figures.add_row("best campaign by ROAS", f"{best['campaign_id']} ({best['roas']})")
    console.print(figures)
    gold = summary.get("gold") or {}
    if gold:
        console.print("gold tables: " + ", ".join(f"{name} {rows:,}" for name, rows in gold.items()))


__all__ = ["gold_kpis", "render", "verification_problems", "write_summary"]
