"""Make deleted rows leave Cassandra's data files on this node (``nodetool``).

A CQL DELETE writes a tombstone; the deleted values stay in the SSTables already on
disk until a compaction merges them with it. ``flush`` writes the memtable (with the
tombstone) to disk, ``garbagecollect`` rewrites every SSTable of the table without the
data that a tombstone shadows. The tombstone itself (the user id and a deletion time,
nothing else) stays until ``gc_grace_seconds``. Snapshots are never rewritten: they
are listed so the operator can clear them.

nodetool talks to the local node over JMX: run this on every Cassandra node.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NODETOOL = "/opt/cassandra/bin/nodetool"
DEFAULT_CASSANDRA_CONF = Path("/etc/cassandra")
NODETOOL_TIMEOUT = 3600  # garbagecollect rewrites the whole table

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class PurgeError(Exception):
    """nodetool is missing or failed; the message says which step."""


@dataclass(frozen=True)
class PurgeResult:
    flushed: bool
    garbage_collected: bool
    snapshots: tuple[str, ...]  # names of snapshots holding this table

    def as_dict(self) -> dict[str, object]:
        return {
            "flushed": self.flushed,
            "garbage_collected": self.garbage_collected,
            "snapshots_holding_the_table": list(self.snapshots),
        }


def nodetool_env() -> dict[str, str]:
    env = dict(os.environ)
    if "CASSANDRA_CONF" not in env and DEFAULT_CASSANDRA_CONF.is_dir():
        env["CASSANDRA_CONF"] = str(DEFAULT_CASSANDRA_CONF)
    return env


def default_runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - the operator's nodetool, fixed arguments
            list(argv),
            capture_output=True,
            text=True,
            timeout=NODETOOL_TIMEOUT,
            env=nodetool_env(),
            check=False,
        )
    except FileNotFoundError:
        raise PurgeError(f"{argv[0]} not found: run --purge on a Cassandra node or set --nodetool") from None
    except subprocess.TimeoutExpired:
        raise PurgeError(f"{' '.join(argv)} did not finish within {NODETOOL_TIMEOUT} s") from None


def snapshots_of(listing: str, keyspace: str, table: str) -> tuple[str, ...]:
    """Snapshot names in ``nodetool listsnapshots`` output that hold keyspace.table."""
    names = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == keyspace and parts[2] == table:
            names.append(parts[0])
    return tuple(sorted(set(names)))


def purge_table(nodetool: str, keyspace: str, table: str, runner: Runner = default_runner) -> PurgeResult:
    """flush, garbagecollect, then list the snapshots that still hold the table."""
    command = shlex.split(nodetool)

    def step(*arguments: str) -> str:
        result = runner([*command, *arguments])
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {result.returncode}"
            raise PurgeError(f"nodetool {arguments[0]} failed: {reason}")
        return result.stdout

    step("flush", keyspace, table)
    step("garbagecollect", "--granularity", "ROW", keyspace, table)
    listing = step("listsnapshots")
    return PurgeResult(flushed=True, garbage_collected=True, snapshots=snapshots_of(listing, keyspace, table))
