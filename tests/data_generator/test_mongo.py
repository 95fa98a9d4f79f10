"""The generator drives MongoDB: what MongoDB holds afterwards is the generator's state."""

from __future__ import annotations

import threading
import time

import pymongo

from data_generator import COLLECTIONS, GeneratorConfig, MongoWriter, SalesMarketingGenerator

CONFIG = GeneratorConfig(seed=11, scale=0.05, history_days=10, drift_every=100)


def _by_id(documents: list[dict]) -> dict:
    return {document["_id"]: document for document in documents}


def test_load_and_changes_leave_mongodb_equal_to_the_generator_state(mongo_database: pymongo.database.Database) -> None:
    writer = MongoWriter(mongo_database, batch_size=50)
    generator = SalesMarketingGenerator(CONFIG)
    reported: list[tuple[int, int | None]] = []
    loaded = writer.load(generator, progress=lambda done, total: reported.append((done, total)))
    assert loaded == sum(generator.document_counts().values())
    assert reported[-1] == (loaded, loaded) and len(reported) > 1, "progress is reported per batch"
    assert writer.run(generator, limit=600) >= 600
    assert generator.drift_level == 4
    assert writer.counts() == generator.document_counts()
    stored = writer.documents()
    for name in COLLECTIONS:
        assert _by_id(stored[name]) == generator.state[name], f"{name} differs from the generator's state"


def test_run_is_paced_and_stops_on_request(mongo_database: pymongo.database.Database) -> None:
    writer = MongoWriter(mongo_database, batch_size=50)
    generator = SalesMarketingGenerator(CONFIG)
    writer.load(generator)
    started = time.monotonic()
    assert writer.run(generator, rate_per_second=40, limit=20) >= 20
    assert time.monotonic() - started >= 0.4, "20 changes at 40/s take about half a second"
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    written = writer.run(generator, rate_per_second=20, stop=stop)
    assert 0 < written < 60
    assert writer.counts() == generator.document_counts()


def test_a_resumed_generator_continues_the_database(mongo_database: pymongo.database.Database) -> None:
    writer = MongoWriter(mongo_database)
    assert writer.resume_generator(CONFIG) is None
    first = SalesMarketingGenerator(CONFIG)
    writer.load(first)
    writer.run(first, limit=150)
    resumed = writer.resume_generator(CONFIG)
    assert resumed is not None and resumed.document_counts() == writer.counts()
    writer.run(resumed, limit=300)
    assert writer.counts() == resumed.document_counts()
    assert _by_id(writer.documents()["orders"]) == resumed.state["orders"]
