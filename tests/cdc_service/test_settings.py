"""Configuration: env vars and YAML, validated at start with errors naming the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc_service.settings import CdcSettings, DeliveryMode, FullDocumentMode, StreamLayout
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
