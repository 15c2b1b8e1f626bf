"""Shared fixtures: one local SparkSession for the whole run, key rings, generated profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from jobs.keyring import KeyRing, new_keyring


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", "python3")
    # Loopback only: the JVM would otherwise resolve the host's name, which fails where
    # it is not in /etc/hosts or DNS (java.net.UnknownHostException).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("bigdataflow-tests")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def keys() -> KeyRing:
    return new_keyring()
