"""Sink failures: an unavailable store is waited out, a refusing store's rows are found."""

from __future__ import annotations

import threading

import pytest

from jobs import resilience
from jobs.resilience import (
    EXIT_STALLED,
    StalledWriteWatchdog,
    Stopping,
    is_unavailable,
    refusal_reason,
    refused_rows,
    retry_while_unavailable,
)

# The text Spark gives for the JVM exceptions seen on the lab (abridged, real class names).
CASSANDRA_REFUSES = (
    "An error occurred while calling o1234.save.\n: org.apache.spark.SparkException: Job aborted.\n"
    "Caused by: java.lang.IllegalArgumentException: UUID string too large\n"
    "\tat java.base/java.util.UUID.fromString1(UUID.java:245)\n"
    "\tat org.apache.spark.rpc.RpcTimeout.awaitResult(RpcTimeout.scala:75)"
)
CASSANDRA_DOWN = (
    "An error occurred while calling o99.save.\n: java.io.IOException: Failed to open native "
    "connection to Cassandra at {10.77.0.12:9042}\nCaused by: "
    "com.datastax.oss.driver.api.core.AllNodesFailedException: All 1 node(s) tried for the query failed"
)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(resilience, "BACKOFF_SECONDS", (0,))


def test_refusals_and_outages_are_told_apart():
    assert not is_unavailable(RuntimeError(CASSANDRA_REFUSES))
    assert is_unavailable(RuntimeError(CASSANDRA_DOWN))
    assert is_unavailable(type("ServerSelectionTimeoutError", (Exception,), {})("no servers"))


def test_refusal_reason_names_the_innermost_exception_and_is_bounded():
    assert refusal_reason("cassandra", RuntimeError(CASSANDRA_REFUSES)) == (
        "cassandra refused the row: IllegalArgumentException: UUID string too large"
    )
    long = RuntimeError("java.lang.IllegalStateException: " + "x" * 1000)
    assert len(refusal_reason("cassandra", long)) == resilience.MAX_REASON_CHARACTERS


def make_store(poison: set[int], written: list[int]):
    """A write that refuses any part holding a poison row, like Cassandra refusing a value."""

    def write(keys):
        if poison & set(keys):
            raise RuntimeError(CASSANDRA_REFUSES)
        written.extend(keys)

    return write


@pytest.mark.parametrize("poison", [set(), {0}, {99}, {3, 4}, {7, 50, 51, 98}])
def test_bisection_finds_exactly_the_refused_rows_and_writes_every_other(poison):
    written: list[int] = []
    refused = refused_rows(make_store(poison, written), list(range(100)), "cassandra")
    assert set(refused) == poison
    assert set(written) == set(range(100)) - poison
    assert all(
        reason.startswith("cassandra refused the row: IllegalArgumentException")
        for reason in refused.values()
    )


def test_bisection_stops_when_the_store_goes_away():
    def write(keys):
        raise RuntimeError(CASSANDRA_DOWN)

    with pytest.raises(RuntimeError, match="AllNodesFailed"):
        refused_rows(write, list(range(8)), "cassandra")


def test_an_outage_is_retried_until_the_store_answers():
    attempts = []

    def write():
        attempts.append(1)
        if len(attempts) < 4:
            raise RuntimeError(CASSANDRA_DOWN)

    retry_while_unavailable(write, "cassandra", threading.Event())
    assert len(attempts) == 4


def test_a_refusal_is_not_retried():
    attempts = []

    def write():
        attempts.append(1)
        raise RuntimeError(CASSANDRA_REFUSES)

    with pytest.raises(RuntimeError, match="UUID string too large"):
        retry_while_unavailable(write, "cassandra", threading.Event())
    assert len(attempts) == 1


def test_stopping_ends_the_wait():
    stopping = threading.Event()
    stopping.set()

    def write():
        raise RuntimeError(CASSANDRA_DOWN)

    with pytest.raises(Stopping):
        retry_while_unavailable(write, "cassandra", stopping)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def assert_ends_once_quiet_past_the_limit(watchdog, clock, limit=300):
    """Nothing ends at 1 s short of the limit, the process ends 1 s past it."""
    exits = []
    clock.now += limit - 1
    watchdog.check(exits.append)
    assert exits == []
    clock.now += 2
    watchdog.check(exits.append)
    assert exits == [EXIT_STALLED]


def test_a_write_attempt_past_its_limit_ends_the_process_for_systemd_to_restart():
    clock = FakeClock()
    watchdog = StalledWriteWatchdog(clock)
    watchdog.arm(300)
    with watchdog.watching("cassandra"):
        assert_ends_once_quiet_past_the_limit(watchdog, clock)


def test_a_long_write_whose_tasks_run_is_not_stalled_until_they_stop_for_the_limit():
    """A large batch on a slow ring: its tasks run past the limit, which must not end it
    (it would replay the same batch for ever); the limit counts from the last task seen."""
    clock, exits, running = FakeClock(), [], [True]
    watchdog = StalledWriteWatchdog(clock)
    watchdog.arm(300, lambda: running[0])
    with watchdog.watching("cassandra"):
        for _ in range(20):
            clock.now += 100
            watchdog.check(exits.append)
        assert exits == []
        running[0] = False
        assert_ends_once_quiet_past_the_limit(watchdog, clock)


def test_finished_attempts_and_an_unstarted_watchdog_end_nothing():
    clock, exits = FakeClock(), []
    watchdog = StalledWriteWatchdog(clock)
    with watchdog.watching("mongodb"):
        clock.now += 10_000
        watchdog.check(exits.append)  # not started: the unit tests' writers
    watchdog.arm(300)
    with watchdog.watching("cassandra"):
        clock.now += 10
    clock.now += 10_000
    watchdog.check(exits.append)
    assert exits == [] and watchdog.stalled() == []
