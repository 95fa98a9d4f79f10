"""``build/demo/report.html``: the demo's result as one page to look at.

Its inputs are two files the demo writes, so the page can be rebuilt without the lake
(``python -m demo.report build/demo``):

- ``summary.json`` (``demo.summary``): rows per layer per collection, the verdict, timings,
  gold KPIs;
- ``series.json`` (``report_inputs``): per-stage throughput and end-to-end lag over the run
  read back from bronze, the services' metrics sampled during the run, and a few gold
  aggregates for the charts.

The verification verdict per collection comes from ``verification_rows``, the one place
that reads it: the summary's ``verification`` mapping (collection -> ``spark_jobs.verify``'s
``StateDiff.as_dict``: ``ok``, the ``mongo`` and ``silver`` counts, and how many documents
are ``missing``, ``extra`` and ``differing`` by hash); a summary recorded before the demo
verified documents has only counts, and gets the comparison of the document counts.

Plotly draws the charts: interactive (hover for exact values, zoom into a lag spike), and
``plotly.js`` is embedded once in the page, so it opens anywhere with no network.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from plotly.offline import get_plotlyjs

from demo.timeseries import MetricsSampler, pipeline_series
from lakehouse_common.lifecycle import ExitCode
from spark_jobs.lake_tables import gold_table_uri

SUMMARY_FILE = "summary.json"
SERIES_FILE = "series.json"
REPORT_FILE = "report.html"

FUNNEL_STEPS = ("sessions", "viewed_item", "added_to_cart", "began_checkout", "purchased")
STAGE_COLOURS = {"mongodb": "#4c8c2b", "kafka": "#231f20", "bronze": "#cd7f32"}
STAGE_LABELS = {"mongodb": "MongoDB writes", "kafka": "published to Kafka", "bronze": "landed in bronze"}


# ---------------------------------------------------------------- inputs


def _gold(lake_root: Path, name: str) -> pl.DataFrame | None:
    try:
        frame = pl.from_arrow(DeltaTable(gold_table_uri(str(lake_root), name)).to_pyarrow_table())
    except TableNotFoundError:
        return None
    return frame if isinstance(frame, pl.DataFrame) and frame.height else None


def gold_chart_data(lake_root: Path) -> dict[str, Any]:
    """The gold aggregates the charts show; a mart that was not built is left out."""
    data: dict[str, Any] = {}
    funnel = _gold(lake_root, "conversion_funnel")
    if funnel is not None and set(FUNNEL_STEPS) <= set(funnel.columns):
        data["funnel"] = {step: int(funnel[step].cast(pl.Int64).fill_null(0).sum()) for step in FUNNEL_STEPS}
    revenue = _gold(lake_root, "daily_revenue")
    if revenue is not None and {"order_date", "sales_channel", "revenue"} <= set(revenue.columns):
        monthly = (
            revenue.with_columns(pl.col("order_date").cast(pl.Date).dt.truncate("1mo").alias("month"))
            .group_by("month", "sales_channel")
            .agg(pl.col("revenue").cast(pl.Float64).sum())
            .sort("month", "sales_channel")
        )
        data["monthly_revenue"] = [
            {"month": row["month"].isoformat(), "channel": row["sales_channel"] or "unknown", "revenue": round(row["revenue"], 2)}
            for row in monthly.iter_rows(named=True)
            if row["month"] is not None
        ]
    campaigns = _gold(lake_root, "campaign_performance")
    if campaigns is not None and {"channel", "spend", "attributed_revenue"} <= set(campaigns.columns):
        channels = (
            campaigns.group_by("channel")
            .agg(
                pl.col("spend").cast(pl.Float64).fill_null(0).sum(),
                pl.col("attributed_revenue").cast(pl.Float64).fill_null(0).sum(),
            )
            .sort("channel")
        )
        data["channels"] = [
            {
                "channel": row["channel"] or "unknown",
                "spend": round(row["spend"], 2),
                "attributed_revenue": round(row["attributed_revenue"], 2),
            }
            for row in channels.iter_rows(named=True)
        ]
    return data


def report_inputs(
    lake_root: Path, database: str, collections: Iterable[str], sampler: MetricsSampler | None, dbt_ok: bool
) -> dict[str, Any]:
    """Everything ``series.json`` holds (the summary holds the rest)."""
    return {
        "pipeline": pipeline_series(lake_root, database, collections),
        "samples": list(sampler.samples) if sampler is not None else [],
        "sample_interval_seconds": sampler.interval_seconds if sampler is not None else None,
        "gold": gold_chart_data(lake_root) if dbt_ok else {},
    }


# ---------------------------------------------------------------- what the page says


@dataclass(frozen=True)
class Verdict:
    collection: str
    ok: bool
    detail: str


def verification_rows(summary: Mapping[str, Any]) -> list[Verdict]:
    """The verification verdict per collection (see the module docstring for the sources)."""
    verification = summary.get("verification")
    if isinstance(verification, Mapping) and verification:
        return [
            Verdict(
                collection,
                bool(result["ok"]),
                f"MongoDB {result['mongo']:,} documents, silver {result['silver']:,}: {result['missing']:,} missing, "
                f"{result['extra']:,} extra, {result['differing']:,} differing (document hashes)",
            )
            for collection, result in verification.items()
        ]
    rows = []
    for collection, expected in (summary.get("mongo") or {}).items():
        actual = (summary.get("silver") or {}).get(collection)
        detail = (
            f"MongoDB {expected:,} documents, silver {actual:,} rows"
            if actual is not None
            else f"MongoDB {expected:,} documents, no silver table"
        )
        rows.append(Verdict(collection, actual == expected, detail + " (document counts)"))
    return rows


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    items: int | None
    seconds: float | None

    @property
    def per_second(self) -> float | None:
        if self.items is None or not self.seconds:
            return None
        return self.items / self.seconds


def _active(points: Sequence[Sequence[float]], width: int) -> tuple[int, float] | None:
    """Events and seconds from the first to the last bucket that saw any."""
    busy = [point for point in points if point[1] > 0]
    if not busy:
        return None
    events = round(sum(point[1] for point in busy) * width)
    return events, busy[-1][0] - busy[0][0] + width


def stage_rows(summary: Mapping[str, Any], series: Mapping[str, Any]) -> list[Stage]:
    """Throughput per stage: the snapshot, each streaming stage while it was busy, and dbt."""
    timings = summary.get("timings_seconds") or {}
    pipeline = series.get("pipeline") or {}
    width = int(pipeline.get("bucket_seconds") or 1)
    stages = [
        Stage(
            "snapshot",
            "documents copied into bronze",
            sum((summary.get("mongo") or {}).values()) or None,
            timings.get("snapshot_to_bronze"),
        )
    ]
    for key, label in STAGE_LABELS.items():
        active = _active((pipeline.get("throughput") or {}).get(key) or [], width)
        what = "change events" if key == "mongodb" else "events (snapshot included)"
        stages.append(Stage(label, what, *(active or (None, None))))
    built = (
        sum((summary.get("silver") or {}).values())
        + sum((summary.get("silver_history") or {}).values())
        + sum((summary.get("gold") or {}).values())
    )
    stages.append(Stage("dbt build", "silver and gold rows written", built or None, timings.get("dbt")))
    return stages


# ---------------------------------------------------------------- charts

_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "height": 340,
    "legend": {"orientation": "h", "y": -0.2},
    "font": {"family": "DejaVu Sans, Helvetica, Arial, sans-serif", "size": 12},
}


def _times(points: Iterable[Sequence[float]]) -> list[str]:
    return [datetime.fromtimestamp(point[0], UTC).strftime("%Y-%m-%d %H:%M:%S") for point in points]


def rows_chart(summary: Mapping[str, Any]) -> go.Figure | None:
    collections = list(summary.get("mongo") or {})
    if not collections:
        return None
    figure = go.Figure()
    for key, label in (
        ("mongo", "MongoDB documents"),
        ("bronze", "bronze events"),
        ("silver", "silver current state"),
        ("silver_history", "silver history"),
    ):
        values = summary.get(key) or {}
        figure.add_bar(name=label, x=collections, y=[values.get(collection) for collection in collections])
    figure.update_layout(_LAYOUT, title="Rows per layer per collection", barmode="group", yaxis_title="rows")
    return figure


def lag_chart(series: Mapping[str, Any]) -> go.Figure | None:
    lag = (series.get("pipeline") or {}).get("lag") or []
    if not lag:
        return None
    times = _times([[point["at"]] for point in lag])
    figure = go.Figure()
    figure.add_scatter(
        name="MongoDB → bronze, max",
        x=times,
        y=[point["to_bronze_max"] for point in lag],
        mode="lines",
        line={"color": "#c0392b", "width": 1},
    )
    figure.add_scatter(
        name="MongoDB → bronze, median",
        x=times,
        y=[point["to_bronze_p50"] for point in lag],
        mode="lines",
        line={"color": "#cd7f32", "width": 2},
    )
    figure.add_scatter(
        name="MongoDB → Kafka, median",
        x=times,
        y=[point["to_kafka_p50"] for point in lag],
        mode="lines",
        line={"color": "#231f20", "width": 1.5},
    )
    figure.update_layout(
        _LAYOUT,
        title="End-to-end lag over the run, per second of MongoDB write time",
        yaxis_title="seconds",
        hovermode="x unified",
    )
    return figure


def throughput_chart(series: Mapping[str, Any]) -> go.Figure | None:
    throughput = (series.get("pipeline") or {}).get("throughput") or {}
    if not any(throughput.values()):
        return None
    figure = go.Figure()
    for key, label in STAGE_LABELS.items():
        points = throughput.get(key) or []
        if points:
            # A second without events is a gap on the log axis, not a drop to an invisible zero.
            rates = [point[1] or None for point in points]
            figure.add_scatter(
                name=label,
                x=_times(points),
                y=rates,
                mode="lines+markers",
                marker={"size": 3},
                line={"color": STAGE_COLOURS[key], "width": 1.5},
            )
    # Log scale: the snapshot's thousands per second and the changes' tens share one chart.
    figure.update_layout(
        _LAYOUT, title="Throughput per stage", yaxis={"title": "events per second", "type": "log"}, hovermode="x unified"
    )
    return figure


def backlog_chart(series: Mapping[str, Any]) -> go.Figure | None:
    samples = series.get("samples") or []
    plotted = (
        ("bronze-writer", "bronze_consumer_lag_messages", "records in Kafka not yet in bronze", "y"),
        ("cdc-service", "cdc_checkpoint_age_seconds", "checkpoint age (s)", "y2"),
    )
    figure = go.Figure()
    for service, name, label, axis in plotted:
        points = [sample for sample in samples if sample["service"] == service and name in sample["values"]]
        if points:
            figure.add_scatter(
                name=label,
                x=_times([[sample["at"]] for sample in points]),
                y=[sample["values"][name] for sample in points],
                mode="lines",
                yaxis=axis,
            )
    if not figure.data:
        return None
    figure.update_layout(
        _LAYOUT,
        title=f"What the services reported (/metrics every {series.get('sample_interval_seconds') or '?'} s)",
        yaxis={"title": "records", "rangemode": "tozero"},
        yaxis2={"title": "seconds", "overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero"},
        hovermode="x unified",
    )
    return figure


def funnel_chart(series: Mapping[str, Any]) -> go.Figure | None:
    funnel = (series.get("gold") or {}).get("funnel")
    if not funnel:
        return None
    figure = go.Figure(
        go.Funnel(
            y=[step.replace("_", " ") for step in funnel],
            x=list(funnel.values()),
            textinfo="value+percent initial",
            marker={"color": "#4c8c2b"},
        )
    )
    figure.update_layout(_LAYOUT, title="Web conversion funnel (conversion_funnel)")
    return figure


def revenue_chart(series: Mapping[str, Any]) -> go.Figure | None:
    monthly = (series.get("gold") or {}).get("monthly_revenue")
    if not monthly:
        return None
    figure = go.Figure()
    for channel in sorted({row["channel"] for row in monthly}):
        rows = [row for row in monthly if row["channel"] == channel]
        figure.add_bar(name=channel, x=[row["month"][:7] for row in rows], y=[row["revenue"] for row in rows])
    figure.update_layout(
        _LAYOUT,
        title="Revenue per month and sales channel (daily_revenue)",
        barmode="stack",
        yaxis_title="revenue",
        xaxis={"type": "category"},
    )
    return figure


def channels_chart(series: Mapping[str, Any]) -> go.Figure | None:
    channels = (series.get("gold") or {}).get("channels")
    if not channels:
        return None
    names = [row["channel"] for row in channels]
    figure = go.Figure()
    figure.add_bar(name="ad spend", x=names, y=[row["spend"] for row in channels], marker_color="#95a5a6")
    figure.add_bar(name="attributed revenue", x=names, y=[row["attributed_revenue"] for row in channels], marker_color="#4c8c2b")
    figure.update_layout(_LAYOUT, title="Ad spend and attributed revenue per channel (campaign_performance)", barmode="group")
    return figure


# The charts in page order: (id, builder). The browser test checks each one it finds data for.
CHARTS: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], go.Figure | None]], ...] = (
    ("rows", lambda summary, series: rows_chart(summary)),
    ("lag", lambda summary, series: lag_chart(series)),
    ("throughput", lambda summary, series: throughput_chart(series)),
    ("backlog", lambda summary, series: backlog_chart(series)),
    ("funnel", lambda summary, series: funnel_chart(series)),
    ("revenue", lambda summary, series: revenue_chart(series)),
    ("channels", lambda summary, series: channels_chart(series)),
)


# ---------------------------------------------------------------- the page


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    head = "".join(
        f'<th class="{"num" if index >= numeric_from else ""}">{html.escape(header)}</th>' for index, header in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if index >= numeric_from else ""}">{cell}</td>' for index, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kpi_cards(kpis: Mapping[str, Any]) -> str:
    cards = []
    formats: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
        ("revenue", "revenue (paid, shipped, delivered)", lambda v: _number(v, 2)),
        ("revenue_orders", "orders with revenue", _number),
        ("average_order_value", "average order value", lambda v: _number(v, 2)),
        ("paying_customers", "paying customers", _number),
        ("ad_spend", "ad spend", lambda v: _number(v, 2)),
        ("roas", "ROAS (attributed revenue / spend)", lambda v: _number(v, 2)),
        ("sessions", "web sessions", _number),
        ("conversion_rate", "session conversion rate", lambda v: "–" if v is None else f"{v:.1%}"),
    )
    for key, label, show in formats:
        if key in kpis:
            cards.append(
                f'<div class="card"><div class="value">{show(kpis[key])}</div><div class="label">{html.escape(label)}</div></div>'
            )
    best = kpis.get("best_campaign_by_roas")
    if isinstance(best, Mapping):
        cards.append(
            f'<div class="card"><div class="value">{_number(best.get("roas"), 2)}</div>'
            f'<div class="label">best ROAS: campaign {_number(best.get("campaign_id"))}</div></div>'
        )
    return (
        f'<div class="cards">{"".join(cards)}</div>' if cards else "<p>No gold KPIs: dbt did not build the marts in this run.</p>"
    )


def _chart_div(chart_id: str, figure: go.Figure | None) -> str:
    if figure is None:
        return f'<div class="chart empty" id="chart-{chart_id}"><p>No data for this chart in this run.</p></div>'
    body = figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"plot-{chart_id}", config={"displayModeBar": False, "responsive": True}
    )
    return f'<div class="chart" id="chart-{chart_id}" data-chart="{chart_id}">{body}</div>'


_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #1f2d3a; color: #fff; padding: 16px 28px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #c9d3dc; font-size: 13px; }
main { padding: 16px 28px 40px 28px; }
section { background: #fff; border-radius: 6px; padding: 12px 18px; margin-bottom: 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 17px; margin: 4px 0 10px 0; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 4px; font-weight: bold; }
.ok { background: #d5f0d5; color: #1b5e20; } .bad { background: #f8d7da; color: #8b1a1a; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; }
th.num, td.num { text-align: right; }
/* auto-fill, not auto-fit: each chart is drawn as soon as it is parsed, so its column must
   not depend on the charts after it. */
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px; }
.chart { min-height: 340px; } .chart.empty { color: #888; display: flex; align-items: center; justify-content: center; border: 1px dashed #ccc; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 8px; }
.card { background: #f0f4f8; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card .value { font-size: 20px; font-weight: bold; } .card .label { font-size: 12px; color: #555; }
ul.problems { color: #8b1a1a; }
"""


