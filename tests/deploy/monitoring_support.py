"""What the monitoring tests share: the dashboard's and the alerts' PromQL, the metric names in
it, and the series the services export (parsed from a real /metrics scrape).

Data-driven on purpose: a metric a service starts to export is found by the scrape, and a
query is found by reading the dashboard and the rule file; nothing here lists metric names
except the few series that come from outside our services (``EXTERNAL_SERIES``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from deploy_support import CHART_DIR, PROJECT_ROOT

DASHBOARD_FILE = CHART_DIR / "files" / "dashboards" / "mongo-cdc-lakehouse.json"
ALERTS_FILE = CHART_DIR / "files" / "alerts.yaml"
PROMETHEUS_CONFIG = PROJECT_ROOT / "docker" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = PROJECT_ROOT / "docker" / "grafana" / "provisioning"
RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"
PROMTOOL = PROJECT_ROOT / ".cache" / "bin" / "promtool"

# Series the queries may use that no service of ours exports, and who does.
EXTERNAL_SERIES = {
    "up": "Prometheus itself, per scrape target",
    "kube_pod_status_ready": "kube-state-metrics (Kubernetes only)",
}

# Grafana's built-in variables, replaced by what Grafana would put there before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}

_SAMPLE_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*")


def _series(name: str, kind: str) -> set[str]:
    """The series names of one family, as prometheus_client writes them (text format 0.0.4,
    where a counter's TYPE line already names ``<name>_total``)."""
    if kind == "counter":
        return {name, name.removesuffix("_total") + "_created"}
    if kind == "histogram":
        return {name + suffix for suffix in ("_bucket", "_count", "_sum", "_created")}
    if kind == "summary":
        return {name + suffix for suffix in ("", "_count", "_sum", "_created")}
    return {name}


def exported_families(exposition: str) -> dict[str, set[str]]:
    """Metric family (as on its TYPE line) -> the series names it exposes, samples or not.

    A labelled metric nothing has touched yet exposes only its HELP and TYPE lines: it still
    counts as exported, because the series appear as soon as the service has data.
    """
    families: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families[name] = _series(name, kind)
    # prometheus_client also writes each ``_created`` series as a gauge family of its own.
    for name in [name for name in families if name.endswith("_created")]:
        base = name.removesuffix("_created")
        owner = next((candidate for candidate in (base, f"{base}_total") if candidate in families), None)
        if owner is not None:
            families[owner] |= families.pop(name)
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            sample = _SAMPLE_NAME.match(line)
            if sample and not any(sample.group() in names for names in families.values()):
                families.setdefault(sample.group(), set()).add(sample.group())
    return families


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is (for messages)."""

    where: str
    expr: str

    @property
    def parseable(self) -> str:
        text = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        return text

    def metric_names(self) -> set[str]:
        names: set[str] = set()

        def visit(node: Any) -> None:
            if isinstance(node, promql_parser.VectorSelector):
                if node.name:
                    names.add(node.name)
                names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

        promql_parser.walk(promql_parser.parse(self.parseable), visit)
        return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[Query]:
    return [
        Query(f"dashboard panel {panel['title']!r} ({target['refId']})", target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def runbook_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections(path: Path = RUNBOOK) -> dict[str, list[str]]:
    """``## `` section -> the ``### `` headings under it."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif line.startswith("### ") and current:
            sections[current].append(line[4:].strip())
    return sections
