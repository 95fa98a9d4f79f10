"""Configuration shared by the services: a frozen pydantic-settings base, Kafka and HTTP.

Every service defines ``class XSettings(ServiceSettings)`` with its own env prefix and
loads it with ``load_settings(XSettings, config_file)``. Sources, strongest first:
keyword arguments, environment variables (nested fields with ``__``), the YAML file,
then defaults. Invalid configuration raises ``ConfigError`` listing every bad field
with the environment variable that sets it.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from lakehouse_common.errors import ConfigError

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_file", default=None)

SettingsT = TypeVar("SettingsT", bound="ServiceSettings")


class FrozenModel(BaseModel):
    """A nested settings section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(FrozenModel):
    """How to reach the Kafka cluster."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_ca_location: str | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    client_config: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties, passed through as given."
    )

    def librdkafka_config(self) -> dict[str, str]:
        """The confluent-kafka configuration for these settings, secrets included."""
        config = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ConfigError(
                    f"security protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
                )
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        config.update(self.client_config)
        return config


class HttpSettings(FrozenModel):
    """The HTTP endpoint serving /metrics, /healthz and /readyz."""

    host: str = Field("0.0.0.0", description="Interface to bind.")
    port: int = Field(9400, ge=0, le=65535, description="Port to bind; 0 picks a free one.")


class ServiceSettings(BaseSettings):
    """Base of every service's settings."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="Metrics and health endpoint.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(settings_class: type[SettingsT], config_file: Path | str | None = None, **overrides: Any) -> SettingsT:
    """Load and validate settings; raise ``ConfigError`` with every problem at once."""
    path = Path(config_file) if config_file else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    token = _config_file.set(path)
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(settings_class, error)) from None
    finally:
        _config_file.reset(token)


def describe_validation_error(settings_class: type[BaseSettings], error: ValidationError) -> str:
    """One line per bad field, naming the environment variable that sets it."""
    prefix = settings_class.model_config.get("env_prefix", "")
    delimiter = settings_class.model_config.get("env_nested_delimiter") or "__"
    lines = [f"invalid configuration for {settings_class.__name__}:"]
    for problem in error.errors():
        path = [str(part) for part in problem["loc"]]
        variable = (prefix + delimiter.join(path)).upper()
        lines.append(f"  {'.'.join(path)} ({variable}): {problem['msg']}")
    return "\n".join(lines)


__all__ = [
    "FrozenModel",
    "HttpSettings",
    "KafkaSettings",
    "ServiceSettings",
    "describe_validation_error",
    "load_settings",
]
