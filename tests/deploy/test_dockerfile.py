"""docker/Dockerfile (no Docker engine here: the file is checked by reading it): multi-stage,
pinned bases, non-root, a JRE only in the Spark image, Delta's jars fetched at build time,
every copied path present in the build context, and image settings the programs read."""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from deploy_support import (
    DOCKERIGNORE,
    PROJECT_ROOT,
    SETTINGS_PREFIXES,
    Stage,
    console_scripts,
    dockerfile_stages,
    environment_problems,
    load_program_settings,
)

RUNTIME_TARGETS = ("services", "spark-jobs")
# A command line of each program whose settings an image presets.
RUN_COMMANDS = {"bronze-writer": ["bronze-writer", "run"], "spark-jobs": ["spark-jobs", "dbt"]}
EXACT_TAG = re.compile(r"^[a-z0-9./_-]+:\d+(\.\d+)+[A-Za-z0-9._-]*$")


def _lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def _copy_sources() -> list[str]:
    sources = []
    for stage in dockerfile_stages().values():
        for arguments in stage.arguments("COPY"):
            if arguments.startswith("--from"):
                continue
            *paths, _destination = shlex.split(arguments)
            sources += paths
    return sources


def _ignored(relative: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern matching a
    directory covers everything below it."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    parts = Path(relative).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        forms = {pattern, pattern.replace("**/", "")} if pattern.startswith("**/") else {pattern}
        for candidate in candidates:
            names = (candidate, candidate.rsplit("/", 1)[-1]) if pattern.startswith("**/") else (candidate,)
            if any(fnmatch.fnmatchcase(name, form) for name in names for form in forms):
                ignored = not negated
                break
    return ignored


def test_every_stage_starts_from_a_pinned_image_or_an_earlier_stage() -> None:
    stages = dockerfile_stages()
    for stage in stages.values():
        if stage.base in stages:
            continue
        assert EXACT_TAG.match(stage.base), f"stage {stage.name}: {stage.base} is not pinned to an exact version"
        assert not stage.base.endswith(":latest")
    bases = {stage.base for stage in stages.values()}
    assert any(base.startswith("python:3.11.") and base.endswith("-slim-bookworm") for base in bases)


def test_runtime_images_copy_a_built_venv_and_hold_no_toolchain() -> None:
    stages = dockerfile_stages()
    for target in RUNTIME_TARGETS:
        runtime = stages[target]
        assert runtime.base not in stages, f"{target} starts from a clean base image, not a build stage"
        venv_copies = [arguments for arguments in runtime.arguments("COPY") if "/opt/venv" in arguments]
        assert venv_copies and all(arguments.startswith("--from=") for arguments in venv_copies)
        text = runtime.text()
        for tool in ("gcc", "cargo", "rustup", "maturin", "maven", "jdk-headless"):
            assert tool not in text, f"{target} installs or copies {tool}"
    # The codec is compiled with maturin in a builder stage and reaches both venvs as a wheel.
    assert "maturin build" in stages["codec"].text()
    for venv in ("services-venv", "spark-venv"):
        assert "--from=codec /wheels" in stages[venv].text()


def test_runtime_images_run_as_a_numeric_non_root_user() -> None:
    stages = dockerfile_stages()
    for target in RUNTIME_TARGETS:
        user = stages[target].arguments("USER")[-1]
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user} (Kubernetes verifies runAsNonRoot on numeric ids)"
        assert gid.isdigit() and int(gid) != 0


def test_only_the_spark_image_has_a_java_runtime() -> None:
    stages = dockerfile_stages()
    services = "\n".join(stage.text() for stage in _lineage(stages, "services"))
    assert "java" not in services.lower() and "jre" not in services.lower()
    spark = stages["spark-jobs"]
    assert spark.environment()["JAVA_HOME"] == "/opt/java/openjdk"
    assert "--from=jre /opt/java/openjdk /opt/java/openjdk" in spark.text()
    assert re.match(r"eclipse-temurin:17\.", stages["jre"].base)


