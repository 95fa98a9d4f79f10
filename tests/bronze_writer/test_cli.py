"""``bronze-writer`` commands and configuration: status, compact, vacuum, validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from bronze_support import change_event, claim_records, land, open_table, read_bronze, records, storage_options, wait_until
from typer.testing import CliRunner

from bronze_writer.cli import app
from bronze_writer.lander import Lander
from bronze_writer.metrics import BronzeMetrics
from bronze_writer.settings import BronzeSettings
from lakehouse_common import lake
from lakehouse_common.contract import parse_claim_reference
from lakehouse_common.errors import ClaimNotFoundError, ConfigError
from lakehouse_common.settings import load_settings

TOPIC = "cdc.shop.orders"


@pytest.fixture
def landed_lake(lake_root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    root = lake_root
    monkeypatch.setenv("BRONZE_LAKE__ROOT", root)
    monkeypatch.setenv("BRONZE_LAKE__STORAGE_OPTIONS", json.dumps(storage_options(root)))
    lander = Lander(load_settings(BronzeSettings), BronzeMetrics())
    for batch in range(4):  # four commits, four small files
        events = [change_event(batch * 10 + n, {"_id": n}) for n in range(1, 11)]
        land(lander, records(events, topic=TOPIC, first_offset=batch * 10))
    return root


def test_status_shows_versions_offsets_and_last_event(landed_lake: str) -> None:
    result = CliRunner().invoke(app, ["status", "--no-kafka", "--json"])
    assert result.exit_code == 0, result.output
    [table] = json.loads(result.output)
    assert table["table"] == lake.bronze_table_uri(landed_lake, "shop", "orders")
    assert table["version"] == 4  # an empty create, then four commits
    assert table["partitions"] == [
        {"topic": TOPIC, "partition": 0, "landed_offset": 39, "last_event_id": f"{40:016x}", "high_watermark": None, "lag": None}
    ]
    text = CliRunner().invoke(app, ["status", "--no-kafka"])
    assert "offset 39" in text.output


def test_compact_then_vacuum(landed_lake: str) -> None:
    uri = lake.bronze_table_uri(landed_lake, "shop", "orders")
    assert len(open_table(uri).file_uris()) == 4
    result = CliRunner().invoke(app, ["compact", "--table", "shop.orders"])
    assert result.exit_code == 0, result.output
    assert "4 files -> 1" in result.output
    table = open_table(uri)
    assert len(table.file_uris()) == 1
    # Compaction carries no marks; the writer and cdc_service still find the last bronze commit's.
    assert lake.read_high_water_marks(uri, storage_options(uri))[f"{TOPIC}/0"].offset == 39
    assert table.transaction_version(f"{TOPIC}-0") == 39
    dry = CliRunner().invoke(app, ["vacuum", "--retention-hours", "0", "--dry-run"])
    assert "4 files would be removed" in dry.output
    done = CliRunner().invoke(app, ["vacuum", "--retention-hours", "0"])
    assert done.exit_code == 0 and "4 files removed" in done.output
    assert read_bronze(uri).height == 40


def test_invalid_configuration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRONZE_BATCH__MAX_ROWS", "0")
    monkeypatch.setenv("BRONZE_CONSUMER__TOPIC_TABLES", '{"orders-v2": "orders"}')
    with pytest.raises(ConfigError) as error:
        load_settings(BronzeSettings)
    assert "BRONZE_BATCH__MAX_ROWS" in str(error.value) and "BRONZE_CONSUMER__TOPIC_TABLES" in str(error.value)
    result = CliRunner().invoke(app, ["status", "--no-kafka"])
    assert result.exit_code == 2 and "BRONZE_BATCH__MAX_ROWS" in result.output


def test_yaml_configuration_and_secret_storage_options(tmp_path: Path) -> None:
    config = tmp_path / "bronze.yaml"
    config.write_text(
        "lake:\n  root: s3://bucket/lake\n  storage_options:\n    AWS_SECRET_ACCESS_KEY: hunter2\n"
        "batch:\n  max_rows: 1000\n"
    )
    settings = load_settings(BronzeSettings, config)
    assert settings.batch.max_rows == 1000
    # On S3, commits are conditional writes, whether or not the options say so.
    assert settings.lake.deltalake_options() == {"AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_CONDITIONAL_PUT": "etag"}
    assert "hunter2" not in repr(settings)


def test_the_default_pattern_takes_collection_topics_only() -> None:
    import re

    pattern = re.compile(BronzeSettings().consumer.topic_pattern)
    topics = ["cdc.shop.orders", "cdc.shop.order.items", "cdc.checkpoints", "cdc.dead-letters", "other.shop.orders"]
    assert [topic for topic in topics if pattern.match(topic)] == ["cdc.shop.orders", "cdc.shop.order.items"]


def test_scheduled_compaction_and_vacuum(landed_lake: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from bronze_writer.maintenance import Maintenance
    from bronze_writer.tables import BronzeTable

    monkeypatch.setenv("BRONZE_MAINTENANCE__COMPACT_INTERVAL_SECONDS", "0.01")
    monkeypatch.setenv("BRONZE_MAINTENANCE__VACUUM_INTERVAL_SECONDS", "0.01")
    monkeypatch.setenv("BRONZE_MAINTENANCE__VACUUM_RETENTION_HOURS", "0")
    settings = load_settings(BronzeSettings)
    metrics = BronzeMetrics()
    maintenance = Maintenance(settings, metrics)
    tables = [BronzeTable(settings.lake, "shop", "orders")]
    uri = tables[0].uri
    time.sleep(0.02)
    wait_until(lambda: (maintenance.run_due(tables), metrics.maintenance.labels("vacuum")._value.get() >= 1)[1], 30)
    maintenance.shutdown()
    assert metrics.maintenance.labels("compact")._value.get() >= 1
    assert len(open_table(uri).file_uris()) == 1
    if "://" not in uri:  # on a local lake, vacuum also left no file behind
        assert {path.name for path in Path(uri).glob("*.parquet")} == {Path(p).name for p in open_table(uri).file_uris()}
    assert read_bronze(uri).height == 40


def test_vacuum_collects_the_claims_bronze_landed_once_their_retention_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lake"
    monkeypatch.setenv("BRONZE_LAKE__ROOT", str(root))
    lander = Lander(load_settings(BronzeSettings), BronzeMetrics())
    landed = claim_records([change_event(1, {"_id": 1, "blob": "z" * 50_000})], lander.claims, topic=TOPIC)
    land(lander, landed)
    orphan = lander.claims.put(b"an event whose record never reached bronze")

    def claims_on_disk() -> int:
        return sum(1 for path in (root / "claims").rglob("*") if path.is_file() and len(path.name) == 64)

    kept = CliRunner().invoke(app, ["vacuum", "--claim-retention-hours", "1"])
    assert kept.exit_code == 0, kept.output
    assert "claims: 0 landed (0 bytes) and 0 orphans (0 bytes) deleted; 1 landed kept, 1 never marked landed kept" in kept.output
    assert CliRunner().invoke(app, ["vacuum", "--table", "shop.orders", "--claim-retention-hours", "0"]).output.count("claims") == 0
    dry = CliRunner().invoke(app, ["vacuum", "--claim-retention-hours", "0", "--dry-run"])
    assert "1 landed" in dry.output and "would be deleted" in dry.output and claims_on_disk() == 2

    done = CliRunner().invoke(app, ["vacuum", "--claim-retention-hours", "0"])
    assert done.exit_code == 0 and "claims: 1 landed" in done.output and claims_on_disk() == 1
    bronze = read_bronze(lake.bronze_table_uri(str(root), "shop", "orders"))
    assert bronze["blob"].to_list() == ["z" * 50_000]  # bronze holds the event; the claim is no longer needed

    monkeypatch.setenv("BRONZE_MAINTENANCE__ORPHAN_CLAIM_RETENTION_HOURS", "0")
    orphans = CliRunner().invoke(app, ["vacuum"])
    assert "and 1 orphans" in orphans.output and claims_on_disk() == 0
    with pytest.raises(ClaimNotFoundError):
        lander.claims.get(orphan)


def test_scheduled_vacuum_collects_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bronze_writer.maintenance import Maintenance

    monkeypatch.setenv("BRONZE_LAKE__ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("BRONZE_MAINTENANCE__VACUUM_INTERVAL_SECONDS", "0.01")
    monkeypatch.setenv("BRONZE_MAINTENANCE__CLAIM_RETENTION_HOURS", "0")
    settings = load_settings(BronzeSettings)
    metrics = BronzeMetrics()
    lander = Lander(settings, metrics)
    batch = claim_records([change_event(1, {"_id": 1, "blob": "z" * 50_000})], lander.claims, topic=TOPIC)
    land(lander, batch)
    reference = parse_claim_reference(batch[0].value())
    maintenance = Maintenance(settings, metrics)
    time.sleep(0.02)
    wait_until(lambda: (maintenance.run_due(lander.tables()), metrics.maintenance.labels("claims")._value.get() >= 1)[1], 30)
    maintenance.shutdown()
    with pytest.raises(ClaimNotFoundError):
        lander.claims.get(reference)
