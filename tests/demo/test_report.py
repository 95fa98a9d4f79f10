"""The demo's report, built from a recorded run and opened in a real headless Chromium.

``fixtures/report/`` holds the ``summary.json`` and ``series.json`` of a real ``make demo``
(scale 1, 60 s of changes, the full dbt build, the MongoDB stand-in). The page must render
with the network cut off (host names resolve to nothing), every chart must have drawn its
data (SVG paths in the rendered DOM, as many as the data has points or bars), no script may
fail, and the screenshot must show a page, not a blank.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from demo.browser import find_chromium, rendered_dom, screenshot
from demo.report import CHARTS, SERIES_FILE, SUMMARY_FILE, Stage, render_report, stage_rows, verification_rows, write_report
from demo.run import DemoRun
from demo.settings import DemoSettings

FIXTURES = Path(__file__).parent / "fixtures" / "report"
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _inputs() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads((FIXTURES / SUMMARY_FILE).read_text()), json.loads((FIXTURES / SERIES_FILE).read_text())


@dataclass(frozen=True)
class Element:
    tag: str
    attrs: dict[str, str]
    ancestors: frozenset[str]  # the CSS classes of every enclosing element


class ChartElements(HTMLParser):
    """The elements inside each ``data-chart`` container of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str | None, frozenset[str]]] = []  # (chart, classes of it and its ancestors)
        self.charts: dict[str, list[Element]] = {}

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> tuple[str | None, frozenset[str]]:
        values = {name: value or "" for name, value in attrs}
        chart, ancestors = self.stack[-1] if self.stack else (None, frozenset())
        chart = values.get("data-chart") or chart
        if chart:
            self.charts.setdefault(chart, []).append(Element(tag, values, ancestors))
        return chart, ancestors | set(values.get("class", "").split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        opened = self._element(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.stack.append(opened)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID_ELEMENTS and self.stack:
            self.stack.pop()


def _line_points(d: str) -> int:
    """Vertices of an SVG path drawn by plotly's line traces (M x,y L x,y ...)."""
    return len(re.findall(r"[ML]", d))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """The report of the recorded run, its rendered DOM and Chromium's log."""
    assert find_chromium(), "no Chromium: `make setup` installs Debian's chromium package"
    work = tmp_path_factory.mktemp("report")
    for name in (SUMMARY_FILE, SERIES_FILE):
        shutil.copy(FIXTURES / name, work / name)
    page = write_report(work)
    dom, log = rendered_dom(page)
    yield page, dom, log


def test_the_report_is_one_file_that_needs_no_network(report_page: tuple[Path, str, str]) -> None:
    page, _dom, _log = report_page
    text = page.read_text()
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""", text, flags=re.IGNORECASE)
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?https?:", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000, "plotly.js is embedded, not fetched"


def test_every_chart_with_data_is_drawn_in_the_browser(report_page: tuple[Path, str, str]) -> None:
    _page, dom, _log = report_page
    summary, series = _inputs()
    expected = {chart_id: figure for chart_id, build in CHARTS if (figure := build(summary, series)) is not None}
    assert set(expected) == {chart_id for chart_id, _ in CHARTS}, "the recorded run has data for every chart"
    parser = ChartElements()
    parser.feed(dom)
    for chart_id, figure in expected.items():
        elements = parser.charts.get(chart_id, [])
        assert any(e.tag == "svg" and "main-svg" in e.attrs.get("class", "") for e in elements), f"{chart_id}: plotly drew no SVG"
        # Data, not legend swatches: lines in the scatter layer, bars and funnel steps in theirs.
        vertices: dict[str, int] = {}  # per drawn trace (a gap in the data splits its line)
        for e in elements:
            if e.tag == "path" and "js-line" in e.attrs.get("class", "") and "scatterlayer" in e.ancestors:
                (trace_id,) = [name for name in e.ancestors if re.fullmatch(r"trace[0-9a-f]+", name)]
                vertices[trace_id] = vertices.get(trace_id, 0) + _line_points(e.attrs["d"])
        bars = [
            e.attrs["d"]
            for e in elements
            if e.tag == "path"
            and "point" in e.ancestors
            and {"barlayer", "funnellayer"} & e.ancestors
            and len(e.attrs.get("d", "")) > 6
        ]
        scatter = [trace for trace in figure.data if trace.type == "scatter"]
        assert len(vertices) == len(scatter), f"{chart_id}: {len(vertices)} lines drawn for {len(scatter)} traces"
        # plotly drops collinear vertices, so a line has at most one per point; dozens of
        # points still draw well over ten.
        fewest = min((min(10, sum(value is not None for value in trace.y)) for trace in scatter), default=0)
        assert all(count >= fewest for count in vertices.values()), f"{chart_id}: vertices per line {vertices}"
        expected_bars = sum(
            len(trace.y if trace.type == "funnel" else trace.x) for trace in figure.data if trace.type in ("bar", "funnel")
        )
        assert len(bars) >= expected_bars * 0.9, f"{chart_id}: {len(bars)} bars drawn of {expected_bars}"


def test_a_page_that_needs_the_network_draws_nothing(tmp_path: Path) -> None:
    """The check above has teeth: with plotly.js fetched instead of embedded, no chart draws
    (host names resolve to nothing in the test browser)."""
    summary, series = _inputs()
    page = tmp_path / "fetching.html"
    embedded = f"<script>{get_plotlyjs()}</script>"
    text = render_report(summary, series)
    assert embedded in text
    page.write_text(text.replace(embedded, '<script src="https://cdn.example.com/plotly.min.js"></script>'))
    dom, _log = rendered_dom(page)
    parser = ChartElements()
    parser.feed(dom)
    assert parser.charts and not any(e.tag == "svg" for elements in parser.charts.values() for e in elements)


def test_no_script_fails_while_the_page_renders(report_page: tuple[Path, str, str]) -> None:
    _page, dom, log = report_page
    assert "Uncaught" not in log and "ReferenceError" not in log, log[-3000:]
    assert "js-plotly-plot" in dom


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, size = 8, b"", (0, 0)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    return size[0], size[1], zlib.decompress(idat)


def test_the_screenshot_shows_the_rendered_page(report_page: tuple[Path, str, str], tmp_path: Path) -> None:
    page, _dom, _log = report_page
    image = screenshot(page, tmp_path / "report.png", width=1400, height=1800)
    width, height, pixels = _png_pixels(image)
    assert (width, height) == (1400, 1800)
    # A blank page compresses to a handful of byte values; a page of tables and charts does not.
    assert len(set(pixels)) > 64


def test_the_demo_writes_the_report_and_its_screenshot(tmp_path: Path) -> None:
    """``DemoRun.write_report``, as the demo's end calls it (here with an empty lake)."""
    summary, _series = _inputs()
    settings = DemoSettings(
        work_dir=tmp_path / "demo", kafka_bootstrap_servers="127.0.0.1:1", standin_uri="mongodb://127.0.0.1:1"
    )
    settings.work_dir.mkdir(parents=True)
    DemoRun(settings).write_report(summary)
    assert (settings.work_dir / "report.html").stat().st_size > 3_000_000
    assert json.loads((settings.work_dir / SERIES_FILE).read_text())["pipeline"]["lag"] == []
    assert _png_pixels(settings.work_dir / "report.png")[:2] == (1400, 2600)


def test_the_verdict_per_collection_comes_from_verification_when_present() -> None:
    summary, _series = _inputs()
    counted = verification_rows(summary)
    assert [row.collection for row in counted] == list(summary["mongo"])
    assert all(row.ok for row in counted) and "document counts" in counted[0].detail
    mismatch = {**summary, "silver": {**summary["silver"], "orders": summary["mongo"]["orders"] - 1}}
    assert [row.collection for row in verification_rows(mismatch) if not row.ok] == ["orders"]
    differing = {"ok": False, "mongo": 10, "silver": 10, "missing": 0, "extra": 0, "differing": 3}
    verified = {**summary, "verification": {"orders": differing}}
    [row] = verification_rows(verified)
    assert (row.collection, row.ok) == ("orders", False)
    assert row.detail == "MongoDB 10 documents, silver 10: 0 missing, 0 extra, 3 differing (document hashes)"
    assert row.detail in render_report(verified, {}) and "DIFFERENT" in render_report(verified, {})


def test_throughput_per_stage_adds_up_from_the_recorded_series() -> None:
    summary, series = _inputs()
    stages = {stage.name: stage for stage in stage_rows(summary, series)}
    assert list(stages) == ["snapshot", "MongoDB writes", "published to Kafka", "landed in bronze", "dbt build"]
    bronze = stages["landed in bronze"]
    assert bronze.items == sum(summary["bronze"].values()), "every bronze row is counted once by its commit time"
    assert stages["MongoDB writes"].items == summary["lag"]["events"], "every change event is counted once by its cluster time"
    assert all(stage.per_second and stage.per_second > 0 for stage in stages.values()), stages
    assert Stage("x", "y", None, 3.0).per_second is None


def test_a_report_without_series_still_renders() -> None:
    summary, _series = _inputs()
    text = render_report({**summary, "kpis": {}}, {})
    assert "No data for this chart in this run." in text and "No gold KPIs" in text