def render_report(summary: Mapping[str, Any], series: Mapping[str, Any]) -> str:
    """The whole page as one string: styles, data, and plotly.js inline; nothing fetched."""
    figures = {chart_id: build(summary, series) for chart_id, build in CHARTS}
    settings = summary.get("settings") or {}
    lag = summary.get("lag") or {}
    verdicts = verification_rows(summary)
    problems = list(summary.get("problems") or [])
    ok = bool(summary.get("ok", not problems))
    timings = summary.get("timings_seconds") or {}

    rows_table = _table(
        ["collection", "MongoDB documents", "bronze events", "silver current state", "silver history"],
        (
            [
                html.escape(collection),
                _number(expected),
                _number((summary.get("bronze") or {}).get(collection)),
                _number((summary.get("silver") or {}).get(collection)),
                _number((summary.get("silver_history") or {}).get(collection)),
            ]
            for collection, expected in (summary.get("mongo") or {}).items()
        ),
    )
    verification_table = _table(
        ["collection", "verdict", "detail"],
        (
            [
                html.escape(v.collection),
                f'<span class="verdict {"ok" if v.ok else "bad"}">{"match" if v.ok else "DIFFERENT"}</span>',
                html.escape(v.detail),
            ]
            for v in verdicts
        ),
        numeric_from=3,
    )
    stages_table = _table(
        ["stage", "what", "count", "seconds", "per second"],
        (
            [html.escape(s.name), html.escape(s.what), _number(s.items), _number(s.seconds, 1), _number(s.per_second, 1)]
            for s in stage_rows(summary, series)
        ),
        numeric_from=2,
    )
    lag_table = _table(
        ["last write", "median", "p95", "max", "change events"],
        [
            [
                _number(summary.get("lag_seconds"), 2),
                _number(lag.get("p50_seconds"), 2),
                _number(lag.get("p95_seconds"), 2),
                _number(lag.get("max_seconds"), 2),
                _number(lag.get("events")),
            ]
        ],
        numeric_from=0,
    )
    gold_tables = (
        ", ".join(f"{html.escape(name)} {_number(rows)}" for name, rows in (summary.get("gold") or {}).items()) or "none"
    )
    timing_text = ", ".join(f"{html.escape(name.replace('_', ' '))} {_number(seconds, 1)} s" for name, seconds in timings.items())
    problem_list = "".join(f"<li>{html.escape(str(problem))}</li>" for problem in problems)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mongo-cdc-lakehouse demo report</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>mongo-cdc-lakehouse demo report <span class="verdict {"ok" if ok else "bad"}">{"silver matches MongoDB" if ok else "problems found"}</span></h1>
