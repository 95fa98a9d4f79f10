"""The lake on an S3-compatible object store: one vocabulary for every layer, and safe commits.

Every component is configured with deltalake's storage options (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ALLOW_HTTP``,
``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``, ...; keys are case-insensitive). bronze_writer and
cdc_service hand them to deltalake; spark_jobs translates them into Hadoop S3A properties
(``s3a_properties``), so Spark reads and writes the same ``s3://`` URIs.

**Safe concurrent commits.** A Delta commit is the creation of ``_delta_log/<version>.json``;
two writers racing for one version must see exactly one of them win. On S3 that is a
conditional write, ``PUT`` with ``If-None-Match: *`` (put-if-absent), which deltalake issues
when ``AWS_CONDITIONAL_PUT`` is ``etag``. ``with_safe_commits`` sets it explicitly, so a
library default can never turn it off. ``commit_safety_problem`` refuses the options that
ask for anything else: unsafe rename allowed, conditional put off (deltalake 1.6 then
fails every commit), a locking provider or copy-if-not-exists (deltalake 1.x ignores
both: conditional put replaced them). A store can also accept the header and ignore it:
``probe_conditional_commits`` creates one object twice and fails unless the store
refused the second.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lakehouse_common.errors import ConfigError, TransientError

if TYPE_CHECKING:
    from pyarrow import fs as pafs

logger = logging.getLogger(__name__)

S3_SCHEMES = ("s3://", "s3a://")
# S3A properties that carry credentials: kept out of command lines and logs.
S3A_SECRET_PROPERTIES = ("fs.s3a.access.key", "fs.s3a.secret.key", "fs.s3a.session.token")
PROBE_DIRECTORY = "_lakehouse/commit_probe"

# Canonical option names, and the other spellings deltalake (object_store) accepts for them.
_ALIASES = {
    "AWS_ENDPOINT_URL": ("AWS_ENDPOINT", "ENDPOINT", "ENDPOINT_URL"),
    "AWS_REGION": ("AWS_DEFAULT_REGION", "REGION", "DEFAULT_REGION"),
    "AWS_ACCESS_KEY_ID": ("ACCESS_KEY_ID",),
    "AWS_SECRET_ACCESS_KEY": ("SECRET_ACCESS_KEY",),
    "AWS_SESSION_TOKEN": ("AWS_TOKEN", "SESSION_TOKEN", "TOKEN"),
    "AWS_ALLOW_HTTP": ("ALLOW_HTTP",),
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": ("VIRTUAL_HOSTED_STYLE_REQUEST",),
    "AWS_CONDITIONAL_PUT": ("CONDITIONAL_PUT",),
    "AWS_S3_ALLOW_UNSAFE_RENAME": ("ALLOW_UNSAFE_RENAME",),
    "AWS_S3_LOCKING_PROVIDER": ("LOCKING_PROVIDER",),
    "AWS_COPY_IF_NOT_EXISTS": ("COPY_IF_NOT_EXISTS",),
}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in (name, *aliases)}
_TRUE = {"1", "true", "yes", "on"}
# The options object_store itself reads (deltalake's own, such as unsafe rename, it does not).
_OBJECT_STORE_KEYS = frozenset(
    {
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_CONDITIONAL_PUT",
    }
)


def is_s3(uri: str) -> bool:
    """Whether a lake root (or table URI) is on an S3-compatible store."""
    return uri.lower().startswith(S3_SCHEMES)


def canonical_options(options: Mapping[str, str]) -> dict[str, str]:
    """Storage options with upper-case canonical keys (``endpoint`` -> ``AWS_ENDPOINT_URL``)."""
    return {_CANONICAL.get(key.upper(), key.upper()): value for key, value in options.items()}


def commit_safety_problem(root: str, options: Mapping[str, str]) -> str | None:
    """Why these options would let one writer's commit overwrite another's; None when safe."""
    if not is_s3(root):
        return None
    given = canonical_options(options)
    remedy = "remove it: bronze commits need conditional writes (AWS_CONDITIONAL_PUT=etag, the default here)"
    if given.get("AWS_S3_ALLOW_UNSAFE_RENAME", "").strip().lower() in _TRUE:
        return (
            "AWS_S3_ALLOW_UNSAFE_RENAME is set: with it, concurrent writers (several bronze-writer replicas, "
            f"compaction jobs) overwrite each other's commits and lose data; {remedy}"
        )
    conditional = given.get("AWS_CONDITIONAL_PUT")
    if conditional is not None and conditional.strip().lower() != "etag":
        return f"AWS_CONDITIONAL_PUT={conditional!r}: commits would not be put-if-absent; {remedy}"
    for name in ("AWS_S3_LOCKING_PROVIDER", "AWS_COPY_IF_NOT_EXISTS"):
        if name in given:
            return f"{name} is set, but deltalake 1.x commits to S3 with conditional writes only; {remedy}"
    return None


def with_safe_commits(root: str, options: Mapping[str, str]) -> dict[str, str]:
    """The options as deltalake should get them: conditional put explicitly on for S3 roots."""
    result = dict(options)
    if is_s3(root) and "AWS_CONDITIONAL_PUT" not in canonical_options(options):
        result["AWS_CONDITIONAL_PUT"] = "etag"
    return result


def s3a_properties(options: Mapping[str, str]) -> dict[str, str]:
    """Hadoop S3A properties (without ``spark.hadoop.``) for the same store and credentials.

    ``s3://`` is mapped to S3A too, so Spark addresses tables by the URIs deltalake wrote.
    Path-style addressing unless ``AWS_VIRTUAL_HOSTED_STYLE_REQUEST`` is true, as in deltalake.
    """
    given = canonical_options(options)
    properties = {
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "fs.s3a.path.style.access": str(given.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() not in _TRUE).lower(),
    }
    endpoint = given.get("AWS_ENDPOINT_URL")
    if endpoint:
        properties["fs.s3a.endpoint"] = endpoint
        properties["fs.s3a.connection.ssl.enabled"] = str(endpoint.lower().startswith("https://")).lower()
    if given.get("AWS_REGION"):
        properties["fs.s3a.endpoint.region"] = given["AWS_REGION"]
    if given.get("AWS_ACCESS_KEY_ID") and given.get("AWS_SECRET_ACCESS_KEY"):
        properties["fs.s3a.access.key"] = given["AWS_ACCESS_KEY_ID"]
        properties["fs.s3a.secret.key"] = given["AWS_SECRET_ACCESS_KEY"]
        if given.get("AWS_SESSION_TOKEN"):
            properties["fs.s3a.session.token"] = given["AWS_SESSION_TOKEN"]
            properties["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        else:
            properties["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    return properties


def arrow_filesystem(root: str, options: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system for listing the lake, and the root's path on it."""
    from pyarrow import fs

    if not is_s3(root):
        return fs.LocalFileSystem(), root.removeprefix("file://")
    given = canonical_options(options)
    endpoint = given.get("AWS_ENDPOINT_URL", "")
    scheme, _, address = endpoint.rpartition("://")
    filesystem = fs.S3FileSystem(
        access_key=given.get("AWS_ACCESS_KEY_ID"),
        secret_key=given.get("AWS_SECRET_ACCESS_KEY"),
        session_token=given.get("AWS_SESSION_TOKEN"),
        region=given.get("AWS_REGION"),
        endpoint_override=address or None,
        scheme=scheme or "https",
        force_virtual_addressing=given.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() in _TRUE,
    )
    return filesystem, root.split("://", 1)[1]


