"""Clients of the deployed lab's stores, for the LAB=1 tests (see tests/lab.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bdf import clients
from bdf.config import Credentials
from tests.lab import KEYSPACE, cassandra_cluster, mongo_connection, secret


@pytest.fixture(scope="module")
def cassandra() -> Iterator[Any]:
    """A session on the profile keyspace as the application role; rows are dicts."""
    from cassandra.query import dict_factory

    cluster = cassandra_cluster("bigdataflow", "cassandra-app", row_factory=dict_factory)
    session = cluster.connect(KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="module")
def mongo() -> Iterator[Any]:
    """The aggregates database as the stream job's user."""
    client = clients.mongo_client(
        mongo_connection(auth_source="user_profiles"),
        Credentials(username="stream", password=secret("mongodb-app")),
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=60_000,
    )
    yield client["user_profiles"]
    client.close()
