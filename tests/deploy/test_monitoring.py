"""The Grafana dashboard and the alert rules: what they query exists, they parse, they fire.

- Every metric name in the dashboard's and the alerts' PromQL is one the services really
  export, found by scraping /metrics of a running ``cdc-service run``, ``bronze-writer run``
  and ``spark-jobs dbt --every`` (on the suite's Kafka broker and MongoDB stand-in, with a
  few documents flowing through), and every metric they export has a panel.
- promtool (built by ``make setup`` like helm) checks the rule file, every dashboard query
  (as recording rules), the compose stack's Prometheus configuration, and unit-tests alerts.
- The chart ships the same dashboard and rules (ConfigMap with the sidecar label,
  PrometheusRule); the compose stack provisions them; each alert has its runbook section.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import yaml
from deploy_support import COMPOSE_FILE, SETTINGS_PREFIXES
from monitoring_support import (
    ALERTS_FILE,
    DASHBOARD_FILE,
    EXTERNAL_SERIES,
    GRAFANA_PROVISIONING,
    PROMETHEUS_CONFIG,
    PROMTOOL,
    RUNBOOK,
    Query,
    alert_queries,
    alert_rules,
    dashboard,
    dashboard_queries,
    exported_families,
    panels,
    runbook_anchor,
    runbook_sections,
)

from demo.processes import ManagedProcess, console_script
from local_stack.kafka import KafkaBroker
from local_stack.mongo import MongoStandIn
from local_stack.paths import PROJECT_ROOT
from local_stack.processes import free_port

# Families exported on purpose without a panel, with the reason. Empty today: every metric
# the services export is on the dashboard.
NOT_ON_DASHBOARD: dict[str, str] = {}

# What an operator asks first, and the metric each answer comes from (issue 14: lag,
# throughput, checkpoint age, dead letters, rescued values, commit duration).
OPERATOR_QUESTIONS = {
    "lag": {"cdc_lag_seconds", "bronze_last_end_to_end_lag_seconds", "bronze_consumer_lag_messages"},
    "throughput": {"cdc_events_published_total", "bronze_rows_total"},
    "checkpoint age": {"cdc_checkpoint_age_seconds"},
    "dead letters": {"cdc_dead_letters_total", "bronze_dead_letters_total"},
    "rescued values": {"bronze_rescued_values_total"},
    "commit duration": {"bronze_commit_duration_seconds_bucket"},
}


def _promtool(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: `make setup` builds it"
    return subprocess.run([str(PROMTOOL), *arguments], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# ---------------------------------------------------------------- the services' real metrics


def _wait_for_metrics(url: str, process: ManagedProcess, deadline: float, until: str | None = None) -> str:
    """The service's /metrics once it answers (and, with ``until``, once that text is in it)."""
    body, error = "", ""
    while time.monotonic() < deadline:
        assert process.running(), f"{process.name} exited {process.poll()}:\n{process.tail(40)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
            if until is None or until in body:
                return body
        except (urllib.error.URLError, OSError) as failure:
            error = str(failure)
        time.sleep(1)
    raise AssertionError(f"{url} did not answer{f' with {until!r}' if until else ''} in time ({error}); log:\n{process.tail(40)}")