def probe_conditional_commits(root: str, options: Mapping[str, str], writer: str) -> None:
    """Raise ``ConfigError`` unless the store refuses to create an object that already exists.

    The same put-if-absent a Delta commit is (object_store's ``PutMode::Create``, as
    deltalake sends it: ``If-None-Match: *``), twice on one probe object under
    ``<root>/_lakehouse/commit_probe/``; the second must fail. deltalake lists the log
    before it writes, so only writers racing within one commit would ever find out
    otherwise, by losing a commit. Other storage errors raise ``TransientError``.
    """
    if not is_s3(root):
        return
    import obstore
    from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
    from obstore.store import S3Store

    from lakehouse_common.lake import path_segment

    given = canonical_options(with_safe_commits(root, options))
    config = {name: value for name, value in given.items() if name in _OBJECT_STORE_KEYS}
    allow_http = given.get("AWS_ALLOW_HTTP", "").strip().lower() in _TRUE
    key = f"{PROBE_DIRECTORY}/{path_segment(writer)}-{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        store = S3Store.from_url(root, config=config, client_options={"allow_http": allow_http})  # type: ignore[arg-type]
        obstore.put(store, key, f"{writer} {datetime.now(UTC).isoformat()}".encode(), mode="create")
        try:
            obstore.put(store, key, b"second", mode="create")
        except (AlreadyExistsError, PreconditionError):
            logger.info(
                "the object store refuses to overwrite on a conditional create: concurrent commits are safe",
                extra={"probe": f"{root.rstrip('/')}/{key}", "seconds": round(time.monotonic() - started, 3)},
            )
            return
        finally:
            obstore.delete(store, key)
    except BaseError as error:
        raise TransientError(f"could not probe the object store behind {root}: {error}") from error
    raise ConfigError(
        f"the object store behind {root} overwrote an existing object on a conditional create (If-None-Match: *): "
        "it ignores conditional writes, so concurrent writers (replicas, compaction) would overwrite each other's "
        "Delta commits and lose data. Use a store that honours them (AWS S3, SeaweedFS, MinIO, Cloudflare R2)"
    )


__all__ = [
    "PROBE_DIRECTORY",
    "S3A_SECRET_PROPERTIES",
    "S3_SCHEMES",
    "arrow_filesystem",
    "canonical_options",
    "commit_safety_problem",
    "is_s3",
    "probe_conditional_commits",
    "s3a_properties",
    "with_safe_commits",
]
