"""The claim store: content-addressed, verified on read, collected only when no record can need a claim."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse_common import contract
from lakehouse_common.claims import LANDED_SUFFIX, ClaimStore, claim_path
from lakehouse_common.contract import ClaimReference
from lakehouse_common.errors import (
    ClaimCorruptError,
    ClaimNotFoundError,
    ConfigError,
    TransientError,
    UndecodableEventError,
)

EVENT = b'{"_id":{"_data":"0001"},"operationType":"insert","fullDocument":{"blob":"' + b"x" * 100_000 + b'"}}'
HOUR = timedelta(hours=1)


@pytest.fixture
def store(tmp_path: Path) -> ClaimStore:
    return ClaimStore(str(tmp_path / "lake"))


def test_a_claim_is_stored_under_its_sha256_and_read_back_verified(store: ClaimStore, tmp_path: Path) -> None:
    reference = store.put(EVENT)
    digest = hashlib.sha256(EVENT).hexdigest()
    assert reference == ClaimReference(digest, len(EVENT))
    assert claim_path(digest) == f"claims/sha256/{digest[:2]}/{digest}"
    assert (tmp_path / "lake" / claim_path(digest)).read_bytes() == EVENT
    assert store.put(EVENT) == reference  # idempotent: the same bytes, the same object
    assert store.get(reference) == EVENT
    assert [path.name for path in (tmp_path / "lake").rglob("*") if path.is_file()] == [digest]  # no temporary left


def test_a_missing_claim_is_a_contract_error_naming_where_it_looked(store: ClaimStore) -> None:
    reference = ClaimReference.of(EVENT)
    with pytest.raises(ClaimNotFoundError, match=reference.digest):
        store.get(reference)


def test_a_claim_whose_bytes_do_not_match_its_address_is_refused(store: ClaimStore, tmp_path: Path) -> None:
    reference = store.put(EVENT)
    file = tmp_path / "lake" / claim_path(reference.digest)
    file.write_bytes(EVENT.replace(b"xxxx", b"yyyy", 1))  # same size, other bytes
    with pytest.raises(ClaimCorruptError, match="SHA-256"):
        store.get(reference)
    file.write_bytes(EVENT[:-1])
    with pytest.raises(ClaimCorruptError, match=f"holds {len(EVENT) - 1} bytes"):
        store.get(reference)


def test_a_store_that_cannot_take_a_claim_raises_a_transient_error(tmp_path: Path) -> None:
    blocker = tmp_path / "lake"
    store = ClaimStore(str(blocker))
    blocker.mkdir()
    (blocker / "claims").write_text("a file where the claims directory should be")
    with pytest.raises(TransientError, match="cannot store claim"):
        store.put(EVENT)


def test_reference_values_round_trip_and_nothing_else_parses_as_one() -> None:
    reference = ClaimReference.of(EVENT)
    assert contract.parse_claim_reference(contract.claim_record_value(reference)) == reference
    digest = reference.digest
    for value in [
        None,
        b"not json",
        EVENT,  # an event is not a reference
        b'{"lakehouse.claim":{"sha256":"../../etc/passwd","bytes":5}}',  # the digest becomes an object name
        b'{"lakehouse.claim":{"sha256":"%s","bytes":5}}' % digest.upper().encode(),
        b'{"lakehouse.claim":{"sha256":"%s","bytes":0}}' % digest.encode(),
        b'{"lakehouse.claim":{"sha256":"%s","bytes":true}}' % digest.encode(),
        b'{"lakehouse.claim":{"sha256":"%s","bytes":%d}}' % (digest.encode(), contract.MAX_CLAIM_BYTES + 1),
        b'{"lakehouse.claim":{"md5":"%s","bytes":5}}' % digest.encode(),
        b'["lakehouse.claim"]',
    ]:
        with pytest.raises(UndecodableEventError):
            contract.parse_claim_reference(value)
    with pytest.raises(UndecodableEventError, match="unknown algorithm"):
        contract.parse_claim_reference(contract.claim_record_value(reference), b"md5")


def _age(store_root: Path, path: str, by: timedelta) -> None:
    """Make an object look older (local files: their modification time is what object_store lists)."""
    file = store_root / path
    stamp = file.stat().st_mtime - by.total_seconds()
    os.utime(file, (stamp, stamp))


def test_collection_deletes_landed_claims_after_the_retention_and_keeps_everything_else(
    store: ClaimStore, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    landed_old = store.put(b"landed long ago")
    landed_recent = store.put(b"landed just now")
    orphan = store.put(b"never landed")
    store.mark_landed([landed_old.digest, landed_recent.digest], {"writer": "test"})
    for path in (claim_path(landed_old.digest), claim_path(landed_old.digest) + LANDED_SUFFIX, claim_path(orphan.digest)):
        _age(root, path, 48 * HOUR)
    _age(root, claim_path(landed_recent.digest), 48 * HOUR)  # the claim is old, but bronze landed it only now

    dry = store.collect(24 * HOUR, dry_run=True)
    assert (dry.deleted, dry.kept, dry.orphans_kept) == (1, 1, 1)
    assert store.get(landed_old) == b"landed long ago"  # a dry run deletes nothing

    result = store.collect(24 * HOUR)
    assert (result.deleted, result.deleted_bytes, result.kept, result.orphans_kept, result.orphans_deleted) == (
        1, len(b"landed long ago"), 1, 1, 0)
    assert result.oldest_orphan is not None and result.oldest_orphan < datetime.now(UTC) - 47 * HOUR
    with pytest.raises(ClaimNotFoundError):
        store.get(landed_old)
    assert not (root / (claim_path(landed_old.digest) + LANDED_SUFFIX)).exists()
    assert store.get(landed_recent) == b"landed just now" and store.get(orphan) == b"never landed"

    later = store.collect(24 * HOUR, orphan_retention=72 * HOUR)
    assert (later.deleted, later.orphans_deleted, later.orphans_kept) == (0, 0, 1)  # younger than the orphan retention
    last = store.collect(24 * HOUR, orphan_retention=24 * HOUR)
    assert (last.orphans_deleted, last.orphans_deleted_bytes) == (1, len(b"never landed"))
    with pytest.raises(ClaimNotFoundError):
        store.get(orphan)


def test_a_claim_written_again_is_not_collected_under_its_new_record(store: ClaimStore, tmp_path: Path) -> None:
    """An event republished after a restart rewrites its claim, which restarts the retention."""
    root = tmp_path / "lake"
    reference = store.put(EVENT)
    store.mark_landed([reference.digest])
    _age(root, claim_path(reference.digest), 48 * HOUR)
    _age(root, claim_path(reference.digest) + LANDED_SUFFIX, 48 * HOUR)
    store.put(EVENT)  # republished: a new record references it again
    assert store.collect(24 * HOUR).kept == 1
    assert store.get(reference) == EVENT


def test_a_marker_left_without_its_claim_is_removed(store: ClaimStore, tmp_path: Path) -> None:
    reference = store.put(EVENT)
    store.mark_landed([reference.digest])
    (tmp_path / "lake" / claim_path(reference.digest)).unlink()  # a collection interrupted between its two deletes
    result = store.collect(24 * HOUR)
    assert result.stray_markers == 1
    assert not (tmp_path / "lake" / (claim_path(reference.digest) + LANDED_SUFFIX)).exists()


def test_collecting_an_empty_lake_finds_nothing(store: ClaimStore) -> None:
    result = store.collect(timedelta(0), orphan_retention=timedelta(0))
    assert (result.deleted, result.kept, result.orphans_kept, result.orphans_deleted) == (0, 0, 0, 0)


def test_object_store_roots_take_deltalakes_storage_options_without_any_request() -> None:
    options = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",  # an HTTP client option for object_store, a storage option for deltalake
        "AWS_S3_ALLOW_UNSAFE_RENAME": "false",  # deltalake's own
        "AWS_CONDITIONAL_PUT": "etag",
    }
    store = ClaimStore("s3://bucket/lake/", options)
    assert store.uri("ab" * 32) == f"s3://bucket/lake/claims/sha256/ab/{'ab' * 32}"
    store._open()  # noqa: SLF001 - the client is made at first use; making it sends nothing
    with pytest.raises(ConfigError, match="not valid"):
        ClaimStore("s3://bucket/lake", {"AWS_NO_SUCH_OPTION": "1"}).put(EVENT)
    with pytest.raises(ConfigError, match="cannot open the claim store"):
        ClaimStore("ftp://host/lake").put(EVENT)
    ClaimStore("gs://bucket/lake")  # other object stores open when first used: a lake without claims never does
