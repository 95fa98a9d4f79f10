"""What every console script shares: the ``--config`` option, and settings that fail with exit 2.

A configuration problem is the operator's to fix, so it gets one readable message naming
each bad variable and exit status ``ExitCode.BAD_CONFIGURATION`` (2, as for a usage
error), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.models import OptionInfo

from lakehouse_common.errors import ConfigError
from lakehouse_common.json_logging import configure_logging
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.settings import SettingsT, load_settings


def config_option(envvar: str) -> OptionInfo:
    """The ``--config/-c`` option: a YAML file, also given by ``envvar``; environment variables win over it.

    Used as ``Annotated[Path | None, config_option("X_CONFIG")]``: the alias is spelled out in each
    console script so that type checkers see a type, not a value.
    """
    option: OptionInfo = typer.Option(
        "--config", "-c", envvar=envvar, help="YAML configuration file; environment variables win over it."
    )
    return option


def load_cli_settings(settings_class: type[SettingsT], config: Path | None, log_as: str | None, **overrides: Any) -> SettingsT:
    """Validated settings, or exit BAD_CONFIGURATION with the problems; then JSON logs as ``log_as`` (None: leave logging alone)."""
    try:
        settings = load_settings(settings_class, config, **overrides)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.BAD_CONFIGURATION) from None
    if log_as is not None:
        configure_logging(log_as, settings.log_level)
    return settings


__all__ = ["config_option", "load_cli_settings"]
