"""Clients of the deployed lab's stores, for the LAB=1 tests (see tests/lab.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab import HOSTS, KEYSPACE, secret


@pytest.fixture(scope="module")
def cassandra() -> Iterator[Any]:
    """A session on the profile keyspace as the application role; rows are dicts."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster
    from cassandra.query import dict_factory

    cluster = Cluster(
        [HOSTS["store1"]],
        auth_provider=PlainTextAuthProvider("bigdataflow", secret("cassandra-app")),
        protocol_version=5,
    )
    session = cluster.connect(KEYSPACE)
    session.row_factory = dict_factory
    yield session
    cluster.shutdown()


@pytest.fixture(scope="module")
def mongo() -> Iterator[Any]:
    """The aggregates database as the stream job's user."""
    from pymongo import MongoClient

    client = MongoClient(
        HOSTS["store1"],
        27017,
        username="stream",
        password=secret("mongodb-app"),
        authSource="user_profiles",
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=10_000,
        socketTimeoutMS=60_000,
    )
    yield client["user_profiles"]
    client.close()
