"""The object-store vocabulary: which storage options are safe for concurrent commits, how they
become S3A properties for Spark, and the start probe against a real store and one that ignores
conditional writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lakehouse_common.errors import ConfigError
from lakehouse_common.object_store import (
    canonical_options,
    commit_safety_problem,
    probe_conditional_commits,
    s3a_properties,
    with_safe_commits,
)
from local_stack.object_store import ObjectStore

if TYPE_CHECKING:
    from conftest import UnconditionalStore

ROOT = "s3://bucket/lake"


def test_option_names_are_canonical_whatever_their_spelling() -> None:
    assert canonical_options({"endpoint": "http://x", "aws_region": "eu-west-1", "allow_http": "true"}) == {
        "AWS_ENDPOINT_URL": "http://x",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, "AWS_S3_ALLOW_UNSAFE_RENAME"),
        ({"allow_unsafe_rename": "1"}, "AWS_S3_ALLOW_UNSAFE_RENAME"),
        ({"AWS_CONDITIONAL_PUT": "disabled"}, "AWS_CONDITIONAL_PUT"),
        ({"conditional_put": "dynamo:delta_log"}, "AWS_CONDITIONAL_PUT"),
        ({"AWS_S3_LOCKING_PROVIDER": "dynamodb"}, "AWS_S3_LOCKING_PROVIDER"),
        ({"AWS_COPY_IF_NOT_EXISTS": "multipart"}, "AWS_COPY_IF_NOT_EXISTS"),
    ],
)
def test_options_that_allow_unsafe_commits_are_named(options: dict[str, str], named: str) -> None:
    problem = commit_safety_problem(ROOT, options)
    assert problem is not None and named in problem


def test_safe_options_and_local_lakes_pass() -> None:
    assert commit_safety_problem(ROOT, {}) is None
    assert commit_safety_problem(ROOT, {"AWS_CONDITIONAL_PUT": "etag", "AWS_S3_ALLOW_UNSAFE_RENAME": "false"}) is None
    assert commit_safety_problem("/data/lake", {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}) is None


def test_conditional_put_is_set_explicitly_for_s3_only() -> None:
    assert with_safe_commits(ROOT, {"AWS_REGION": "x"}) == {"AWS_REGION": "x", "AWS_CONDITIONAL_PUT": "etag"}
    assert with_safe_commits(ROOT, {"conditional_put": "etag"}) == {"conditional_put": "etag"}
    assert with_safe_commits("/data/lake", {}) == {}


def test_s3a_properties_follow_the_storage_options() -> None:
    properties = s3a_properties(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
        }
    )
    assert properties["fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert properties["fs.s3a.endpoint"] == "http://127.0.0.1:8333"
    assert properties["fs.s3a.connection.ssl.enabled"] == "false"
    assert properties["fs.s3a.path.style.access"] == "true"
    assert properties["fs.s3a.endpoint.region"] == "us-east-1"
    assert (properties["fs.s3a.access.key"], properties["fs.s3a.secret.key"]) == ("key", "secret")
    assert properties["fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    virtual = s3a_properties({"AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true", "AWS_SESSION_TOKEN": "t", "access_key_id": "k", "secret_access_key": "s"})
    assert virtual["fs.s3a.path.style.access"] == "false"
    assert virtual["fs.s3a.aws.credentials.provider"].endswith("TemporaryAWSCredentialsProvider")
    assert "fs.s3a.endpoint" not in virtual  # AWS itself: S3A's default endpoint resolution


def test_the_probe_passes_on_a_store_with_conditional_writes(object_store: ObjectStore) -> None:
    probe_conditional_commits(object_store.lake_root("probe"), object_store.storage_options(), "writer-0")


def test_the_probe_refuses_a_store_that_ignores_conditional_writes(store_ignoring_conditional_writes: UnconditionalStore) -> None:
    with pytest.raises(ConfigError, match="ignores conditional writes"):
        probe_conditional_commits("s3://lakehouse/probe", store_ignoring_conditional_writes.storage_options, "writer-0")
