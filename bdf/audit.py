"""Audit logs: one JSON line per action (who, when, what), for every tool that changes
something or reveals personal data: ``bdf-acl apply``, ``bdf-gdpr subject erase``,
``bdf-dlq`` (unmask, replay, quarantine). Each tool keeps its own file.

The log is opened, and locked, before the first change: if it cannot be written,
nothing is done; two runs on one host go one after the other.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

ENV_ACTOR = "BDF_ACL_ACTOR"  # who asked for the change, when a tool (Ansible) runs it


class AuditError(Exception):
    """The audit log cannot be written; nothing was changed."""


def actor(env: dict[str, str] | None = None) -> dict[str, str]:
    """Who runs the change: the requesting person (BDF_ACL_ACTOR, SUDO_USER) and the account."""
    env = dict(os.environ) if env is None else env
    try:
        account = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        account = f"uid {os.getuid()}"
    return {
        "actor": env.get(ENV_ACTOR) or env.get("SUDO_USER") or account,
        "account": account,
        "host": socket.gethostname(),
    }


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


@dataclass
class AuditLog:
    handle: IO[str]
    base: dict[str, object]

    def record(self, action: str, **details: object) -> None:
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            **self.base,
            "action": action,
            **details,
        }
        self.handle.write(json.dumps(entry, sort_keys=False, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())


@contextmanager
def open_audit_log(path: Path, **base: object) -> Iterator[AuditLog]:
    """Append to the log (created 0640 with its directory), holding an exclusive lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise AuditError(f"cannot write the audit log {path}: {exc.strerror} (set --audit-log)") from None
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield AuditLog(handle, {**actor(), **base})
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
