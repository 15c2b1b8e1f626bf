"""The stream job's quarantine file: source offsets it must dead-letter instead of processing.

The way out of a crash loop: a message that makes every attempt at its micro-batch fail
(and so escapes the per-row dead-lettering) is named here by ``bdf-dlq quarantine``;
the job then sends it to the dead-letter topic with the operator's reason.

The file is one JSON document, written atomically with mode 0600::

    {"version": 1, "messages": [{"topic": "user_profiles", "partition": 0,
                                 "offset": 1234, "reason": "crash loop: ..."}]}

Reasons are written by operators and end up in ``dlq.reason``: they must not quote
the message's content.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MAX_REASON_LENGTH = 500  # it becomes a Kafka header of every quarantined dead letter


class QuarantineError(Exception):
    """The quarantine file cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class QuarantinedMessage:
    topic: str
    partition: int
    offset: int
    reason: str

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError("the topic is empty")
        if self.partition < 0 or self.offset < 0:
            raise ValueError("partition and offset must not be negative")
        if not self.reason.strip():
            raise ValueError("the reason is empty")
        if len(self.reason) > MAX_REASON_LENGTH:
            raise ValueError(f"the reason is longer than {MAX_REASON_LENGTH} characters")

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def load_quarantine(path: Path) -> list[QuarantinedMessage]:
    """The quarantined messages in file order; none when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise QuarantineError(f"cannot read the quarantine file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {document.get('version')!r}")
        return [_message(entry) for entry in document["messages"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise QuarantineError(f"{path} is not a quarantine file: {exc}") from None


def _message(entry: Any) -> QuarantinedMessage:
    values = {name: entry[name] for name in ("topic", "partition", "offset", "reason")}
    if not all(
        isinstance(values[name], int) and not isinstance(values[name], bool)
        for name in ("partition", "offset")
    ):
        raise ValueError(f"partition and offset must be integers in {values}")
    if not isinstance(values["topic"], str) or not isinstance(values["reason"], str):
        raise ValueError(f"topic and reason must be strings in {values}")
    return QuarantinedMessage(**values)


def add_to_quarantine(path: Path, message: QuarantinedMessage) -> bool:
    """Add ``message`` unless its offset is already quarantined; True when the file changed."""
    with _locked(path):
        messages = load_quarantine(path)
        if any(known.position == message.position for known in messages):
            return False
        _write(path, [*messages, message])
        return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two operators adding at once must not lose one another's entry."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise QuarantineError(f"cannot write the quarantine file {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "w") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _write(path: Path, messages: list[QuarantinedMessage]) -> None:
    document = {"version": FORMAT_VERSION, "messages": [asdict(message) for message in messages]}
    # mkstemp creates the file 0600; the rename makes the change all or nothing for the job.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        _keep_owner(Path(temporary), path)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise QuarantineError(f"cannot write the quarantine file {path}: {exc.strerror}") from None


def _keep_owner(new: Path, path: Path) -> None:
    """An operator using sudo must not leave a root-owned file the job's account cannot read."""
    if os.geteuid() != 0:
        return  # only root can give a file away; an unprivileged writer keeps its own
    reference = path if path.exists() else path.parent
    status = reference.stat()
    os.chown(new, status.st_uid, status.st_gid)
