"""docker-compose.yml: valid against the compose specification, and consistent with the code:
images pinned, builds that exist, command lines our programs accept, environment variables
they read with values their settings accept, healthchecks and ordered start-up."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from deploy_support import (
    COMPOSE_FILE,
    DOCKERFILE,
    SERVICES,
    VENV_BIN,
    dockerfile_stages,
    environment_problems,
    load_program_settings,
    parse_command_line,
)

PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:(v?\d+(\.\d+)+)$")
HTTP_PREFIXES = {"cdc-service": "CDC_", "bronze-writer": "BRONZE_", "dbt-runner": "SPARK_JOBS_"}
OUR_PROGRAMS = ("cdc-service", "bronze-writer", "spark-jobs", "lakehouse-generator")


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if "build" in service}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def test_compose_file_validates_against_the_compose_specification() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_an_invalid_compose_file(tmp_path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  app:\n    image: busybox:1.36.1\n    depends_on:\n      db:\n        condition: sometimes\n")
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} names no image (built images get a pinned name too)"
        assert PINNED_IMAGE.match(image), f"{name}: {image} is not pinned to an exact version"


def test_every_build_uses_an_existing_context_dockerfile_and_target(compose: dict[str, Any]) -> None:
    stages = dockerfile_stages()
    builds = _ours(compose)
    assert set(builds) == {"generator", "cdc-service", "bronze-writer", "dbt-runner"}
    for name, service in builds.items():
        build = service["build"]
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = (context / build["dockerfile"]).resolve()
        assert dockerfile == DOCKERFILE, f"{name}: {dockerfile}"
        assert build["target"] in stages, f"{name}: target {build['target']} is no stage of {DOCKERFILE.name}"
    # One image per target: services share the Python image, the dbt runner has the JRE.
    assert {builds[name]["build"]["target"] for name in ("generator", "cdc-service", "bronze-writer")} == {"services"}
    assert builds["dbt-runner"]["build"]["target"] == "spark-jobs"


def test_our_services_run_console_scripts_with_valid_arguments(compose: dict[str, Any]) -> None:
    programs = set()
    for name, service in _ours(compose).items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: give the command as a list (no shell)"
        parse_command_line(command)
        programs.add(command[0])
    assert programs == set(OUR_PROGRAMS)


def test_our_services_set_only_variables_their_program_reads(compose: dict[str, Any]) -> None:
    problems = []
    for name, service in _ours(compose).items():
        problems += [f"{name}: {problem}" for problem in environment_problems(service["command"], set(_environment(service)))]
    assert problems == []


@pytest.mark.parametrize("program", sorted(SERVICES))
def test_the_compose_values_are_valid_settings(compose: dict[str, Any], program: str) -> None:
    (service,) = [service for service in _ours(compose).values() if service["command"][0] == program]
    settings = load_program_settings(program, _environment(service))
    if program == "cdc-service":
        assert settings.scope.include_databases == ["shop"]  # type: ignore[attr-defined]
        assert settings.exactly_once  # type: ignore[attr-defined]
    if program == "spark-jobs":
        assert settings.dbt.interval_minutes == 5  # type: ignore[attr-defined]


def test_the_environment_check_catches_a_misspelled_or_missing_setting() -> None:
    command = ["cdc-service", "run"]
    problems = environment_problems(command, {"CDC_KAFKA_BOOTSTRAP_SERVERS"})
    assert "cdc-service does not read CDC_KAFKA_BOOTSTRAP_SERVERS" in problems
    assert "cdc-service needs CDC_MONGO_URI" in problems


def test_services_talk_to_each_other_on_the_compose_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:29092" in listeners
    for name in ("cdc-service", "bronze-writer"):
        prefix = "CDC_" if name == "cdc-service" else "BRONZE_"
        assert _environment(services[name])[f"{prefix}KAFKA__BOOTSTRAP_SERVERS"] == "kafka:29092"
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:29092"
    # The replica set is initiated under the name the clients use.
    assert "host: 'mongo:27017'" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert "replicaSet=rs0" in _environment(services["cdc-service"])["CDC_MONGO_URI"]
    assert "--replSet" in services["mongo"]["command"]


def test_the_lake_is_one_named_volume_shared_by_writer_and_dbt(compose: dict[str, Any]) -> None:
    assert "lake" in compose["volumes"]
    services = compose["services"]
    for name in ("bronze-writer", "dbt-runner"):
        assert "lake:/data" in services[name]["volumes"]
    assert _environment(services["bronze-writer"])["BRONZE_LAKE__ROOT"] == "/data/lake"
    assert _environment(services["dbt-runner"])["SPARK_JOBS_LAKE_ROOT"] == "/data/lake"


def test_healthchecks_probe_the_health_endpoints_and_start_up_waits_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("mongo", "kafka", "cdc-service", "bronze-writer", "dbt-runner"):
        assert "healthcheck" in services[name], name
    for name in ("cdc-service", "bronze-writer", "dbt-runner"):
        test = " ".join(services[name]["healthcheck"]["test"])
        port = _environment(services[name])[f"{HTTP_PREFIXES[name]}HTTP__PORT"]
        assert re.search(rf"127\.0\.0\.1:{port}/(healthz|readyz)", test), name
    dependencies = {name: service.get("depends_on", {}) for name, service in services.items()}
    assert dependencies["cdc-service"]["mongo"]["condition"] == "service_healthy"
    assert dependencies["cdc-service"]["kafka"]["condition"] == "service_healthy"
    assert dependencies["bronze-writer"]["kafka"]["condition"] == "service_healthy"
    assert dependencies["generator"]["mongo"]["condition"] == "service_healthy"
    assert dependencies["kafka-ui"]["kafka"]["condition"] == "service_healthy"
    assert "bronze-writer" in dependencies["dbt-runner"]
