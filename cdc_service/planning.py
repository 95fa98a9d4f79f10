"""What a pipeline attempt asks MongoDB before it streams: the client, the server, the streams.

The streams that cover the scope depend on the layout and on what exists: one per
collection, per database, or one for the deployment (``plan_streams``); what a stream's
snapshot copies are the existing in-scope collections it reports (``covered_collections``).
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient, uri_parser
from pymongo.errors import OperationFailure, PyMongoError

from cdc_service.scope import NamespaceFilter, StreamSpec
from cdc_service.settings import CdcSettings, StreamLayout


def namespace_filter(settings: CdcSettings) -> NamespaceFilter:
    """The service's scope; its own signal collection is never captured."""
    return NamespaceFilter(settings.scope, reserved=[settings.snapshot.signal_collection])


def mongo_client(settings: CdcSettings) -> MongoClient:
    """The client of one pipeline. Options in the URI win; otherwise a server that stops
    answering fails the read instead of hanging it (a getMore waits max_await_ms at most)."""
    uri = settings.mongo_uri.get_secret_value()
    given = {name.lower() for name in uri_parser.parse_uri(uri, validate=False)["options"]}
    options: dict[str, Any] = {"appname": f"cdc-service/{settings.name}"}
    if "sockettimeoutms" not in given:
        options["socketTimeoutMS"] = settings.stream.max_await_ms + 30_000
    return MongoClient(uri, **options)


def server_hello(client: MongoClient) -> dict[str, Any]:
    try:
        return client.admin.command("hello")
    except OperationFailure:
        return client.admin.command("isMaster")


def build_info(client: MongoClient) -> dict[str, Any]:
    try:
        return client.admin.command("buildInfo")
    except PyMongoError:
        return {}


def _collections_of(client: MongoClient, database: str) -> list[str]:
    """Plain collections of a database (views and time series have no change streams)."""
    names = []
    for info in client[database].list_collections():
        if info.get("type", "collection") == "collection":
            names.append(info["name"])
    return sorted(names)


def _databases(client: MongoClient, namespaces: NamespaceFilter) -> list[str]:
    names = set(client.list_database_names())
    names.update(namespaces.explicit_databases() or ())
    return sorted(name for name in names if namespaces.database_in_scope(name))


def plan_streams(client: MongoClient, layout: StreamLayout, namespaces: NamespaceFilter) -> list[StreamSpec]:
    """The streams that cover the scope in this layout (existing databases and collections)."""
    if layout is StreamLayout.DEPLOYMENT:
        return [StreamSpec(StreamLayout.DEPLOYMENT)]
    databases = _databases(client, namespaces)
    if layout is StreamLayout.DATABASE:
        return [StreamSpec(StreamLayout.DATABASE, database) for database in databases]
    specs: list[StreamSpec] = []
    explicit = {
        name for name in namespaces.scope.include_collections if not name.startswith("/") and "." in name
    }
    for database in databases:
        collections = set(_collections_of(client, database))
        collections.update(name.split(".", 1)[1] for name in explicit if name.split(".", 1)[0] == database)
        specs.extend(
            StreamSpec(StreamLayout.COLLECTION, database, collection)
            for collection in sorted(collections)
            if namespaces.collection_in_scope(database, collection)
        )
    return specs


def covered_collections(client: MongoClient, spec: StreamSpec, namespaces: NamespaceFilter) -> list[str]:
    """The existing in-scope namespaces a stream reports, which its snapshot copies."""
    if spec.layout is StreamLayout.COLLECTION:
        return [spec.namespace]
    databases = [spec.database] if spec.layout is StreamLayout.DATABASE else _databases(client, namespaces)
    return [
        f"{database}.{collection}"
        for database in databases
        if database is not None
        for collection in _collections_of(client, database)
        if namespaces.collection_in_scope(database, collection)
    ]


__all__ = ["build_info", "covered_collections", "mongo_client", "namespace_filter", "plan_streams", "server_hello"]
