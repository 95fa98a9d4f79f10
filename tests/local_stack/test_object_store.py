"""The local stack's object store is a real S3 server that implements what Delta commits rely on:
put-if-absent (If-None-Match: *) with exactly one winner under contention, and signed access only."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid

import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import S3Store

from local_stack.object_store import DEFAULT_BUCKET, ObjectStore

RACERS = 12
ROUNDS = 8


def _store(object_store: ObjectStore) -> S3Store:
    options = object_store.storage_options()
    return S3Store.from_url(
        f"s3://{DEFAULT_BUCKET}/put-if-absent",
        config={name: options[name] for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        client_options={"allow_http": True},
    )


def test_a_conditional_create_of_an_existing_object_is_refused(object_store: ObjectStore) -> None:
    store = _store(object_store)
    key = uuid.uuid4().hex
    obstore.put(store, key, b"first", mode="create")
    with pytest.raises((AlreadyExistsError, PreconditionError)):
        obstore.put(store, key, b"second", mode="create")
    assert bytes(obstore.get(store, key).bytes()) == b"first"
    obstore.put(store, key, b"overwrite")  # a plain PUT still overwrites: only the conditional one is refused
    assert bytes(obstore.get(store, key).bytes()) == b"overwrite"


def test_racing_conditional_creates_have_exactly_one_winner(object_store: ObjectStore) -> None:
    store = _store(object_store)
    for _round in range(ROUNDS):
        key = uuid.uuid4().hex
        start = threading.Barrier(RACERS)
        winners: list[int] = []
        refused: list[int] = []

        def race(racer: int, key: str = key, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                obstore.put(store, key, f"racer-{racer}".encode(), mode="create")
                winners.append(racer)
            except (AlreadyExistsError, PreconditionError):
                refused.append(racer)

        threads = [threading.Thread(target=race, args=(racer,)) for racer in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(winners) == 1 and len(refused) == RACERS - 1, (winners, refused)
        assert bytes(obstore.get(store, key).bytes()) == f"racer-{winners[0]}".encode()


def test_unsigned_requests_are_refused(object_store: ObjectStore) -> None:
    request = urllib.request.Request(f"{object_store.endpoint_url}/{DEFAULT_BUCKET}/anonymous", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