@pytest.fixture(scope="module")
def exported(
    kafka_broker: KafkaBroker, mongo_standin: MongoStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, set[str]]]]:
    """Service -> its metric families -> their series, scraped while documents flow through."""
    work = tmp_path_factory.mktemp("monitoring")
    database = f"monitoring_{uuid.uuid4().hex[:8]}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_standin.uri)
    client[database]["orders"].insert_many([{"_id": index, "amount": index * 1.5} for index in range(20)])
    ports = {"cdc-service": free_port(), "bronze-writer": free_port(), "dbt-runner": free_port()}
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(SETTINGS_PREFIXES)},
        "CDC_MONGO_URI": mongo_standin.uri,
        "CDC_NAME": database,
        "CDC_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "CDC_SCOPE__INCLUDE_DATABASES": json.dumps([database]),
        "CDC_HTTP__HOST": "127.0.0.1",
        "CDC_HTTP__PORT": str(ports["cdc-service"]),
        "CDC_PROGRESS_BAR": "never",
        "BRONZE_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "BRONZE_LAKE__ROOT": str(work / "lake"),
        "BRONZE_CONSUMER__TOPIC_PATTERN": rf"^cdc\.{database}\..+",
        "BRONZE_CONSUMER__GROUP_ID": f"bronze-{database}",
        "BRONZE_KAFKA__CLIENT_CONFIG": json.dumps({"topic.metadata.refresh.interval.ms": "2000"}),
        "BRONZE_BATCH__MAX_LATENCY_SECONDS": "1",
        "BRONZE_HTTP__HOST": "127.0.0.1",
        "BRONZE_HTTP__PORT": str(ports["bronze-writer"]),
        "SPARK_JOBS_LAKE_ROOT": str(work / "lake"),
        "SPARK_JOBS_HTTP__HOST": "127.0.0.1",
        "SPARK_JOBS_HTTP__PORT": str(ports["dbt-runner"]),
        "SPARK_JOBS_SPARK__WAREHOUSE_DIR": str(work / "spark" / "warehouse"),
        "SPARK_JOBS_SPARK__METASTORE_DIR": str(work / "spark" / "metastore"),
        "SPARK_JOBS_DBT__SPARK_CONF_DIR": str(work / "spark" / "conf"),
        "SPARK_JOBS_DBT__TARGET_PATH": str(work / "dbt" / "target"),
        "SPARK_JOBS_DBT__LOG_PATH": str(work / "dbt" / "logs"),
        "SPARK_JOBS_DBT__COMMANDS": json.dumps(["parse"]),
    }
    commands = {
        "cdc-service": ["cdc-service", "run"],
        "bronze-writer": ["bronze-writer", "run"],
        "dbt-runner": ["spark-jobs", "dbt", "--every", "60"],
    }
    processes = {
        name: ManagedProcess(name, [console_script(argv[0]), *argv[1:]], environment, work / f"{name}.log", PROJECT_ROOT)
        for name, argv in commands.items()
    }
    try:
        deadline = time.monotonic() + 240
        # Scraped once the documents went all the way, so the labelled series exist too: 20
        # documents' records and the copy's snapshot-complete marker.
        landed = f'bronze_rows_total{{table="{database}.orders"}} 21.0'
        bodies = {
            "bronze-writer": _wait_for_metrics(
                f"http://127.0.0.1:{ports['bronze-writer']}/metrics", processes["bronze-writer"], deadline, landed
            ),
            "cdc-service": _wait_for_metrics(
                f"http://127.0.0.1:{ports['cdc-service']}/metrics",
                processes["cdc-service"],
                deadline,
                "cdc_checkpoint_age_seconds{",
            ),
            "dbt-runner": _wait_for_metrics(f"http://127.0.0.1:{ports['dbt-runner']}/metrics", processes["dbt-runner"], deadline),
        }
        yield {name: exported_families(body) for name, body in bodies.items()}
    finally:
        for process in processes.values():
            process.stop(timeout=60)
        client.drop_database(database)
        client.close()


def _all_series(exported: dict[str, dict[str, set[str]]]) -> set[str]:
    return {series for families in exported.values() for names in families.values() for series in names}


def test_the_scrape_finds_each_services_metrics(exported: dict[str, dict[str, set[str]]]) -> None:
    prefixes = {"cdc-service": "cdc_", "bronze-writer": "bronze_", "dbt-runner": "lakehouse_dbt_"}
    for service, families in exported.items():
        assert families, service
        assert all(name.startswith(prefixes[service]) for name in families), f"{service}: {sorted(families)}"


def test_every_queried_metric_is_one_the_services_export(exported: dict[str, dict[str, set[str]]]) -> None:
    known = _all_series(exported) | set(EXTERNAL_SERIES)
    unknown = [
        f"{query.where}: {name}"
        for query in dashboard_queries() + alert_queries()
        for name in sorted(query.metric_names() - known)
    ]
    assert unknown == [], "queries name metrics no service exports (renamed or misspelled?)"


def test_every_exported_metric_has_a_dashboard_panel(exported: dict[str, dict[str, set[str]]]) -> None:
    queried = {name for query in dashboard_queries() for name in query.metric_names()}
    missing = [
        f"{service}: {family}"
        for service, families in exported.items()
        for family, series in sorted(families.items())
        if not series & queried and family not in NOT_ON_DASHBOARD
    ]
    assert missing == [], (
        f"metrics without a panel: add one to {DASHBOARD_FILE.relative_to(PROJECT_ROOT)} "
        "(or list the family in NOT_ON_DASHBOARD with the reason)"
    )


def test_the_dashboard_answers_the_operators_questions() -> None:
    queried = {name for query in dashboard_queries() for name in query.metric_names()}
    unanswered = {question: sorted(metrics - queried) for question, metrics in OPERATOR_QUESTIONS.items() if metrics - queried}
    assert unanswered == {}


def test_the_name_check_catches_a_misspelled_metric() -> None:
    query = Query("test", "sum(rate(bronze_row_total[$__rate_interval])) / ignoring(x) up")
    assert query.metric_names() == {"bronze_row_total", "up"}
    with pytest.raises(ValueError):
        Query("test", "sum(rate(bronze_rows_total[5m]) by (table)").metric_names()


