"""Configuration: env vars and YAML, validated at start with errors naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc_service.settings import CdcSettings, DeliveryMode, FullDocumentMode, StreamLayout
from lakehouse_common import settings as lakehouse_settings
from lakehouse_common.contract import ValueFormat
from lakehouse_common.errors import ConfigError
from lakehouse_common.settings import load_settings


def test_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cdc.yaml"
    config.write_text(
        "mongo_uri: mongodb://app:s3cret@db:27017/?replicaSet=rs0\n"
        "scope:\n  include_databases: [shop, '/crm_.*/']\n  exclude_collections: [shop.audit]\n"
        "stream:\n  full_document: whenAvailable\n  pipeline:\n    - {$project: {fullDocument.secret: 0}}\n"
        "producer:\n  value_format: bson\n  delivery: exactly_once\n"
        "topics:\n  mapping: {shop.orders: sales.orders}\n"
    )
    monkeypatch.setenv("CDC_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("CDC_STREAM__LAYOUT", "database")
    settings = load_settings(CdcSettings, config)

    assert settings.kafka.bootstrap_servers == "broker:9092"
    assert settings.stream.layout is StreamLayout.DATABASE
    assert settings.stream.full_document is FullDocumentMode.WHEN_AVAILABLE
    assert settings.producer.value_format is ValueFormat.BSON and settings.producer.delivery is DeliveryMode.EXACTLY_ONCE
    assert settings.exactly_once and settings.transactional_id == "cdc-cdc"
    assert "s3cret" not in repr(settings)  # the connection string is a secret
    assert settings.mongo_uri.get_secret_value().startswith("mongodb://app:s3cret@")


def test_defaults_suit_a_lakehouse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    settings = load_settings(CdcSettings)
    assert settings.stream.full_document is FullDocumentMode.UPDATE_LOOKUP  # silver wants current state
    assert settings.producer.delivery is DeliveryMode.AT_LEAST_ONCE
    assert settings.topics.max_message_bytes > 16 * 1024 * 1024  # a 16 MB document fits
    assert settings.stream.split_large_events


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CDC_STREAM__FULL_DOCUMENT", "always", "CDC_STREAM__FULL_DOCUMENT"),
        ("CDC_SCOPE__INCLUDE_DATABASES", '["/([/"]', "invalid regular expression"),
        ("CDC_TOPICS__MAPPING", '{"a.x": "t", "a.y": "t"}', "one topic per collection"),
        ("CDC_STREAM__PIPELINE", '[{"$changeStreamSplitLargeEvent": {}}]', "split_large_events"),
        ("CDC_NAME", "bad name", "CDC_NAME"),
        ("CDC_PRODUCER__DELIVERY", "maybe_once", "CDC_PRODUCER__DELIVERY"),
    ],
)
def test_bad_configuration_fails_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_settings(CdcSettings)


def test_the_mongo_uri_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDC_MONGO_URI", raising=False)
    with pytest.raises(ConfigError, match="CDC_MONGO_URI"):
        load_settings(CdcSettings)


@pytest.mark.parametrize(
    "stage",
    [
        {"$project": {"_id": 0}},
        {"$project": {"_id": False, "fullDocument": 1}},
        {"$project": {"_id": "$documentKey"}},
        {"$project": {"_id._data": 1}},
        {"$project": {"_id": {"_data": 1}}},
        {"$project": {"operationType": 1, "fullDocument": 1, "_id": 0}},
        {"$addFields": {"_id": "$documentKey"}},
        {"$set": {"_id.extra": 1}},
        {"$unset": "_id"},
        {"$unset": ["fullDocument.secret", "_id._data"]},
        {"$replaceRoot": {"newRoot": "$fullDocument"}},
        {"$replaceWith": "$fullDocument"},
        {"$redact": "$$PRUNE"},
        {"$group": {"_id": "$ns"}},
    ],
)
def test_pipeline_stages_that_change_the_resume_token_are_refused_when_the_settings_load(
    monkeypatch: pytest.MonkeyPatch, stage: dict
) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_STREAM__PIPELINE", json.dumps([{"$match": {"operationType": "insert"}}, stage]))
    with pytest.raises(ConfigError, match=r"CDC_STREAM__PIPELINE.*_id"):
        load_settings(CdcSettings)


@pytest.mark.parametrize(
    "stage",
    [
        {"$match": {"operationType": {"$in": ["insert", "update"]}, "fullDocument.status": "paid"}},
        {"$project": {"fullDocument.secret": 0}},
        {"$project": {"_id": 1, "operationType": 1, "ns": 1, "documentKey": 1, "fullDocument": 1}},
        {"$project": {"operationType": 1, "ns": 1, "documentKey": 1}},
        {"$addFields": {"fullDocument.masked": True}},
        {"$set": {"extra": "$fullDocument.x"}},
        {"$unset": ["fullDocument.card", "fullDocumentBeforeChange"]},
    ],
)
def test_pipeline_stages_that_keep_the_resume_token_are_accepted(monkeypatch: pytest.MonkeyPatch, stage: dict) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_STREAM__PIPELINE", json.dumps([stage]))
    assert load_settings(CdcSettings).stream.pipeline == [stage]


@pytest.fixture
def fresh_deprecation_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each former name warns once per process: forget the names earlier tests used."""
    monkeypatch.setattr(lakehouse_settings, "_warned_renames", set())


