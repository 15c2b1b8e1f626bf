"""Connections for the subject commands: the Cassandra profile table and MongoDB.

Every subject operation reads and deletes at consistency ALL: a request is rare and
must see (and erase on) every replica; when a replica is down it fails with a clear
message instead of answering from part of the cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bdf import clients
from bdf.config import CassandraSettings, MongoSettings, load_credentials
from gdpr.subjects import TTL_COLUMN


class StoreError(Exception):
    """A store cannot be reached or refused the request; the message names it."""


class CassandraProfiles:
    """The profile table through the Cassandra driver (``ProfileTable``)."""

    def __init__(self, session: Any, keyspace: str, table: str) -> None:
        from cassandra import ConsistencyLevel

        self.name = f"{keyspace}.{table}"
        try:
            columns = list(session.cluster.metadata.keyspaces[keyspace].tables[table].columns)
        except KeyError:
            raise StoreError(f"Cassandra has no table {self.name}") from None
        selectors = [f'"{column}"' for column in columns]
        if TTL_COLUMN in columns:
            selectors.append(f'TTL("{TTL_COLUMN}") AS ttl_seconds')
        select = f"SELECT {', '.join(selectors)} FROM {keyspace}.{table}"  # noqa: S608 - names from metadata
        self._session = session
        self._by_pseudonym = session.prepare(f"{select} WHERE email_pseudonym = ?")
        self._by_user_id = session.prepare(f"{select} WHERE user_id = ?")
        self._delete = session.prepare(f"DELETE FROM {keyspace}.{table} WHERE user_id = ?")  # noqa: S608
        for statement in (self._by_pseudonym, self._by_user_id, self._delete):
            statement.consistency_level = ConsistencyLevel.ALL

    def _run(self, statement: Any, value: Any) -> list[dict[str, Any]]:
        from cassandra import DriverException, RequestExecutionException

        try:
            return list(self._session.execute(statement, (value,)))
        except (RequestExecutionException, DriverException) as exc:
            raise StoreError(
                f"Cassandra refused the request on {self.name} at consistency ALL ({type(exc).__name__}: "
                f"{exc}); every replica must answer: retry when all nodes are up"
            ) from None

    def by_pseudonym(self, pseudonym: str) -> list[dict[str, Any]]:
        return self._run(self._by_pseudonym, pseudonym)

    def by_user_id(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        return self._run(self._by_user_id, user_id)

    def delete(self, user_id: uuid.UUID) -> None:
        self._run(self._delete, user_id)


@contextmanager
def cassandra_profiles(settings: CassandraSettings) -> Iterator[CassandraProfiles]:
    from cassandra.cluster import NoHostAvailable
    from cassandra.query import dict_factory

    cluster = clients.cassandra_cluster(
        settings, load_credentials(settings.credentials_file), row_factory=dict_factory, connect_timeout=10
    )
    try:
        try:
            session = cluster.connect()
        except NoHostAvailable as exc:
            hosts = ", ".join(f"{host}:{settings.port}" for host in settings.hosts)
            raise StoreError(f"cannot connect to Cassandra at {hosts}: {_first_error(exc)}") from None
        yield CassandraProfiles(session, settings.keyspace, settings.table)
    finally:
        cluster.shutdown()


def _first_error(exc: Any) -> str:
    errors = getattr(exc, "errors", None) or {}
    return str(next(iter(errors.values()), exc))


@contextmanager
def mongo_database(settings: MongoSettings) -> Iterator[Any]:
    from pymongo.errors import PyMongoError

    from jobs.sinks import STORE_CLIENT_OPTIONS

    client = clients.mongo_client(
        settings, load_credentials(settings.credentials_file), **STORE_CLIENT_OPTIONS
    )
    try:
        database = client[settings.database]
        try:
            database.list_collection_names()
        except PyMongoError as exc:
            hosts = ", ".join(settings.hosts)
            raise StoreError(f"cannot read MongoDB at {hosts} ({settings.database}): {exc}") from None
        yield database
    finally:
        client.close()
