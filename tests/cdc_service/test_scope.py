"""Scope: include/exclude lists of exact names and regexes, streams and their ids, layout detection."""

from __future__ import annotations

import pytest

from cdc_service.scope import NamespaceFilter, StreamSpec, choose_layout
from cdc_service.settings import ScopeSettings, StreamLayout


def test_whole_deployment_except_internal_databases_and_system_collections() -> None:
    scope = NamespaceFilter(ScopeSettings())
    assert scope.collection_in_scope("shop", "orders")
    assert not scope.database_in_scope("admin") and not scope.database_in_scope("local") and not scope.database_in_scope("config")
    assert not scope.collection_in_scope("shop", "system.views")
    assert scope.explicit_databases() is None


def test_include_and_exclude_with_exact_names_and_regexes() -> None:
    scope = NamespaceFilter(
        ScopeSettings(
            include_databases=["shop", "/crm_.*/"],
            exclude_databases=["crm_archive"],
            exclude_collections=["shop.audit", r"/.*\.tmp_.*/"],
        )
    )
    assert scope.collection_in_scope("shop", "orders")
    assert scope.collection_in_scope("crm_eu", "leads")
    assert not scope.collection_in_scope("crm_archive", "leads")
    assert not scope.collection_in_scope("shop", "audit")
    assert not scope.collection_in_scope("crm_eu", "tmp_import")
    assert not scope.collection_in_scope("crm", "leads")  # regexes match the whole name
    assert not scope.collection_in_scope("other", "x")


def test_collections_only() -> None:
    scope = NamespaceFilter(ScopeSettings(include_collections=["shop.orders", "shop.customers"]))
    assert scope.collection_in_scope("shop", "orders") and not scope.collection_in_scope("shop", "audit")
    assert scope.database_in_scope("shop") and not scope.database_in_scope("crm")
    assert scope.explicit_databases() == ["shop"]


def test_the_match_stage_keeps_invalidate_and_database_events() -> None:
    stage = NamespaceFilter(ScopeSettings(include_databases=["shop"], exclude_collections=["shop.audit"])).match_stage()
    conditions = stage["$match"]["$or"]
    assert {"operationType": "invalidate"} in conditions
    text = repr(stage)
    assert "'ns.coll': {'$exists': False}" in text  # dropDatabase has no collection
    assert "shop.audit" in text and "'shop'" in text


@pytest.mark.parametrize("stream_id", ["deployment", "db:shop", "coll:shop.orders.2024"])
def test_stream_ids_round_trip(stream_id: str) -> None:
    assert StreamSpec.parse(stream_id).stream_id == stream_id


def test_stream_coverage() -> None:
    assert StreamSpec(StreamLayout.DEPLOYMENT).covers("any", "x")
    assert StreamSpec(StreamLayout.DATABASE, "shop").covers("shop", None)
    assert not StreamSpec(StreamLayout.COLLECTION, "shop", "a").covers("shop", "b")
    with pytest.raises(ValueError, match="not a stream id"):
        StreamSpec.parse("coll:nodot")


def test_layout_detection() -> None:
    everything = NamespaceFilter(ScopeSettings())
    one_database = NamespaceFilter(ScopeSettings(include_databases=["shop"]))
    standin = {"ismaster": True, "maxWireVersion": 13}
    replica_set = {"isWritablePrimary": True, "setName": "rs0"}
    assert choose_layout(StreamLayout.AUTO, standin, everything) is StreamLayout.COLLECTION
    assert choose_layout(StreamLayout.AUTO, replica_set, everything) is StreamLayout.DEPLOYMENT
    assert choose_layout(StreamLayout.AUTO, replica_set, one_database) is StreamLayout.DATABASE
    assert choose_layout(StreamLayout.AUTO, {"msg": "isdbgrid"}, everything) is StreamLayout.DEPLOYMENT
    assert choose_layout(StreamLayout.COLLECTION, replica_set, everything) is StreamLayout.COLLECTION
