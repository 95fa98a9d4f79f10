"""Configuration shared by the services: a frozen pydantic-settings base, Kafka and HTTP.

Every service defines ``class XSettings(ServiceSettings)`` with its own env prefix and
loads it with ``load_settings(XSettings, config_file)``. Sources, strongest first:
keyword arguments, environment variables (nested fields with ``__``), the YAML file,
then defaults. Invalid configuration raises ``ConfigError`` listing every bad field
with the environment variable that sets it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from lakehouse_common.errors import ConfigError

_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_file", default=None)

SettingsT = TypeVar("SettingsT", bound="ServiceSettings")

logger = logging.getLogger(__name__)

_warned_renames: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _apply_renames(owner: type, renamed: Mapping[str, str], data: Any) -> Any:
    """Move values given under a field's former name to its current one, warning once per name.

    The current name wins where both are given (in any source: arguments, environment, YAML).
    """
    if not renamed or not isinstance(data, dict) or not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        value = data.pop(old)
        data.setdefault(new, value)
        with _warned_lock:
            first_time = (owner.__qualname__, old) not in _warned_renames
            _warned_renames.add((owner.__qualname__, old))
        if first_time:
            config: Mapping[str, Any] = getattr(owner, "model_config", {})
            # A service's own fields have their whole variable; a section's, its last part.
            prefix = str(config.get("env_prefix") or "...") if issubclass(owner, BaseSettings) else "..."
            message = (
                f"setting {old!r} of {owner.__name__} ({prefix}{old.upper()}) is deprecated and will be removed: "
                f"use {new!r} ({prefix}{new.upper()})"
            )
            logger.warning(message, extra={"deprecated": old, "replacement": new})
            warnings.warn(message, DeprecationWarning, stacklevel=2)
    return data


class RenamedSettings:
    """Former names of fields, still accepted: ``renamed_settings = {"old_name": "new_name"}``.

    Each former name works in every source (arguments, environment variables, the YAML file)
    and logs a deprecation warning once per process.
    """

    renamed_settings: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, data: Any) -> Any:
        return _apply_renames(cls, cls.renamed_settings, data)


class FrozenModel(RenamedSettings, BaseModel):
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


class _FormerNamesFromEnvironment(PydanticBaseSettingsSource):
    """Top-level fields' former environment variables (``<prefix><old name>``), which the
    environment source does not read; nested ones arrive through ``<prefix><section>__``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        renamed: Mapping[str, str] = getattr(self.settings_cls, "renamed_settings", {})
        if not renamed:
            return {}
        prefix = str(self.config.get("env_prefix") or "")
        environment = {name.upper(): value for name, value in os.environ.items()}
        return {old: environment[(prefix + old).upper()] for old in renamed if (prefix + old).upper() in environment}


class ServiceSettings(RenamedSettings, BaseSettings):
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
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _FormerNamesFromEnvironment(settings_cls),
            file_secret_settings,
        ]
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
    "RenamedSettings",
    "ServiceSettings",
    "describe_validation_error",
    "load_settings",
]