<p>MongoDB: {html.escape(str(summary.get("mongo_kind", "?")))} · scale {_number(settings.get("scale"))} · {_number(settings.get("rate"))} changes/s for {_number(settings.get("duration_seconds"))} s · seed {_number(settings.get("seed"))} · dbt exit {_number(summary.get("dbt_exit_code"))} · generated {generated}</p>
</header>
<main>
<section id="verification">
<h2>Verification per collection</h2>
{verification_table}
{f'<ul class="problems">{problem_list}</ul>' if problem_list else ""}
</section>
<section id="rows">
<h2>Rows per layer</h2>
<div class="grid"><div>{rows_table}<p>gold tables: {gold_tables}</p><p>phases: {timing_text}</p></div>{_chart_div("rows", figures["rows"])}</div>
</section>
<section id="lag">
<h2>End-to-end lag (seconds, MongoDB write to bronze commit)</h2>
{lag_table}
<div class="grid">{_chart_div("lag", figures["lag"])}{_chart_div("backlog", figures["backlog"])}</div>
</section>
<section id="throughput">
<h2>Throughput per stage</h2>
<div class="grid"><div>{stages_table}</div>{_chart_div("throughput", figures["throughput"])}</div>
</section>
<section id="gold">
<h2>Gold KPIs and marts</h2>
{_kpi_cards(summary.get("kpis") or {})}
<div class="grid">{_chart_div("funnel", figures["funnel"])}{_chart_div("revenue", figures["revenue"])}{_chart_div("channels", figures["channels"])}</div>
</section>
</main>
</body>
</html>
"""


def write_report(work_dir: Path, summary: Mapping[str, Any] | None = None, series: Mapping[str, Any] | None = None) -> Path:
    """``report.html`` in ``work_dir``, from the given inputs or the files the demo wrote there."""
    if summary is None:
        summary = json.loads((work_dir / SUMMARY_FILE).read_text())
    if series is None:
        series_file = work_dir / SERIES_FILE
        series = json.loads(series_file.read_text()) if series_file.exists() else {}
    path = work_dir / REPORT_FILE
    path.write_text(render_report(summary, series), encoding="utf-8")
    return path


def write_series(work_dir: Path, series: Mapping[str, Any]) -> Path:
    path = work_dir / SERIES_FILE
    path.write_text(json.dumps(series, separators=(",", ":")) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m demo.report [WORK_DIR]``: rebuild the report from a demo's summary.json and series.json."""
    parser = argparse.ArgumentParser(prog="python -m demo.report", description=main.__doc__)
    parser.add_argument("work_dir", nargs="?", type=Path, default=Path("build/demo"))
    arguments = parser.parse_args(argv)
    if not (arguments.work_dir / SUMMARY_FILE).exists():
        print(f"{arguments.work_dir / SUMMARY_FILE} does not exist: run `make demo` first", file=sys.stderr)
        return ExitCode.BAD_CONFIGURATION
    print(write_report(arguments.work_dir))
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "CHARTS",
    "REPORT_FILE",
    "SERIES_FILE",
    "Stage",
    "Verdict",
    "gold_chart_data",
    "render_report",
    "report_inputs",
    "stage_rows",
    "verification_rows",
    "write_report",
    "write_series",
]
