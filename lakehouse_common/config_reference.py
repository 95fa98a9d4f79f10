"""The configuration reference, generated from the settings models.

``python -m lakehouse_common.config_reference --write`` regenerates docs/configuration.md;
``--check`` fails when it is stale (CI runs the check through the test suite). The same
walk gives the set of environment variables each service reads, which the deployment
checks compare with docker-compose.yml and the Helm chart.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PATH = PROJECT_ROOT / "docs" / "configuration.md"

SERVICES: dict[str, str] = {
    "cdc-service": "cdc_service.settings:CdcSettings",
    "bronze-writer": "bronze_writer.settings:BronzeSettings",
    "spark-jobs": "spark_jobs.settings:SparkJobsSettings",
}
"""The deployed services (compose and the chart run these)."""

DOCUMENTED: dict[str, str] = {
    **SERVICES,
    "lakehouse-demo": "demo.settings:DemoSettings",
    "lakehouse-chaos": "chaos.settings:ChaosSettings",
}
"""Every program whose settings the reference lists: the services, the demo and the chaos harness."""


@dataclass(frozen=True)
class Setting:
    """One leaf setting: its environment variable, type, default and meaning."""

    variable: str
    path: str
    type: str
    default: str
    description: str
    secret: bool


def settings_class(service: str) -> type[BaseModel]:
    module, name = DOCUMENTED[service].split(":")
    return getattr(importlib.import_module(module), name)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model`` or ``Model | None``, if the annotation is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [arg for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if len(models) == 1:
            return models[0]
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return " \\| ".join(repr(member.value) for member in annotation)
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    return text.replace("NoneType", "None")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        try:
            return str(value.resolve().relative_to(PROJECT_ROOT))
        except ValueError:
            return str(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    # Defaults computed from the checkout's location are shown relative to it, so the
    # reference is the same on every machine.
    return "" if value is None else str(value).replace(f"{PROJECT_ROOT}/", "")


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return SecretStr in typing.get_args(annotation)


def _variable(prefix: str, name: str, field: FieldInfo) -> str:
    """The variable a field reads: its first alias when it has one (e.g. MONGO_URI), else prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return f"{prefix}{name}".upper()


def walk(model: type[BaseModel], prefix: str, path: str = "") -> Iterator[Setting]:
    for name, field in model.model_fields.items():
        variable = _variable(prefix, name, field)
        dotted = f"{path}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from walk(nested, f"{variable}__", f"{dotted}.")
            continue
        yield Setting(
            variable=variable,
            path=dotted,
            type=_type_name(field.annotation),
            default=_default(field),
            description=(field.description or "").replace("|", "\\|"),
            secret=_is_secret(field.annotation),
        )


def service_settings(service: str) -> list[Setting]:
    model = settings_class(service)
    return list(walk(model, model.model_config.get("env_prefix", "")))


def environment_variables(service: str) -> set[str]:
    """Every environment variable the service reads (leaves only)."""
    return {setting.variable for setting in service_settings(service)}


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings models by `python -m lakehouse_common.config_reference --write`;",
        "the test suite fails when this file is stale. Every service reads environment variables",
        "(nested settings joined with `__`) and, optionally, a YAML file given with `--config`",
        "(or `CDC_CONFIG`, `BRONZE_CONFIG`, `SPARK_JOBS_CONFIG`);",
        "environment variables win over the file. Dictionary settings take JSON in the environment.",
        "Secrets (marked 🔒) are never logged.",
        "",
    ]
    for service in DOCUMENTED:
        lines += [f"## {service}", "", "| variable | type | default | description |", "| --- | --- | --- | --- |"]
        for setting in service_settings(service):
            name = f"`{setting.variable}`" + (" 🔒" if setting.secret else "")
            default = f"`{setting.default}`" if setting.default else ""
            lines.append(f"| {name} | {setting.type} | {default} | {setting.description} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"regenerate {REFERENCE_PATH.relative_to(PROJECT_ROOT)}")
    action.add_argument("--check", action="store_true", help="exit 1 when the reference is stale")
    arguments = parser.parse_args()
    text = render()
    if arguments.write:
        REFERENCE_PATH.write_text(text)
        return 0
    if not REFERENCE_PATH.exists() or REFERENCE_PATH.read_text() != text:
        print(f"{REFERENCE_PATH} is stale: run python -m lakehouse_common.config_reference --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
