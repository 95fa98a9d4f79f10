"""Every console script ends with a code of ``lakehouse_common.lifecycle.ExitCode``, and only with one.

Two checks: no exit in a script's package (or in lakehouse_common, which they share) passes
a bare number, so every code is spelled as an ``ExitCode``; and each script, run for real,
answers ``--help`` with OK and a bad setting or argument with BAD_CONFIGURATION.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lakehouse_common.lifecycle import ExitCode
from local_stack.paths import PROJECT_ROOT

SCRIPTS: dict[str, str] = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
_EXITS = {("typer", "Exit"), (None, "Exit"), ("sys", "exit"), (None, "SystemExit"), ("os", "_exit"), (None, "exit")}


def _callee(node: ast.Call) -> tuple[str | None, str] | None:
    if isinstance(node.func, ast.Name):
        return (None, node.func.id)
    if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        return (node.func.value.id, node.func.attr)
    return None


def _bare_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool)


def bare_exit_codes(package: Path) -> list[str]:
    """``file:line`` of every exit call in ``package`` whose code is a number, not an ``ExitCode``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or _callee(node) not in _EXITS:
                continue
            arguments = [*node.args[:1], *(keyword.value for keyword in node.keywords if keyword.arg == "code")]
            if any(_bare_number(argument) for argument in arguments):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return found


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_console_script_spells_every_exit_code_as_an_exit_code(script: str) -> None:
    package = SCRIPTS[script].split(":")[0].split(".")[0]
    assert bare_exit_codes(PROJECT_ROOT / package) == []


def test_the_shared_cli_helpers_spell_every_exit_code_as_an_exit_code() -> None:
    assert bare_exit_codes(PROJECT_ROOT / "lakehouse_common") == []


def test_the_check_finds_a_bare_number(tmp_path: Path) -> None:
    package = tmp_path / "probe"
    package.mkdir()
    (package / "cli.py").write_text("import sys, typer\nraise typer.Exit(2)\nsys.exit(code=1)\ntyper.Exit(ExitCode.OK)\n")
    assert bare_exit_codes(package) == ["probe/cli.py:2", "probe/cli.py:3"]


# A bad setting or argument for each script; it must exit BAD_CONFIGURATION before starting anything.
BAD_INPUT: dict[str, tuple[list[str], dict[str, str]]] = {
    "cdc-service": (["run"], {"CDC_MONGO_URI": "mongodb://localhost", "CDC_SNAPSHOT__PARALLELISM": "0"}),
    "bronze-writer": (["run"], {"BRONZE_BATCH__MAX_ROWS": "0"}),
    "spark-jobs": (["maintain", "--layer", "platinum"], {}),
    "lakehouse-generator": (["load", "--scale", "not-a-number"], {}),
    "lakehouse-demo": ([], {"DEMO_SCALE": "-1"}),
    "lakehouse-stack": (["no-such-command"], {}),
    "lakehouse-chaos": ([], {"CHAOS_CYCLES": "0"}),
}


def _run(script: str, arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    module = SCRIPTS[script].split(":")[0]
    code = f"import sys; from {module} import app; sys.argv[0] = {script!r}; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], env={**os.environ, **environment}, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_console_script_answers_help_with_ok_and_bad_input_with_bad_configuration(script: str) -> None:
    assert set(BAD_INPUT) == set(SCRIPTS), "name a bad input for every console script"
    helped = _run(script, ["--help"], {})
    assert helped.returncode == ExitCode.OK, helped.stderr
    arguments, environment = BAD_INPUT[script]
    refused = _run(script, arguments, environment)
    assert refused.returncode == ExitCode.BAD_CONFIGURATION, refused.stdout + refused.stderr
