"""How the stream job survives its sinks: outages are waited out, refused rows are found.

Two kinds of write failure, told apart by the error (Spark reports the JVM's exception
chain as text):

* a store that does not answer (Cassandra down, MongoDB unreachable, timeouts): the
  batch is retried, with backoff, until the store answers again or the job is stopped.
  Only that query waits; the other keeps writing to its own store.
* a store that answers and refuses (a value it cannot take): the batch is split in
  halves, and the halves again, down to the rows the store refuses; those become dead
  letters with the store's reason, the rest is written. Writes are idempotent upserts,
  so rows written by a half that succeeded are simply written again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

log = logging.getLogger("bigdataflow.stream")

# Exception names and phrases of the Cassandra driver/connector, pymongo and the JVM's
# network stack that mean "nobody answered", not "this row is wrong".
_UNAVAILABLE = re.compile(
    r"NoHostAvailable|AllNodesFailed|Failed to open native connection|Connection refused"
    r"|ConnectException|UnavailableException|WriteTimeoutException|ReadTimeoutException"
    r"|OverloadedException|BusyConnectionException|ConnectionInitException|DriverTimeoutException"
    r"|ServerSelectionTimeoutError|AutoReconnect|NetworkTimeout|ConnectionFailure|NotPrimaryError"
    r"|timed out|Timeout"
)
_JAVA_EXCEPTION = re.compile(r"((?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)): ?([^\n]*)")
MAX_REASON_CHARACTERS = 200
BACKOFF_SECONDS = (1, 2, 5, 10, 30)

Key = TypeVar("Key")
Result = TypeVar("Result")


class Stopping(Exception):
    """The job is stopping while a write waits for its store."""


# The exit status of a job that gave up on a stalled write (EX_TEMPFAIL): systemd
# starts it again (Restart=on-failure) from its checkpoint.
EXIT_STALLED = 75


class StalledWriteWatchdog:
    """Ends the process when a write attempt has waited its limit with no Spark task running.

    The Cassandra Java driver can wait for ever on a schema refresh of a session whose
    node vanished (the store host's power cut on the lab): no error and no timeout, the
    job stays active and stores nothing. Nothing tells the driver to give up, so the job
    exits and systemd starts it again from its checkpoint; the writes are idempotent
    upserts. Only time with no task running counts (``tasks_running``, sampled at each
    check): a large batch on a slow ring writes for longer than the limit, and ending it
    would replay the same batch for ever (the three-node lab, one node back from a stop).
    Inert until ``start``: the unit tests' writers are not watched.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._attempts: dict[object, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._limit_seconds: float | None = None
        self._tasks_running: Callable[[], bool] = lambda: False
        self._tasks_seen_at = float("-inf")

    def arm(self, limit_seconds: float, tasks_running: Callable[[], bool] | None = None) -> None:
        """Watch attempts from now on; ``check`` ends a stalled one."""
        self._limit_seconds = limit_seconds
        if tasks_running is not None:
            self._tasks_running = tasks_running

    def start(
        self, limit_seconds: float, tasks_running: Callable[[], bool], check_every_seconds: float = 5
    ) -> None:
        """``arm``, and check every few seconds in a thread of its own."""
        self.arm(limit_seconds, tasks_running)

        def watch() -> None:
            while True:
                time.sleep(check_every_seconds)
                self.check()

        threading.Thread(target=watch, name="stalled-write-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def watching(self, store: str) -> Iterator[None]:
        attempt = object()
        with self._lock:
            self._attempts[attempt] = (store, self._clock())
        try:
            yield
        finally:
            with self._lock:
                del self._attempts[attempt]

    def stalled(self) -> list[tuple[str, float]]:
        """(store, seconds waited with no task running) of the attempts past the limit."""
        if self._limit_seconds is None:
            return []
        now = self._clock()
        if self._tasks_running():
            self._tasks_seen_at = now
        with self._lock:
            running = [
                (store, now - max(since, self._tasks_seen_at)) for store, since in self._attempts.values()
            ]
        return [(store, seconds) for store, seconds in running if seconds > self._limit_seconds]

    def check(self, exit_process: Callable[[int], None] = os._exit) -> None:
        for store, seconds in self.stalled():
            log.error(
                "write stalled: exiting so that systemd starts the job again from its checkpoint",
                extra={"fields": {"store": store, "seconds": round(seconds), "exit_status": EXIT_STALLED}},
            )
            logging.shutdown()
            exit_process(EXIT_STALLED)
            return


WRITE_WATCHDOG = StalledWriteWatchdog()


_STACK_FRAME = re.compile(r"^\s+at .*$|^\s+\.\.\. \d+ more$", re.MULTILINE)


def is_unavailable(error: BaseException) -> bool:
    """By the exception names and messages only: stack frames name classes like RpcTimeout."""
    return bool(_UNAVAILABLE.search(_STACK_FRAME.sub("", f"{type(error).__name__}: {error}")))


def refusal_reason(store: str, error: BaseException) -> str:
    """``<store> refused the row: <the innermost JVM exception>``, bounded in length."""
    causes = _JAVA_EXCEPTION.findall(str(error))
    name, message = causes[-1] if causes else (type(error).__name__, str(error).split("\n", 1)[0])
    return f"{store} refused the row: {name.rsplit('.', 1)[-1]}: {message}"[:MAX_REASON_CHARACTERS]


def retry_while_unavailable(action: Callable[[], Result], store: str, stopping: threading.Event) -> Result:
    """``action()`` of the first attempt that does not fail for want of ``store``; other
    errors propagate."""
    attempt = 0
    while True:
        try:
            with WRITE_WATCHDOG.watching(store):
                result = action()
            if attempt:
                log.info("store answers again", extra={"fields": {"store": store, "attempts": attempt + 1}})
            return result
        except Exception as error:
            if not is_unavailable(error):
                raise
            wait = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
            attempt += 1
            log.warning(
                "store unavailable, retrying",
                extra={"fields": {"store": store, "attempt": attempt, "retry_in_seconds": wait}},
            )
            if stopping.wait(wait):
                raise Stopping(f"stopped while waiting for {store}") from error


def refused_rows(write: Callable[[Sequence[Key]], None], keys: Sequence[Key], store: str) -> dict[Key, str]:
    """The rows (by key) that ``write`` fails on, each with the store's reason.

    Bisects: a part that writes is done; a part that fails is split until single rows
    remain. An unavailable store propagates (it is not the rows' fault).
    """
    try:
        write(keys)
        return {}
    except Exception as error:
        if is_unavailable(error):
            raise
        if len(keys) == 1:
            return {keys[0]: refusal_reason(store, error)}
    half = len(keys) // 2
    return refused_rows(write, keys[:half], store) | refused_rows(write, keys[half:], store)