@pytest.mark.usefixtures("fresh_deprecation_warnings")
def test_former_duration_names_still_work_and_warn_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``_s`` durations became ``_seconds``: the old variables, YAML keys and arguments keep working."""
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_RETRY_MAX_BACKOFF_S", "4")  # top level: not a field, so not read by the env source
    monkeypatch.setenv("CDC_STREAM__IDLE_POLL_INTERVAL_S", "0.7")  # a section's
    config = tmp_path / "cdc.yaml"
    config.write_text("checkpoint_interval_s: 2.5\nsnapshot:\n  progress_log_interval_s: 3\n")
    with caplog.at_level("WARNING", logger="lakehouse_common.settings"), pytest.warns(DeprecationWarning) as caught:
        settings = load_settings(CdcSettings, config, heartbeat_interval_s=7)
        again = load_settings(CdcSettings, config, heartbeat_interval_s=7)

    assert settings == again
    assert settings.retry_max_backoff_seconds == 4.0
    assert settings.stream.idle_poll_interval_seconds == 0.7
    assert settings.checkpoint_interval_seconds == 2.5
    assert settings.snapshot.progress_log_interval_seconds == 3.0
    assert settings.heartbeat_interval_seconds == 7.0
    former = [
        "retry_max_backoff_s",
        "idle_poll_interval_s",
        "checkpoint_interval_s",
        "progress_log_interval_s",
        "heartbeat_interval_s",
    ]
    for name in former:  # once each, though the settings loaded twice
        assert sum(f"'{name}'" in str(warning.message) for warning in caught) == 1, name
        assert sum(f"'{name}'" in record.getMessage() for record in caplog.records) == 1, name
    assert any("CDC_RETRY_MAX_BACKOFF_SECONDS" in record.getMessage() for record in caplog.records)


@pytest.mark.usefixtures("fresh_deprecation_warnings")
def test_the_current_duration_name_wins_over_the_former(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_RETRY_MAX_BACKOFF_S", "4")
    monkeypatch.setenv("CDC_RETRY_MAX_BACKOFF_SECONDS", "6")
    with pytest.warns(DeprecationWarning, match="retry_max_backoff_s"):
        settings = load_settings(CdcSettings)
    assert settings.retry_max_backoff_seconds == 6.0


def test_current_duration_names_do_not_warn(monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder) -> None:
    monkeypatch.setenv("CDC_MONGO_URI", "mongodb://localhost")
    monkeypatch.setenv("CDC_RETRY_MAX_BACKOFF_SECONDS", "6")
    monkeypatch.setenv("CDC_STREAM__IDLE_POLL_INTERVAL_SECONDS", "0.5")
    settings = load_settings(CdcSettings)
    assert (settings.retry_max_backoff_seconds, settings.stream.idle_poll_interval_seconds) == (6.0, 0.5)
    assert not [warning for warning in recwarn if issubclass(warning.category, DeprecationWarning)]
