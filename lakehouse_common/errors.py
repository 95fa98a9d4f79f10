"""Every exception the project raises on purpose, in one hierarchy.

Each error says what to do about it through its base class, so a service loop maps
errors to actions in one place (as kafka-delta-ingest does): a ``PoisonMessageError``
skips the message to the dead-letter destination, a ``TransientError`` retries with
backoff, and any other ``LakehouseError`` stops the service with its message.
"""

from __future__ import annotations


class LakehouseError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigError(LakehouseError):
    """Configuration is missing or invalid; the message names each bad setting."""


class TransientError(LakehouseError):
    """A dependency is unavailable for now (network, broker, primary step-down): retry."""


class FatalError(LakehouseError):
    """Continuing could lose or corrupt data; stop and tell the operator what to do."""


class StackError(LakehouseError):
    """A local stack component (broker, MongoDB stand-in, Spark) failed to start or stop."""


class PoisonMessageError(LakehouseError):
    """One message cannot be processed; route it to the dead-letter destination and go on."""


class ContractError(PoisonMessageError):
    """A message does not follow the event contract."""


class UndecodableEventError(ContractError):
    """The bytes are not a valid event in the declared format."""


class UnsupportedContractVersionError(ContractError):
    """The event was written under a contract version this reader does not know."""


class MissingEventFieldError(ContractError):
    """A field the contract requires is absent."""


class ClaimNotFoundError(ContractError):
    """A record references a claim (an oversized event kept in the lake) that the claim store does not hold."""


class ClaimCorruptError(ContractError):
    """A claim's bytes do not match the content address (or size) its reference names."""


__all__ = [
    "ClaimCorruptError",
    "ClaimNotFoundError",
    "ConfigError",
    "ContractError",
    "FatalError",
    "LakehouseError",
    "MissingEventFieldError",
    "PoisonMessageError",
    "StackError",
    "TransientError",
    "UndecodableEventError",
    "UnsupportedContractVersionError",
]
