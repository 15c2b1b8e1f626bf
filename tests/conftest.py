"""Shared fixtures: one local SparkSession for the whole run, key rings, generated profiles."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from bdf.keyring import KeyRing, new_keyring

# CI runs the fuzz tests on fixed examples, so a landing never depends on luck; a
# developer's run explores new ones each time (a failure prints how to reproduce it).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
JVM_JAR = ROOT / ".artifacts" / "jvm" / "bigdataflow-jvm.jar"


@pytest.fixture(scope="session")
def spark() -> Iterator:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", "python3")
    # Loopback only: the JVM would otherwise resolve the host's name, which fails where
    # it is not in /etc/hosts or DNS (java.net.UnknownHostException).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # The job's JVM side (the contract validator); rebuilt only when its inputs changed.
    build = [sys.executable, str(ROOT / "jvm" / "build.py"), "--output", str(JVM_JAR)]
    subprocess.run(build, check=True)  # noqa: S603 - our own build script
    session = (
        SparkSession.builder.master("local[2]")
        .appName("bigdataflow-tests")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.jars", str(JVM_JAR))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture()
def keys() -> KeyRing:
    return new_keyring()
