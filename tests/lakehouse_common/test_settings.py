"""Settings load from env and YAML, stay frozen, hide secrets and explain what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from lakehouse_common.errors import ConfigError
from lakehouse_common.settings import KafkaSettings, ServiceSettings, load_settings


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    batch_rows: int = Field(1000, ge=1)


def test_environment_overrides_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batch_rows: 50\nkafka:\n  bootstrap_servers: file:9092\n  security_protocol: SASL_SSL\n")
    monkeypatch.setenv("EXAMPLE_KAFKA__BOOTSTRAP_SERVERS", "env:9092")

    settings = load_settings(ExampleSettings, config)

    assert settings.batch_rows == 50
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.security_protocol == "SASL_SSL"


def test_settings_are_frozen() -> None:
    settings = load_settings(ExampleSettings)
    with pytest.raises(ValidationError):
        settings.batch_rows = 5  # type: ignore[misc]


def test_every_invalid_field_is_reported_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_BATCH_ROWS", "0")
    monkeypatch.setenv("EXAMPLE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ConfigError) as raised:
        load_settings(ExampleSettings)
    message = str(raised.value)
    assert "EXAMPLE_BATCH_ROWS" in message
    assert "EXAMPLE_KAFKA__SECURITY_PROTOCOL" in message


def test_unknown_keys_and_missing_files_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("batch_rowz: 5\n")
    with pytest.raises(ConfigError, match="batch_rowz"):
        load_settings(ExampleSettings, config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(ExampleSettings, tmp_path / "missing.yaml")


def test_sasl_password_is_secret_but_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("EXAMPLE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("EXAMPLE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("EXAMPLE_KAFKA__SASL_PASSWORD", "hunter2-secret")
    settings = load_settings(ExampleSettings)

    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in settings.model_dump_json()
    assert settings.kafka.librdkafka_config()["sasl.password"] == "hunter2-secret"


def test_sasl_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sasl_username"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT").librdkafka_config()