def test_exposition_parsing_covers_every_type() -> None:
    text = """# HELP a_total A counter.
# TYPE a_total counter
a_total{x="1"} 2.0
a_created{x="1"} 1.7e9
# TYPE b gauge
# TYPE c_seconds histogram
c_seconds_bucket{le="1.0"} 1.0
# TYPE c_seconds_created gauge
c_seconds_created 1.7e9
"""
    assert exported_families(text) == {
        "a_total": {"a_total", "a_created"},
        "b": {"b"},
        "c_seconds": {"c_seconds_bucket", "c_seconds_count", "c_seconds_sum", "c_seconds_created"},
    }


# ---------------------------------------------------------------- promtool


def test_promtool_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{index}", "expr": query.parseable} for index, query in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", "--lint=none", str(tmp_path / "dashboard.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    broken = {"groups": [{"name": "x", "rules": [{"alert": "Broken", "expr": "sum(rate(cdc_lag_seconds[5m])"}]}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert _promtool("check", "rules", str(tmp_path / "broken.yaml")).returncode != 0


def test_promtool_accepts_the_compose_prometheus_configuration(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "mongo-cdc-lakehouse.yaml").write_text(ALERTS_FILE.read_text())
    config["rule_files"] = [str(rules / "*.yaml")]  # where the compose file mounts them, here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _series_values(start: float, step: float, count: int) -> str:
    return " ".join(f"{start + step * index:g}" for index in range(count))


def test_the_alerts_fire_on_the_conditions_they_name(tmp_path: Path) -> None:
    """promtool's rule unit tests: each condition held long enough fires, a healthy one does not."""
    (tmp_path / "alerts.yaml").write_text(ALERTS_FILE.read_text())
    rules = {rule["alert"]: rule for rule in alert_rules()}

    def fired(at: str, alert: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
        """One firing alert with its labels and annotations, templates rendered."""
        annotations = {**rules[alert]["annotations"], "summary": summary}
        return {
            "eval_time": at,
            "alertname": alert,
            "exp_alerts": [{"exp_labels": {**labels, **rules[alert]["labels"]}, "exp_annotations": annotations}],
        }

    stale = 'cdc_checkpoint_age_seconds{job="cdc-service", stream="db:shop"}'
    fresh = 'cdc_checkpoint_age_seconds{job="cdc-service", stream="db:crm"}'
    cases = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": stale, "values": _series_values(0, 60, 30)},  # never checkpointed: grows by 60 s a minute
                    {"series": fresh, "values": "5+0x30"},
                    {"series": 'cdc_dead_letters_total{job="cdc-service", reason="too_large"}', "values": "0 0 0 1 1 1 1 1 1 1"},
                    {
                        "series": 'bronze_consumer_lag_messages{job="bronze-writer", topic="cdc.shop.orders", partition="0"}',
                        "values": "150000+0x30",
                    },
                    {"series": 'up{job="bronze-writer", instance="bronze-writer:9400"}', "values": "1 1 0 0 0 0 0 0 0 0"},
                    {"series": 'up{job="cdc-service", instance="cdc-service:9400"}', "values": "1+0x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "CdcCheckpointStale", "exp_alerts": []},  # 600 s reached, not yet for 5m
                    fired(
                        "20m",
                        "CdcCheckpointStale",
                        {"job": "cdc-service", "stream": "db:shop"},
                        "cdc-service stream db:shop has not checkpointed for 20m 0s",
                    ),
                    fired(
                        "5m",
                        "CdcDeadLetters",
                        {"job": "cdc-service", "reason": "too_large"},
                        "cdc-service sent 1 events to the dead-letter topic (too_large)",
                    ),
                    {"eval_time": "10m", "alertname": "BronzeConsumerLagHigh", "exp_alerts": []},
                    fired(
                        "20m",
                        "BronzeConsumerLagHigh",
                        {"job": "bronze-writer", "topic": "cdc.shop.orders"},
                        "150k records of cdc.shop.orders wait in Kafka for bronze",
                    ),
                    fired(
                        "9m",
                        "LakehouseTargetDown",
                        {"job": "bronze-writer", "instance": "bronze-writer:9400"},
                        "Prometheus cannot scrape bronze-writer (bronze-writer:9400)",
                    ),
                ],
            }
        ],
    }
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    result = _promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the runbook


