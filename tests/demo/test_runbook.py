"""docs/runbook.md's replay and re-snapshot commands, run as written against a live pipeline.

The blocks marked ``<!-- runbook-test: NAME -->`` are read from the runbook and executed
verbatim with bash, from a directory laid out like the repository (``.venv``,
``build/demo/demo.env``), against the demo's services on the suite's real Kafka broker and
MongoDB stand-in. After each, bronze must hold every event exactly once and exactly
MongoDB's documents, while Kafka received the re-published events: the writer dropped them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from demo_support import bronze_event_ids, demo_settings
from rich.console import Console

from data_generator.config import COLLECTIONS
from demo.observe import bronze_documents, bronze_rows, landing_state
from demo.processes import ManagedProcess
from demo.run import DemoRun
from local_stack.kafka import KafkaBroker
from local_stack.mongo import MongoStandIn
from local_stack.paths import PROJECT_ROOT

RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"
_BLOCK = re.compile(r"<!-- runbook-test: (?P<name>[\w-]+) -->\s*```bash\n(?P<body>.*?)```", re.DOTALL)


def runbook_blocks() -> dict[str, str]:
    return {match["name"]: match["body"] for match in _BLOCK.finditer(RUNBOOK.read_text())}


def test_the_runbook_marks_the_commands_this_test_runs() -> None:
    blocks = runbook_blocks()
    assert {"stop-cdc", "replay-from-bronze", "replay-from-time", "replay-from-token", "resnapshot"} <= set(blocks)
    assert "cdc-service replay --from-bronze" in blocks["replay-from-bronze"]


def _wait_for_bronze(
    run: DemoRun, mongo: dict[str, int], records_before: int, publisher: ManagedProcess, timeout: float = 180
) -> None:
    """Until Kafka received more records and bronze has landed all of them, holding MongoDB's documents;
    ``publisher`` (the runbook command publishing them) tells what it did when they do not arrive."""
    s = run.settings
    deadline = time.monotonic() + timeout
    confirmations = 0
    while time.monotonic() < deadline:
        assert publisher.poll() in (None, 0), f"{publisher.name} exited {publisher.poll()}:\n{publisher.tail(40)}"
        landing = landing_state({"bootstrap.servers": run.kafka_bootstrap}, s.lake_root, s.database, COLLECTIONS)
        grown = sum(landing.end_offsets.values()) > records_before
        if grown and landing.complete and bronze_documents(s.lake_root, s.database, COLLECTIONS) == mongo:
            confirmations += 1
            if confirmations >= 2:
                return
        else:
            confirmations = 0
        time.sleep(1)
    raise AssertionError(
        f"bronze did not catch up: {landing.unlanded} unlanded, documents {bronze_documents(s.lake_root, s.database, COLLECTIONS)}"
        f" != {mongo}; {publisher.name} says:\n{publisher.tail(40)}"
    )


def _assert_no_duplicates(run: DemoRun, mongo: dict[str, int]) -> None:
    for collection, ids in bronze_event_ids(run.settings.lake_root, run.settings.database).items():
        assert ids.n_unique() == ids.len(), f"duplicate events in bronze {collection}"
    assert bronze_documents(run.settings.lake_root, run.settings.database, COLLECTIONS) == mongo


@pytest.mark.timeout(600)
def test_runbook_replays_and_resnapshot_create_no_duplicates(
    kafka_broker: KafkaBroker, mongo_standin: MongoStandIn, run_dir: Path
) -> None:
    blocks = runbook_blocks()
    repository = run_dir / "runbook"  # laid out like the repository: .venv, build/demo/
    settings = demo_settings(
        repository / "build" / "demo",
        kafka_broker.bootstrap_servers,
        mongo_standin.uri,
        database="lakehouse_demo",  # the runbook's commands name it
        scale=0.03,
        duration_seconds=8.0,
    )
    run = DemoRun(settings, Console(width=140))
    commands: list[ManagedProcess] = []
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CDC_", "BRONZE_", "SPARK_JOBS_"))}

    def run_block(name: str) -> ManagedProcess:
        process = ManagedProcess(name, ["bash", "-c", blocks[name]], env, settings.logs_dir / f"runbook-{name}.log", repository)
        commands.append(process)
        return process

    def records() -> int:
        landing = landing_state({"bootstrap.servers": run.kafka_bootstrap}, settings.lake_root, settings.database, [])
        return sum(landing.end_offsets.values())

    try:
        run.prepare()
        (repository / ".venv").symlink_to(PROJECT_ROOT / ".venv")
        run.start_stack()
        run.load_dataset()
        run.start_services()
        run.wait_for_snapshot()
        generator = run.start_generator(duration=settings.duration_seconds)
        run.watch_live(generator, settings.duration_seconds)
        mongo = run.mongo_counts()
        run.wait_until_caught_up(mongo)

        # Stop cdc-service as the runbook says.
        service = run.processes.pop("cdc-service")
        assert run_block("stop-cdc").process.wait(30) == 0
        assert service.process.wait(60) == 0
        service.stop()

        for name in ("replay-from-bronze", "replay-from-time", "replay-from-token"):
            kafka_before, rows_before = records(), sum(bronze_rows(settings.lake_root, settings.database, COLLECTIONS).values())
            replay = run_block(name)
            if name == "replay-from-bronze":
                # The replay keeps streaming: changes made now arrive too.
                more = run.start_generator(duration=3.0)
                assert more.process.wait(60) == 0
                mongo = run.mongo_counts()
            _wait_for_bronze(run, mongo, kafka_before, replay)
            replay.signal(signal.SIGTERM)
            assert replay.process.wait(60) == 0, replay.tail()
            output = replay.log_file.read_text()
            assert "coll:lakehouse_demo.orders: " in output, output[-2000:]
            _assert_no_duplicates(run, mongo)
            kafka_growth = records() - kafka_before
            rows_growth = sum(bronze_rows(settings.lake_root, settings.database, COLLECTIONS).values()) - rows_before
            assert kafka_growth > 0
            if name != "replay-from-token":  # one stream from one partition's event: maybe nothing re-read
                assert kafka_growth > rows_growth, f"{name}: no re-delivery was dropped ({kafka_growth} vs {rows_growth})"

        # Re-snapshot one collection: its documents land again under new ids, then its
        # snapshot-complete marker; nothing doubles.
        rows_before = bronze_rows(settings.lake_root, settings.database, ["orders"])["orders"]
        kafka_before = records()
        snapshot = run_block("resnapshot")
        assert snapshot.process.wait(120) == 0, snapshot.tail()
        _wait_for_bronze(run, mongo, kafka_before, snapshot)
        _assert_no_duplicates(run, mongo)
        assert bronze_rows(settings.lake_root, settings.database, ["orders"])["orders"] == rows_before + mongo["orders"] + 1
    finally:
        for process in commands:
            process.stop(timeout=30)
        run.shutdown()
