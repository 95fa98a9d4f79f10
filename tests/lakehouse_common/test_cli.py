"""Console scripts share --config and fail on bad settings with exit 2 and a readable message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from typer.testing import CliRunner

from lakehouse_common.cli import config_option, load_cli_settings
from lakehouse_common.settings import ServiceSettings


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    batch_rows: int = Field(1000, ge=1)


ConfigOption = Annotated[Path | None, config_option("EXAMPLE_CONFIG")]
app = typer.Typer()


@app.command()
def show(config: ConfigOption = None) -> None:
    typer.echo(load_cli_settings(ExampleSettings, config, None).batch_rows)


runner = CliRunner()


def test_the_config_file_comes_from_the_option_or_its_variable(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batch_rows: 7\n")

    assert runner.invoke(app, ["--config", str(config)]).output.strip() == "7"
    assert runner.invoke(app, [], env={"EXAMPLE_CONFIG": str(config)}).output.strip() == "7"


def test_bad_settings_exit_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_BATCH_ROWS", "0")

    result = runner.invoke(app, [])

    assert result.exit_code == 2
    assert "EXAMPLE_BATCH_ROWS" in result.output
    assert "Traceback" not in result.output


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", str(tmp_path / "absent.yaml")])

    assert result.exit_code == 2
    assert "does not exist" in result.output