def test_every_alert_has_its_runbook_section_and_link() -> None:
    sections = runbook_sections()
    assert "Alerts" in sections, f"{RUNBOOK.name} has no '## Alerts' section"
    documented = set(sections["Alerts"])
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) == documented, (
        f"alerts without a section: {set(names) - documented}; sections without an alert: {documented - set(names)}"
    )
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/runbook.md#{runbook_anchor(rule['alert'])}"), url
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_runbook_links_between_sections_resolve() -> None:
    text = RUNBOOK.read_text()
    anchors = {runbook_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert links and links <= anchors, sorted(links - anchors)


# ---------------------------------------------------------------- the dashboard's shape


def test_the_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "mongo-cdc-lakehouse" and board["title"]
    assert "id" not in board, "an exported id clashes between Grafana instances"
    (variable,) = board["templating"]["list"]
    assert variable == {**variable, "type": "datasource", "name": "datasource", "query": "prometheus"}
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel[
            "title"
        ]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["refId"], panel["title"]


# ---------------------------------------------------------------- the chart


def _kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (config_map,) = [
        document
        for document in _kind(rendered["default-values"], "ConfigMap")
        if document["metadata"]["name"].endswith("-grafana-dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["mongo-cdc-lakehouse.json"]) == dashboard()
    (production,) = [
        document
        for document in _kind(rendered["production-values"], "ConfigMap")
        if document["metadata"]["name"].endswith("-grafana-dashboard")
    ]
    assert production["metadata"]["namespace"] == "monitoring"
    assert production["metadata"]["annotations"] == {"grafana_folder": "Lakehouse"}
    assert not [
        document for document in _kind(rendered["minimal-values"], "ConfigMap") if "grafana" in document["metadata"]["name"]
    ]


def test_the_chart_ships_the_alerts_as_a_prometheus_rule(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not _kind(rendered["default-values"], "PrometheusRule"), "off by default: it needs the operator's CRD"
    (rule,) = _kind(rendered["production-values"], "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    shipped = yaml.safe_load(ALERTS_FILE.read_text())
    (group,) = rule["spec"]["groups"]
    assert [r["alert"] for r in group["rules"]] == [r["alert"] for r in shipped["groups"][0]["rules"]]
    for rendered_rule, file_rule in zip(group["rules"], shipped["groups"][0]["rules"], strict=True):
        assert rendered_rule["expr"] == file_rule["expr"]
        assert rendered_rule["annotations"]["summary"] == file_rule["annotations"]["summary"], (
            "annotation templates reach Prometheus unrendered"
        )
        assert (
            rendered_rule["annotations"]["runbook_url"]
            == f"https://wiki.example.com/lakehouse/runbook#{runbook_anchor(file_rule['alert'])}"
        )


def test_the_prometheus_rule_holds_only_rule_groups(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The operator's CRD takes `groups` only (the rule file's comments and nothing else around them)."""
    for name, documents in rendered.items():
        for document in _kind(documents, "PrometheusRule"):
            assert set(document["spec"]) == {"groups"}, name
            assert all(set(group) == {"name", "rules"} for group in document["spec"]["groups"]), name


# ---------------------------------------------------------------- the compose stack


def test_compose_provisions_prometheus_and_grafana_with_the_same_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in prometheus["volumes"] + grafana["volumes"]
        if volume.startswith("./")
    }
    for source in mounts.values():
        assert (COMPOSE_FILE.parent / source).exists(), source
    assert (COMPOSE_FILE.parent / mounts["/etc/prometheus/rules/mongo-cdc-lakehouse.yaml"]).resolve() == ALERTS_FILE
    assert (COMPOSE_FILE.parent / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    assert (COMPOSE_FILE.parent / mounts["/var/lib/grafana/dashboards"]).resolve() == DASHBOARD_FILE.parent
    assert (COMPOSE_FILE.parent / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA_PROVISIONING
    # Credentials come from the environment, and both UIs listen on localhost only.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    for service in (prometheus, grafana):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
        assert "healthcheck" in service
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_compose_prometheus_scrapes_every_service_on_its_metrics_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prefixes = {"cdc-service": "CDC_", "bronze-writer": "BRONZE_", "dbt-runner": "SPARK_JOBS_"}
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    }
    assert set(jobs) == set(prefixes)
    for name, prefix in prefixes.items():
        port = services[name]["environment"][f"{prefix}HTTP__PORT"]
        assert jobs[name] == [f"{name}:{port}"]
    # The alerts match the jobs by name, so the compose jobs must carry the service names.
    assert all(re.search(r"cdc-service|bronze-writer", name) for name in jobs if name != "dbt-runner")


def test_compose_grafana_provisioning_points_at_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    (datasource,) = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["type"] == "prometheus" and datasource["url"] == f"http://prometheus:{port}" and datasource["isDefault"]
    (provider,) = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "mongo-cdc-lakehouse.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD_FILE.name}"