def test_delta_jars_are_fetched_at_build_time_where_spark_looks_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from local_stack.fetch import COMPONENTS
    from local_stack.paths import jvm_component_dir
    from spark_jobs.session import SparkSettings

    stages = dockerfile_stages()
    fetch = stages["delta-jars"]
    cache = fetch.environment()["LAKEHOUSE_CACHE_DIR"]
    spark = stages["spark-jobs"]
    assert spark.environment()["LAKEHOUSE_CACHE_DIR"] == cache
    monkeypatch.setenv("LAKEHOUSE_CACHE_DIR", cache)
    settings = SparkSettings()
    # Delta, and the S3 connector an object-store lake needs: in the image, where Spark's settings look.
    for component, directory in (("delta", settings.delta_jars_dir), ("s3", settings.s3_jars_dir)):
        assert f"fetch_component('{component}')" in fetch.text() and component in COMPONENTS
        component_dir = jvm_component_dir(component)
        assert f"--from=delta-jars {component_dir} {component_dir}" in spark.text()
        assert directory == component_dir / "jars"


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = _copy_sources()
    assert "native/lakehouse_codec" in sources and "dbt" in sources
    for source in sources:
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: no such path"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    for needed in ("native/lakehouse_codec/Cargo.lock", "native/lakehouse_codec/src/lib.rs",
                   "local_stack/maven/delta/pom.xml", "dbt/dbt_project.yml", "dbt/profiles.yml"):
        assert not _ignored(needed), needed
    for junk in ("native/lakehouse_codec/target", "dbt/target", ".venv", ".cache", "build", "cdc_service/__pycache__"):
        assert _ignored(junk), junk


def test_the_services_image_leaves_out_only_what_its_programs_never_import() -> None:
    stages = dockerfile_stages()
    match = re.search(r"spark_only = \(([^)]*)\)", stages["services-venv"].text())
    assert match
    left_out = {name.strip().strip('"') for name in match.group(1).split(",") if name.strip()}
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    names = {re.split(r"[\[=<>]", dependency)[0] for dependency in dependencies}
    assert left_out <= names, f"stale names in the filter: {left_out - names}"
    forbidden = {"pyspark", "delta", "dbt", "spark_jobs", "local_stack"}
    for package in ("cdc_service", "bronze_writer", "data_generator", "lakehouse_common", "spark_jobs"):
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    # spark_jobs is the Spark half itself; like every service it never uses the local stack.
                    if package == "spark_jobs" and top != "local_stack":
                        continue
                    assert top not in forbidden, f"{path.relative_to(PROJECT_ROOT)} imports {module}"


def test_image_settings_are_ones_the_programs_read_and_point_at_the_image_layout() -> None:
    stages = dockerfile_stages()
    for target, program in (("services", "bronze-writer"), ("spark-jobs", "spark-jobs")):
        variables = {name: value for name, value in stages[target].environment().items() if name.startswith(SETTINGS_PREFIXES)}
        assert variables, target
        assert environment_problems(RUN_COMMANDS[program], set(variables)) == []
        load_program_settings(program, variables)
    spark = stages["spark-jobs"].environment()
    assert "COPY dbt /app/dbt" in stages["spark-jobs"].text()
    assert spark["SPARK_JOBS_DBT__PROJECT_DIR"] == "/app/dbt"
    for name in ("SPARK_JOBS_SPARK__WAREHOUSE_DIR", "SPARK_JOBS_SPARK__METASTORE_DIR"):
        assert spark[name].startswith("/data/"), "tables and the metastore live on the lake volume"
    for name in ("SPARK_JOBS_DBT__TARGET_PATH", "SPARK_JOBS_DBT__LOG_PATH", "SPARK_JOBS_DBT__SPARK_CONF_DIR"):
        assert spark[name].startswith("/tmp/"), "the root filesystem is read-only in Kubernetes"


def test_default_commands_are_console_scripts() -> None:
    stages = dockerfile_stages()
    for target in RUNTIME_TARGETS:
        command = ast.literal_eval(stages[target].arguments("CMD")[-1])
        assert command[0] in console_scripts()


def test_dockerignore_matcher_follows_last_match_wins() -> None:
    assert _ignored("tests/deploy")
    assert not _ignored("cdc_service/cli.py")
    assert _ignored("spark_jobs/__pycache__/cli.cpython-311.pyc")
