"""The claim store: events too large for their Kafka topic, kept in the lake by content address.

cdc_service writes an oversized event here before it produces the record that references
it; bronze_writer reads it back when it lands that record; ``bronze-writer vacuum`` deletes
it once it is no longer needed. The store is a directory or an object-store prefix under
the lake root (deltalake's storage options reach it, through object_store, the crate
deltalake itself writes with)::

    <lake root>/claims/sha256/<first 2 hex digits>/<64 hex digits>          the event's value bytes
    <lake root>/claims/sha256/<first 2 hex digits>/<64 hex digits>.landed   written once bronze landed it

**Writing.** ``put`` is idempotent: the same bytes always go to the same name, and a put
replaces an object atomically (object_store writes a local file under a temporary name and
renames it; an S3 PUT is atomic), so a reader never sees part of a claim. A put always
rewrites: that also refreshes the claim's age, so an event published again (a restart from
an older checkpoint) is never collected under the new record that references it. On a
local directory the file and its directory are fsynced before ``put`` returns: the claim is
durable before the record referencing it is produced.

**Reading.** ``get`` checks the size before it downloads and the SHA-256 after: a missing
claim is ``ClaimNotFoundError``, a wrong one ``ClaimCorruptError`` (both contract errors:
the record is dead-lettered with the reason, never landed).

**Collecting.** A claim may be deleted once bronze has landed its event (its ``.landed``
marker exists: bronze writes it after the batch that resolved the claim is durable) and
both the claim and its marker are older than the retention, which covers re-reads of the
record (a reset of offsets, a replica replaying a partition). A claim without a marker is
an orphan: its record was never landed (an aborted transaction, a crash between the claim
and its record, a record dead-lettered before it was resolved) or was landed by a writer
that crashed before its marker; it is kept unless an orphan retention is given, which
must exceed the topics' retention (no record can reference it any more). Everything
collection deletes, and every orphan it keeps, is counted and logged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)
from obstore.store import LocalStore, ObjectStore, S3Store, from_url

from lakehouse_common.contract import CLAIM_ALGORITHM, ClaimReference
from lakehouse_common.errors import ClaimCorruptError, ClaimNotFoundError, ConfigError, TransientError

if TYPE_CHECKING:
    from obstore import ObjectMeta

logger = logging.getLogger(__name__)

CLAIMS_DIRECTORY = "claims"
LANDED_SUFFIX = ".landed"
_PREFIX = f"{CLAIMS_DIRECTORY}/{CLAIM_ALGORITHM}"
_S3_SCHEMES = ("s3://", "s3a://")
# object_store's HTTP client options: deltalake takes them among the storage options, object_store apart.
_CLIENT_OPTIONS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type", "pool_idle_timeout",
    "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes", "randomize_addresses",
    "read_timeout", "timeout", "user_agent",
})
_BOOLEAN_CLIENT_OPTIONS = frozenset({"allow_http", "allow_invalid_certificates", "randomize_addresses"})
# deltalake's own options (commit coordination), which object_store does not know.
_DELTALAKE_ONLY = frozenset({"aws_s3_allow_unsafe_rename", "aws_s3_locking_provider", "delta_dynamo_table_name"})


def claim_path(digest: str) -> str:
    """The object name of a claim, relative to the lake root."""
    return f"{_PREFIX}/{digest[:2]}/{digest}"


def _open(root: str, storage_options: Mapping[str, str]) -> tuple[ObjectStore, Path | None]:
    """An object_store client for ``root`` (and the local directory, when it is one).

    deltalake takes object_store's HTTP client options among its storage options; obstore
    wants them apart, and (on S3) every other key with its ``aws_`` prefix.
    """
    if "://" not in root or root.startswith("file://"):
        directory = Path(root.removeprefix("file://")).absolute()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TransientError(f"cannot create the claim store's directory {directory}: {error}") from error
        return LocalStore(directory, automatic_cleanup=True), directory
    s3 = root.lower().startswith(_S3_SCHEMES)
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in storage_options.items():
        name = key.lower()
        bare = name.removeprefix("aws_")
        if bare in _CLIENT_OPTIONS:
            client[bare] = value.strip().lower() in ("1", "true", "yes", "on") if bare in _BOOLEAN_CLIENT_OPTIONS else value
        elif name not in _DELTALAKE_ONLY:
            config[f"aws_{name}" if s3 and not name.startswith("aws_") else name] = value
    try:
        if s3:
            return S3Store.from_url(root, config=config, client_options=client), None  # type: ignore[arg-type]
        return from_url(root, config=config or None, client_options=client or None), None  # type: ignore[arg-type]
    except UnknownConfigurationKeyError as error:
        raise ConfigError(f"a storage option is not valid for the claim store: {error}") from None
    except BaseError as error:
        raise ConfigError(f"cannot open the claim store at {root}: {error}") from None
    except ValueError as error:  # obstore refuses a scheme it does not know
        raise ConfigError(f"cannot open the claim store at {root}: {error}") from None


@dataclass
class ClaimCollection:
    """What one collection did (or would do, dry): counts and bytes by outcome."""

    deleted: int = 0
    deleted_bytes: int = 0
    orphans_deleted: int = 0
    orphans_deleted_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    orphans_kept: int = 0
    orphans_kept_bytes: int = 0
    oldest_orphan: datetime | None = None
    stray_markers: int = 0  # markers whose claim was gone (a collection interrupted between the two deletes)
    deleted_paths: list[str] = field(default_factory=list)

    def log_fields(self) -> dict[str, Any]:
        fields = {name: value for name, value in vars(self).items() if name != "deleted_paths"}
        fields["oldest_orphan"] = self.oldest_orphan.isoformat() if self.oldest_orphan else None
        return fields


class ClaimStore:
    """Claims under one lake root: ``put`` (cdc_service), ``get`` and ``mark_landed`` (bronze), ``collect`` (vacuum)."""

    def __init__(self, root: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self._options = dict(storage_options or {})
        self._client: tuple[ObjectStore, Path | None] | None = None

    def _open(self) -> tuple[ObjectStore, Path | None]:
        """The client, made at first use: a lake that never meets a claim never needs the store."""
        if self._client is None:
            self._client = _open(self.root, self._options)
        return self._client

    def uri(self, digest: str) -> str:
        """Where a claim is, for messages (the root holds no credentials; the options do)."""
        return f"{self.root}/{claim_path(digest)}"

    # -- cdc_service -------------------------------------------------------------------------

    def put(self, value: bytes) -> ClaimReference:
        """Keep ``value`` under its content address; durable when this returns.

        Raises ``TransientError`` when the store does not take it (the caller retries from
        its last checkpoint) and ``ConfigError`` when it refuses the credentials.
        """
        reference = ClaimReference.of(value)
        path = claim_path(reference.digest)
        store, directory = self._open()
        try:
            obstore.put(store, path, value)
        except (PermissionDeniedError, UnauthenticatedError) as error:
            raise ConfigError(f"the claim store at {self.root} refused to store a claim: {error}") from None
        except BaseError as error:
            raise TransientError(f"cannot store claim {self.uri(reference.digest)}: {error}") from error
        except OSError as error:  # the local directory: full, read-only, gone
            raise TransientError(f"cannot store claim {self.uri(reference.digest)}: {error}") from error
        if directory is not None:
            self._fsync(directory / path)
        return reference

    @staticmethod
    def _fsync(file: Path) -> None:
        """Flush a local claim and the directory entry that names it (object_store does neither)."""
        try:
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            directory = os.open(file.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise TransientError(f"cannot make claim {file} durable: {error}") from error

    # -- bronze_writer -----------------------------------------------------------------------

    def get(self, reference: ClaimReference) -> bytes:
        """The claimed bytes, checked against the reference's size and SHA-256."""
        uri = self.uri(reference.digest)
        store, _ = self._open()
        try:
            result = obstore.get(store, claim_path(reference.digest))
            size = result.meta["size"]
            if size != reference.size:
                raise ClaimCorruptError(f"claim {uri} holds {size} bytes, its reference names {reference.size}")
            value = bytes(result.bytes())
        except NotFoundError:
            raise ClaimNotFoundError(
                f"claim {uri} does not exist: collected already, or cdc_service's claims.root is not this lake root"
            ) from None
        except BaseError as error:
            raise TransientError(f"cannot read claim {uri}: {error}") from error
        except FileNotFoundError:
            raise ClaimNotFoundError(f"claim {uri} does not exist") from None
        except OSError as error:
            raise TransientError(f"cannot read claim {uri}: {error}") from error
        found = ClaimReference.of(value)
        if found != reference:
            raise ClaimCorruptError(f"claim {uri} has SHA-256 {found.digest}: its bytes are not the event referenced")
        return value

    def mark_landed(self, digests: Iterable[str], detail: Mapping[str, Any] | None = None) -> int:
        """Record that bronze landed these claims' events (after the batch is durable); returns how many."""
        body = json.dumps({"landed_at": datetime.now(UTC).isoformat(), **(detail or {})}).encode()
        store, _ = self._open()
        count = 0
        for digest in sorted(set(digests)):
            try:
                obstore.put(store, claim_path(digest) + LANDED_SUFFIX, body)
            except (BaseError, OSError) as error:
                raise TransientError(f"cannot mark claim {self.uri(digest)} landed: {error}") from error
            count += 1
        return count

    # -- maintenance -------------------------------------------------------------------------

    def collect(
        self,
        retention: timedelta,
        orphan_retention: timedelta | None = None,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> ClaimCollection:
        """Delete the claims no record can need any more (the rule in the module docstring)."""
        now = now or datetime.now(UTC)
        store, _ = self._open()
        claims: dict[str, ObjectMeta] = {}
        markers: dict[str, ObjectMeta] = {}
        try:
            for chunk in obstore.list(store, _PREFIX):
                for meta in chunk:
                    name = meta["path"].rsplit("/", 1)[-1]
                    if name.endswith(LANDED_SUFFIX):
                        markers[name.removesuffix(LANDED_SUFFIX)] = meta
                    elif len(name) == 64:
                        claims[name] = meta
        except NotFoundError:
            pass  # no claim was ever written
        except (BaseError, OSError) as error:
            raise TransientError(f"cannot list the claims under {self.root}: {error}") from error
        result = ClaimCollection()
        doomed: list[str] = []
        for digest, meta in sorted(claims.items()):
            age = now - meta["last_modified"]
            marker = markers.get(digest)
            size = meta["size"]
            if marker is not None:
                if age >= retention and now - marker["last_modified"] >= retention:
                    doomed += [meta["path"], marker["path"]]
                    result.deleted += 1
                    result.deleted_bytes += size
                else:
                    result.kept += 1
                    result.kept_bytes += size
            elif orphan_retention is not None and age >= orphan_retention:
                doomed.append(meta["path"])
                result.orphans_deleted += 1
                result.orphans_deleted_bytes += size
            else:
                result.orphans_kept += 1
                result.orphans_kept_bytes += size
                born = meta["last_modified"]
                result.oldest_orphan = born if result.oldest_orphan is None else min(result.oldest_orphan, born)
        for digest, marker in sorted(markers.items()):
            if digest not in claims:
                doomed.append(marker["path"])
                result.stray_markers += 1
        result.deleted_paths = doomed
        if not dry_run:
            for path in doomed:  # a claim before its marker: an interruption leaves a stray marker, never an orphan
                try:
                    obstore.delete(store, path)
                except (BaseError, OSError) as error:
                    raise TransientError(f"cannot delete {self.root}/{path}: {error}") from error
        logger.info(
            "claims collected" if not dry_run else "claims that collection would delete",
            extra={"claims_root": f"{self.root}/{CLAIMS_DIRECTORY}", "dry_run": dry_run, **result.log_fields(),
                   "retention_hours": retention.total_seconds() / 3600,
                   "orphan_retention_hours": None if orphan_retention is None else orphan_retention.total_seconds() / 3600},
        )
        if result.orphans_deleted:
            logger.warning(
                "deleted claims bronze never marked landed, older than the orphan retention",
                extra={"count": result.orphans_deleted, "bytes": result.orphans_deleted_bytes},
            )
        return result


__all__ = ["CLAIMS_DIRECTORY", "LANDED_SUFFIX", "ClaimCollection", "ClaimStore", "claim_path"]
