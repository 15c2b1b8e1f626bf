"""Clients of the deployed lab's stores, for the LAB=1 tests (see tests/lab.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab import AGGREGATES_DB, KEYSPACE, cassandra_cluster, stream_mongo_client


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
    client = stream_mongo_client()
    yield client[AGGREGATES_DB]
    client.close()
