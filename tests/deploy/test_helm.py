"""The Helm chart: lint and render with every ci/*-values.yaml, validate the manifests offline
against Kubernetes' schemas, and check what the chart promises: one cdc-service with
Recreate, N writers, CronJobs, hardened pods, probes, secrets only from existing Secrets,
settings the programs read, optional ServiceMonitor and NetworkPolicy, commented values."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from deploy_support import (
    CI_VALUES,
    KUBERNETES_VERSION,
    CHART_DIR,
    SERVICES,
    environment_problems,
    helm,
    load_program_settings,
    parse_command_line,
    render,
    secret_variables,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob")
SERVICE_KINDS = ("Deployment", "StatefulSet")  # the long-running workloads: cdc-service, bronze-writer
# Values the pods get from Secrets and the downward API, for loading the settings offline.
STAND_IN_VALUES = {
    "CDC_MONGO_URI": "mongodb://cdc:secret@mongo-0,mongo-1/?replicaSet=rs0",
    "BRONZE_LAKE__STORAGE_OPTIONS": '{"AWS_REGION": "eu-west-1"}',
}
# Values of variables from Secrets and the downward API that are one key of a map setting.
STAND_IN_SUFFIXES = {"__AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "__AWS_SECRET_ACCESS_KEY": "secret"}


def _kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def _named(documents: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (document,) = [document for document in _kind(documents, kind) if document["metadata"]["name"].endswith(suffix)]
    return document


def _services(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] in SERVICE_KINDS]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def _containers(documents: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    for kind in WORKLOAD_KINDS:
        for workload in _kind(documents, kind):
            spec = _pod_spec(workload)
            for container in spec["containers"]:
                yield workload, spec, container


def _container_environment(documents: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """Name -> value (a string, or the valueFrom source) as the container sees it."""
    config_maps = {document["metadata"]["name"]: document.get("data", {}) for document in _kind(documents, "ConfigMap")}
    environment: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        environment[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return environment


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_helm_lint_passes(values: Path) -> None:
    result = helm("lint", str(CHART_DIR), "--strict", "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ci_values_file_renders(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert set(rendered) == {"default-values", "minimal-values", "object-store-values", "production-values"}
    for documents in rendered.values():
        assert _services(documents)


def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, documents in rendered.items():
        for document in documents:
            if document["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no bundled schema; its shape is checked below
            try:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name}: {document['kind']} {document['metadata']['name']}: {error.message}")


def test_the_offline_validation_rejects_an_invalid_manifest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(_kind(rendered["default-values"], "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_cdc_service_is_one_replica_replaced_with_recreate(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for documents in [*rendered.values(), render(None, "cdcService.replicaCount=3", "replicaCount=3")]:
        cdc = _named(documents, "Deployment", "-cdc-service")
        assert cdc["spec"]["replicas"] == 1
        assert cdc["spec"]["strategy"] == {"type": "Recreate"}
        (container,) = cdc["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["cdc-service", "run"]


def test_bronze_writer_runs_the_configured_number_of_replicas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert _named(rendered["default-values"], "StatefulSet", "-bronze-writer")["spec"]["replicas"] == 2
    assert _named(rendered["production-values"], "StatefulSet", "-bronze-writer")["spec"]["replicas"] == 4
    assert _named(rendered["minimal-values"], "StatefulSet", "-bronze-writer")["spec"]["replicas"] == 1


def test_every_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for documents in rendered.values():
        for workload, spec, container in _containers(documents):
            name = workload["metadata"]["name"]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert spec["automountServiceAccountToken"] is False, name
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            # The read-only root needs writable scratch space: /tmp on an emptyDir.
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name


def test_deployments_probe_healthz_and_readyz_on_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for documents in rendered.values():
        for workload in _services(documents):
            (container,) = _pod_spec(workload)["containers"]
            environment = _container_environment(documents, container)
            (port_setting,) = [value for name, value in environment.items() if name.endswith("_HTTP__PORT")]
            (port,) = container["ports"]
            assert port["name"] == "http" and port["containerPort"] == int(port_setting)
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_secrets_come_only_from_existing_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not _kind([document for documents in rendered.values() for document in documents], "Secret")
    for name, documents in rendered.items():
        for _workload, _spec, container in _containers(documents):
            program = container["command"][0]
            secrets = secret_variables(program)
            for config_map in _kind(documents, "ConfigMap"):
                assert not secrets & set(config_map.get("data", {})), f"{name}: a secret in {config_map['metadata']['name']}"
            for entry in container.get("env", []):
                if entry["name"] in secrets:
                    assert set(entry) == {"name", "valueFrom"} and "secretKeyRef" in entry["valueFrom"], entry
    cdc = _named(rendered["default-values"], "Deployment", "-cdc-service")
    (container,) = cdc["spec"]["template"]["spec"]["containers"]
    uri = _container_environment(rendered["default-values"], container)["CDC_MONGO_URI"]
    assert uri == {"secretKeyRef": {"name": "mongo-cdc-lakehouse-mongo", "key": "uri"}}
    # With SASL, every Kafka client gets the password from the existing Secret.
    production = rendered["production-values"]
    for _workload, _spec, container in _containers(production):
        environment = _container_environment(production, container)
        prefix = {"cdc-service": "CDC_", "bronze-writer": "BRONZE_"}.get(container["command"][0])
        if prefix:
            assert environment[f"{prefix}KAFKA__SASL_PASSWORD"] == {"secretKeyRef": {"name": "lakehouse-kafka", "key": "password"}}
            assert environment[f"{prefix}KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"


def test_missing_secret_references_fail_the_render() -> None:
    template = ("template", "x", str(CHART_DIR), "--kube-version", KUBERNETES_VERSION)
    result = helm(*template, "--set", "mongo.uriSecret.name=")
    assert result.returncode != 0 and "mongo.uriSecret.name is required" in result.stderr
    result = helm(*template, "--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=u")
    assert result.returncode != 0 and "kafka.sasl.passwordSecret.name is required" in result.stderr


def test_containers_set_only_settings_their_program_reads_with_valid_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    seen = set()
    for name, documents in rendered.items():
        for workload, _spec, container in _containers(documents):
            command = container["command"]
            parse_command_line(command)
            environment = _container_environment(documents, container)
            problems = environment_problems(command, set(environment))
            assert problems == [], f"{name}: {workload['metadata']['name']}: {problems}"
            values = {
                variable: value
                if isinstance(value, str)
                else STAND_IN_VALUES.get(variable, next((v for s, v in STAND_IN_SUFFIXES.items() if variable.endswith(s)), "stand-in"))
                for variable, value in environment.items()
            }
            load_program_settings(command[0], values)
            seen.add(command[0])
    assert seen == set(SERVICES)


def test_cronjobs_run_dbt_once_and_the_maintenance(rendered: dict[str, list[dict[str, Any]]]) -> None:
    documents = rendered["default-values"]
    commands = {job["metadata"]["name"].removeprefix("lakehouse-mongo-cdc-lakehouse-"): _pod_spec(job)["containers"][0]["command"]
                for job in _kind(documents, "CronJob")}
    assert commands == {
        "dbt-runner": ["spark-jobs", "dbt"],
        "bronze-compaction": ["bronze-writer", "compact"],
        "bronze-vacuum": ["bronze-writer", "vacuum"],
        "lake-maintenance": ["spark-jobs", "maintain"],
    }
    dbt = _named(documents, "CronJob", "-dbt-runner")
    assert dbt["spec"]["concurrencyPolicy"] == "Forbid"
    environment = _container_environment(documents, _pod_spec(dbt)["containers"][0])
    assert "SPARK_JOBS_DBT__INTERVAL_MINUTES" not in environment, "a CronJob runs dbt once"
    assert _pod_spec(dbt)["containers"][0]["image"].endswith("lakehouse-spark:0.1.0")
    assert _pod_spec(dbt)["restartPolicy"] == "Never"
    assert not _kind(rendered["minimal-values"], "CronJob")


def test_the_lake_volume_follows_the_persistence_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def lake_volume(documents: list[dict[str, Any]]) -> dict[str, Any]:
        spec = _pod_spec(_named(documents, "StatefulSet", "-bronze-writer"))
        (volume,) = [volume for volume in spec["volumes"] if volume["name"] == "lake"]
        return volume

    (claim,) = _kind(rendered["default-values"], "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert lake_volume(rendered["default-values"])["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert not _kind(rendered["production-values"], "PersistentVolumeClaim")
    assert lake_volume(rendered["production-values"])["persistentVolumeClaim"]["claimName"] == "lakehouse-lake"
    assert "emptyDir" in lake_volume(rendered["minimal-values"])
    # cdc-service keeps events too large for their topic in the lake (claim checks), where bronze-writer reads them.
    cdc = _pod_spec(_named(rendered["default-values"], "Deployment", "-cdc-service"))
    assert lake_volume(rendered["default-values"]) in cdc["volumes"]
    assert {"name": "lake", "mountPath": "/data"} in cdc["containers"][0]["volumeMounts"]
    (config,) = [c for c in _kind(rendered["default-values"], "ConfigMap") if c["metadata"]["name"].endswith("-cdc-service")]
    bronze_config = next(c for c in _kind(rendered["default-values"], "ConfigMap") if c["metadata"]["name"].endswith("-bronze-writer"))
    assert config["data"]["CDC_CLAIMS__ROOT"] == bronze_config["data"]["BRONZE_LAKE__ROOT"] == "/data/lake"


def test_service_monitor_and_network_policy_only_when_enabled(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("default-values", "minimal-values"):
        assert not _kind(rendered[name], "ServiceMonitor") and not _kind(rendered[name], "NetworkPolicy")
    production = rendered["production-values"]
    monitors = _kind(production, "ServiceMonitor")
    services = {service["metadata"]["name"]: service for service in _kind(production, "Service")}
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        service = services[monitor["metadata"]["name"]]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    (policy,) = _kind(production, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {53} <= {port["port"] for port in policy["spec"]["egress"][0]["ports"]}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_pod_disruption_budgets_cover_the_deployments(rendered: dict[str, list[dict[str, Any]]]) -> None:
    documents = rendered["default-values"]
    budgets = _kind(documents, "PodDisruptionBudget")
    assert len(budgets) == 2
    for workload in _services(documents):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(budget["spec"]["selector"]["matchLabels"].items() <= labels.items() for budget in budgets)
    assert not _kind(rendered["minimal-values"], "PodDisruptionBudget")


def test_every_value_is_commented() -> None:
    """prometheus-community style: a comment above every key; leaves carry a `# --` description."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")
    uncommented, undescribed = [], []
    for number, line in enumerate(lines):
        match = key.match(line)
        if not match:
            continue
        above = number - 1
        comments = []
        while above >= 0 and lines[above].strip().startswith("#"):
            comments.append(lines[above].strip())
            above -= 1
        if not comments:
            uncommented.append(f"{number + 1}: {line.strip()}")
        elif match.group(3).strip() and not any(comment.startswith("# --") for comment in comments):
            undescribed.append(f"{number + 1}: {line.strip()}")
    assert uncommented == [] and undescribed == []


