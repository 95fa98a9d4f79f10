"""Which namespaces are captured, and how they map onto change streams.

The scope is the same everywhere: the Python filter (``NamespaceFilter``) is authoritative,
and the ``$match`` stage built from it lets a deployment- or database-wide stream drop
other namespaces on the server already.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cdc_service.settings import ScopeSettings, StreamLayout, is_regex_pattern

INTERNAL_DATABASES = frozenset({"admin", "local", "config"})


class _Patterns:
    """Exact names and full-match regular expressions."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.exact = frozenset(pattern for pattern in patterns if not is_regex_pattern(pattern))
        self.regexes = tuple(re.compile(pattern[1:-1]) for pattern in patterns if is_regex_pattern(pattern))

    def __bool__(self) -> bool:
        return bool(self.exact or self.regexes)

    def matches(self, name: str) -> bool:
        return name in self.exact or any(regex.fullmatch(name) for regex in self.regexes)


class NamespaceFilter:
    """Decides whether a database or a ``db.collection`` namespace is captured.

    ``reserved`` namespaces (the signal collection) are the service's own and never
    captured, whatever the scope says: they are excluded like ``exclude_collections``.
    """

    def __init__(self, scope: ScopeSettings, *, reserved: Iterable[str | None] = ()) -> None:
        self.scope = scope
        self.reserved = frozenset(namespace for namespace in reserved if namespace)
        self._include_databases = _Patterns(scope.include_databases)
        self._exclude_databases = _Patterns(scope.exclude_databases)
        self._include_collections = _Patterns(scope.include_collections)
        self._exclude_collections = _Patterns([*scope.exclude_collections, *sorted(self.reserved)])

    def database_in_scope(self, database: str) -> bool:
        """Whether any collection of ``database`` may be captured."""
        if database in INTERNAL_DATABASES or self._exclude_databases.matches(database):
            return False
        if self._include_databases:
            return self._include_databases.matches(database)
        if self._include_collections.exact and not self._include_collections.regexes:
            return any(namespace.split(".", 1)[0] == database for namespace in self._include_collections.exact)
        return True

    def collection_in_scope(self, database: str, collection: str) -> bool:
        if not self.database_in_scope(database) or collection.startswith("system."):
            return False
        namespace = f"{database}.{collection}"
        if self._exclude_collections.matches(namespace):
            return False
        return not self._include_collections or self._include_collections.matches(namespace)

    def explicit_databases(self) -> list[str] | None:
        """The databases the scope names exactly, or None when regexes or 'all' are involved."""
        if self._include_databases.regexes or self._include_collections.regexes:
            return None
        if self._include_databases.exact:
            names = set(self._include_databases.exact)
            if self._include_collections.exact:
                names &= {namespace.split(".", 1)[0] for namespace in self._include_collections.exact}
            return sorted(names)
        if self._include_collections.exact:
            return sorted({namespace.split(".", 1)[0] for namespace in self._include_collections.exact})
        return None

    def match_stage(self, database: str | None = None) -> dict[str, Any] | None:
        """A ``$match`` keeping this scope's events on a deployment (or ``database``) stream.

        Events without a collection (dropDatabase, invalidate) are kept when their database
        is in scope; invalidate events carry no namespace at all and are always kept.
        """
        conditions: list[dict[str, Any]] = []
        if database is None:
            conditions.append({"ns.db": {"$nin": sorted(INTERNAL_DATABASES)}})
            conditions.extend(_name_conditions("$ns.db", self._include_databases, self._exclude_databases))
        namespace = {"$concat": ["$ns.db", ".", "$ns.coll"]}
        collection_rules: list[dict[str, Any]] = [{"$not": [{"$regexMatch": {"input": "$ns.coll", "regex": r"^system\."}}]}]
        collection_rules.extend(
            _expression_conditions(namespace, self._include_collections, self._exclude_collections)
        )
        conditions.append(
            {
                "$or": [
                    {"ns.coll": {"$exists": False}},
                    {"$expr": {"$and": collection_rules}},
                ]
            }
        )
        keep_invalidate = {"operationType": "invalidate"}
        return {"$match": {"$or": [keep_invalidate, {"$and": conditions}]}}


