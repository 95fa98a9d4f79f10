"""What the deployment tests share: the artifacts' paths, the programs our images run, and the
settings those programs read.

A command line from docker-compose.yml or the chart names a console script; the script's
settings model (``lakehouse_common.config_reference``) says which environment variables it
reads and which are required. Programs without a settings model (the generator) read only
the environment variables their command-line options declare.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from lakehouse_common.config_reference import SERVICES, environment_variables, service_settings, settings_class
from lakehouse_common.settings import load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
CHART_DIR = PROJECT_ROOT / "helm" / "mongo-cdc-lakehouse"
VENV_BIN = Path(sys.executable).parent
HELM = PROJECT_ROOT / ".cache" / "bin" / "helm"

# The prefixes of our settings models: a variable with one of them must be a setting.
SETTINGS_PREFIXES = ("CDC_", "BRONZE_", "SPARK_JOBS_")


def console_scripts() -> dict[str, str]:
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


def program_command(program: str) -> Any:
    """The command group behind a console script (our scripts are Typer apps with subcommands)."""
    module, attribute = console_scripts()[program].split(":")
    command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
    assert hasattr(command, "get_command"), f"{program} is expected to have subcommands"
    return command


def parse_command_line(argv: Sequence[str]) -> Any:
    """Parse ``argv`` as the program would, without running it; raises on an unknown script,
    subcommand or option."""
    program, *arguments = argv
    if program not in console_scripts():
        raise AssertionError(f"{program!r} is not a console script in pyproject.toml [project.scripts]")
    group = program_command(program)
    assert arguments, f"{program} needs a subcommand"
    parent = group.context_class(group, info_name=program)
    subcommand = group.get_command(parent, arguments[0])
    if subcommand is None:
        raise AssertionError(f"{program} has no subcommand {arguments[0]!r}")
    return subcommand.make_context(arguments[0], list(arguments[1:]), parent=parent)


def option_variables(argv: Sequence[str]) -> set[str]:
    """Environment variables the subcommand's options read (``envvar=``)."""
    context = parse_command_line(argv)
    names: set[str] = set()
    for parameter in context.command.params:
        envvar = getattr(parameter, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def readable_variables(argv: Sequence[str]) -> set[str]:
    """Every environment variable the program on this command line reads."""
    program = argv[0]
    names = option_variables(argv)
    if program in SERVICES:
        names |= environment_variables(program)
    return names


def required_variables(program: str) -> set[str]:
    if program not in SERVICES:
        return set()
    return {setting.variable for setting in service_settings(program) if setting.default == "(required)"}


def secret_variables(program: str) -> set[str]:
    if program not in SERVICES:
        return set()
    return {setting.variable for setting in service_settings(program) if setting.secret}


def environment_problems(argv: Sequence[str], names: set[str]) -> list[str]:
    """Variables the program does not read, and required settings left unset."""
    readable = readable_variables(argv)
    # A map setting also reads one variable per key (BRONZE_LAKE__STORAGE_OPTIONS__AWS_REGION).
    unread = {name for name in names - readable if not any(name.startswith(f"{variable}__") for variable in readable)}
    problems = [f"{argv[0]} does not read {name}" for name in sorted(unread)]
    problems += [f"{argv[0]} needs {name}" for name in sorted(required_variables(argv[0]) - names)]
    return problems


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Exactly these settings variables in os.environ (others of our prefixes removed)."""
    saved = dict(os.environ)
    try:
        for name in [name for name in os.environ if name.startswith(SETTINGS_PREFIXES)]:
            del os.environ[name]
        os.environ.update(variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_program_settings(program: str, variables: Mapping[str, str]) -> object:
    """Validate the values: load the program's settings from exactly these variables."""
    with environment(variables):
        return load_settings(settings_class(program))  # type: ignore[type-var]


# ---------------------------------------------------------------- the chart, rendered by helm

# The Kubernetes version the chart is rendered for and its manifests are validated against.
KUBERNETES_VERSION = "1.31.0"

CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))


def helm(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert HELM.exists(), f"{HELM} is missing: `make setup` builds it"
    return subprocess.run([str(HELM), *arguments], capture_output=True, text=True, timeout=120)


def render(values_file: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart; fails with helm's message when rendering fails."""
    arguments = ["template", "lakehouse", str(CHART_DIR), "--namespace", "data", "--kube-version", KUBERNETES_VERSION]
    if values_file is not None:
        arguments += ["-f", str(values_file)]
    for assignment in sets:
        arguments += ["--set", assignment]
    result = helm(*arguments)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


# ---------------------------------------------------------------- the Dockerfile, read without Docker


@dataclass
class Stage:
    """One build stage: its name, the image it starts from (ARGs resolved), its instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]

    def environment(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for arguments in self.arguments("ENV"):
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                variables[name] = value
        return variables

    def text(self) -> str:
        return "\n".join(f"{instruction} {arguments}" for instruction, arguments in self.instructions)


def _logical_lines(text: str) -> list[str]:
    """Instructions with their continuations joined; heredoc bodies attached to their RUN."""
    lines, current, heredoc = [], "", None
    for raw in text.splitlines():
        if heredoc is not None:
            current += "\n" + raw
            if raw.strip() == heredoc:
                lines.append(current)
                current, heredoc = "", None
            continue
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current = f"{current} {stripped}" if current else stripped
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        match = re.search(r"<<'?(\w+)'?", current)
        if match:
            heredoc = match.group(1)
            continue
        lines.append(current)
        current = ""
    return lines


def dockerfile_stages() -> dict[str, Stage]:
    """docker/Dockerfile's stages by name."""
    arguments: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            arguments[name] = default
        elif instruction == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda found: arguments[found.group(1)], match.group(1))
            stage = stages[match.group(2)] = Stage(match.group(2), base)
        elif stage is not None:
            stage.instructions.append((instruction, rest))
    return stages