def test_ca_bundles_are_mounted_read_only_where_they_are_used(rendered: dict[str, list[dict[str, Any]]]) -> None:
    production = rendered["production-values"]
    for kind, suffix, expected in (("Deployment", "-cdc-service", {"kafka-ca", "mongo-ca"}), ("StatefulSet", "-bronze-writer", {"kafka-ca"})):
        (container,) = _pod_spec(_named(production, kind, suffix))["containers"]
        mounts = {mount["name"]: mount for mount in container["volumeMounts"] if mount["name"].endswith("-ca")}
        assert set(mounts) == expected, suffix
        assert all(mount["readOnly"] for mount in mounts.values())
        environment = _container_environment(production, container)
        (location,) = [value for name, value in environment.items() if name.endswith("KAFKA__SSL_CA_LOCATION")]
        assert location == f"{mounts['kafka-ca']['mountPath']}/ca.crt"
    (container,) = _pod_spec(_named(rendered["default-values"], "Deployment", "-cdc-service"))["containers"]
    assert not [mount for mount in container["volumeMounts"] if mount["name"].endswith("-ca")]


def test_the_object_store_lake_reaches_every_component_with_keys_from_the_existing_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["object-store-values"]
    assert not _kind(documents, "PersistentVolumeClaim")
    prefixes = {"bronze-writer": "BRONZE_LAKE__STORAGE_OPTIONS__", "spark-jobs": "SPARK_JOBS_STORAGE_OPTIONS__"}
    seen = set()
    for workload, _spec, container in _containers(documents):
        program = container["command"][0]
        environment = _container_environment(documents, container)
        root = environment.get("BRONZE_LAKE__ROOT") or environment.get("SPARK_JOBS_LAKE_ROOT")
        if program not in prefixes:
            continue
        seen.add(program)
        prefix = prefixes[program]
        assert root == "s3://lakehouse/lake", workload["metadata"]["name"]
        assert environment[f"{prefix}AWS_ENDPOINT_URL"] == "http://seaweedfs-s3.storage.svc:8333"
        assert environment[f"{prefix}AWS_REGION"] == "us-east-1"
        assert environment[f"{prefix}AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false"  # path style
        assert environment[f"{prefix}AWS_ALLOW_HTTP"] == "true"
        for variable, key in (("AWS_ACCESS_KEY_ID", "access-key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-access-key")):
            assert environment[prefix + variable] == {"secretKeyRef": {"name": "lakehouse-object-store", "key": key}}
    assert seen == set(prefixes)
    # A default install keeps the lake on the volume: no object-store settings at all.
    for _workload, _spec, container in _containers(rendered["default-values"]):
        assert not [name for name in _container_environment(rendered["default-values"], container) if "STORAGE_OPTIONS__" in name]


def test_bronze_writers_are_a_stateful_set_with_static_group_membership(rendered: dict[str, list[dict[str, Any]]]) -> None:
    writers = _named(rendered["object-store-values"], "StatefulSet", "-bronze-writer")
    assert writers["spec"]["replicas"] == 4 and writers["spec"]["podManagementPolicy"] == "Parallel"
    (container,) = _pod_spec(writers)["containers"]
    environment = _container_environment(rendered["object-store-values"], container)
    # The pod name (…-bronze-writer-0 .. -3, stable across restarts) is the group.instance.id.
    assert environment["BRONZE_CONSUMER__GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert int(environment["BRONZE_CONSUMER__SESSION_TIMEOUT_MS"]) >= 6000
    without = render(None, "bronzeWriter.staticMembership=false")
    (container,) = _pod_spec(_named(without, "StatefulSet", "-bronze-writer"))["containers"]
    assert "BRONZE_CONSUMER__GROUP_INSTANCE_ID" not in _container_environment(without, container)


def test_the_cluster_target_points_dbt_at_the_thrift_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import json

    dbt = _named(rendered["object-store-values"], "CronJob", "-dbt-runner")
    environment = _container_environment(rendered["object-store-values"], _pod_spec(dbt)["containers"][0])
    assert environment["SPARK_JOBS_DBT__TARGET"] == "cluster"
    assert json.loads(environment["SPARK_JOBS_DBT__ENV"]) == {"SPARK_THRIFT_HOST": "spark-thrift-server.spark.svc", "SPARK_THRIFT_PORT": "10000"}
    result = helm("template", "x", str(CHART_DIR), "--kube-version", KUBERNETES_VERSION, "--set", "dbtRunner.target=cluster")
    assert result.returncode != 0 and "dbtRunner.thriftServer.host is required" in result.stderr