def _name_conditions(field: str, include: _Patterns, exclude: _Patterns) -> list[dict[str, Any]]:
    """Query conditions on a string field (``ns.db``) from include/exclude patterns."""
    path = field.lstrip("$")
    conditions: list[dict[str, Any]] = []
    if include:
        alternatives: list[dict[str, Any]] = []
        if include.exact:
            alternatives.append({path: {"$in": sorted(include.exact)}})
        alternatives.extend({path: {"$regex": f"^(?:{regex.pattern})$"}} for regex in include.regexes)
        conditions.append({"$or": alternatives})
    if exclude.exact:
        conditions.append({path: {"$nin": sorted(exclude.exact)}})
    conditions.extend({path: {"$not": {"$regex": f"^(?:{regex.pattern})$"}}} for regex in exclude.regexes)
    return conditions


def _expression_conditions(value: Any, include: _Patterns, exclude: _Patterns) -> list[dict[str, Any]]:
    """Aggregation-expression conditions on a computed string (the namespace)."""
    conditions: list[dict[str, Any]] = []
    if include:
        alternatives: list[dict[str, Any]] = []
        if include.exact:
            alternatives.append({"$in": [value, sorted(include.exact)]})
        alternatives.extend({"$regexMatch": {"input": value, "regex": f"^(?:{regex.pattern})$"}} for regex in include.regexes)
        conditions.append({"$or": alternatives})
    if exclude.exact:
        conditions.append({"$not": [{"$in": [value, sorted(exclude.exact)]}]})
    conditions.extend(
        {"$not": [{"$regexMatch": {"input": value, "regex": f"^(?:{regex.pattern})$"}}]} for regex in exclude.regexes
    )
    return conditions


@dataclass(frozen=True)
class StreamSpec:
    """One change stream the service runs: its id (the checkpoint key) and what it watches."""

    layout: StreamLayout
    database: str | None = None
    collection: str | None = None

    @property
    def stream_id(self) -> str:
        if self.layout is StreamLayout.DEPLOYMENT:
            return "deployment"
        if self.layout is StreamLayout.DATABASE:
            return f"db:{self.database}"
        return f"coll:{self.database}.{self.collection}"

    @property
    def namespace(self) -> str:
        if self.layout is StreamLayout.COLLECTION:
            return f"{self.database}.{self.collection}"
        return self.database or "*"

    def covers(self, database: str, collection: str | None) -> bool:
        """Whether this stream reports events of ``database.collection``."""
        if self.layout is StreamLayout.DEPLOYMENT:
            return True
        if self.layout is StreamLayout.DATABASE:
            return database == self.database
        return database == self.database and collection == self.collection

    @classmethod
    def parse(cls, stream_id: str) -> StreamSpec:
        """The spec of a stream id (``deployment``, ``db:<name>``, ``coll:<db>.<collection>``)."""
        if stream_id == "deployment":
            return cls(StreamLayout.DEPLOYMENT)
        kind, _, rest = stream_id.partition(":")
        if kind == "db" and rest:
            return cls(StreamLayout.DATABASE, rest)
        if kind == "coll" and "." in rest:
            database, collection = rest.split(".", 1)
            return cls(StreamLayout.COLLECTION, database, collection)
        raise ValueError(f"{stream_id!r} is not a stream id (deployment, db:<name> or coll:<db>.<collection>)")


def choose_layout(requested: StreamLayout, hello: dict[str, Any], namespaces: NamespaceFilter) -> StreamLayout:
    """The layout to use: as configured, or detected from the server's ``hello`` reply.

    Only replica sets and sharded clusters (mongos) have database- and deployment-wide
    change streams; a standalone server or the stand-in gets one stream per collection.
    """
    if requested is not StreamLayout.AUTO:
        return requested
    if not ("setName" in hello or hello.get("msg") == "isdbgrid"):
        return StreamLayout.COLLECTION
    databases = namespaces.explicit_databases()
    return StreamLayout.DATABASE if databases is not None and len(databases) == 1 else StreamLayout.DEPLOYMENT


__all__ = ["INTERNAL_DATABASES", "NamespaceFilter", "StreamSpec", "choose_layout"]
