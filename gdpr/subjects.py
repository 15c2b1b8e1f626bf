"""Data-subject rights against the stores: find, export (decrypted) and erase one person.

A person is found by the keyed pseudonym of their email (``KeyRing.pseudonym``, the
``email_pseudonym`` column with its SAI index), never by scanning or decrypting every
row. Nothing here logs or returns the email itself except inside the access export,
which is the person's own data.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bdf.keyring import DecryptionError, KeyRing
from gdpr.model import Register
from gdpr.render import time_limit

ENCRYPTED_SUFFIX = "_enc"
TTL_COLUMN = "stored_at"  # a regular column every row has: its TTL is the row's
SMALL_GROUP = 5  # an aggregate key counting fewer people may single them out


class ProfileTable(Protocol):
    """The profile table as the subject commands need it (Cassandra, or a fake in tests)."""

    name: str

    def by_pseudonym(self, pseudonym: str) -> list[dict[str, Any]]: ...

    def by_user_id(self, user_id: uuid.UUID) -> list[dict[str, Any]]: ...

    def delete(self, user_id: uuid.UUID) -> None: ...


class AggregateDatabase(Protocol):
    """What the erasure check reads from MongoDB: collections and their documents."""

    def list_collection_names(self) -> list[str]: ...

    def __getitem__(self, name: str) -> Any: ...


def find_rows(
    table: ProfileTable, pseudonym: str, user_ids: Iterable[uuid.UUID] = ()
) -> list[dict[str, Any]]:
    """The person's rows: by pseudonym, plus rows of the given user ids; each row once."""
    rows: dict[Any, dict[str, Any]] = {}
    for row in table.by_pseudonym(pseudonym):
        rows[row["user_id"]] = row
    for user_id in user_ids:
        for row in table.by_user_id(user_id):
            rows[row["user_id"]] = row
    return [rows[key] for key in sorted(rows, key=str)]


def json_value(value: Any) -> Any:
    """A Cassandra value as JSON: uuids as text, instants as ISO-8601 UTC, dates as YYYY-MM-DD."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        instant = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return instant.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "date") and callable(value.date):  # cassandra.util.Date
        return value.date().isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return value


def decrypted_row(row: Mapping[str, Any], keys: KeyRing, now: dt.datetime) -> dict[str, Any]:
    """Every stored column, ciphertexts replaced by their plain text under the name without ``_enc``."""
    profile: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for column, value in sorted(row.items()):
        if column == "ttl_seconds":
            continue
        if column.endswith(ENCRYPTED_SUFFIX):
            name = column.removesuffix(ENCRYPTED_SUFFIX)
            try:
                profile[name] = None if value is None else keys.decrypt(bytes(value), column)
            except DecryptionError as exc:
                profile[name] = None
                problems[name] = str(exc)
        else:
            profile[column] = json_value(value)
    ttl = row.get("ttl_seconds")
    profile["expires_at"] = json_value(now + dt.timedelta(seconds=ttl)) if ttl else None
    if problems:
        profile["not_decryptable"] = problems
    return dict(sorted(profile.items()))


def processing_information(register: Register) -> dict[str, Any]:
    """What Art. 15(1) says the person is told besides their data, from the register."""
    retention = register.retention_by_id()
    return {
        "controller": register.controller.model_dump(exclude_none=True),
        "data_protection_officer": register.dpo.model_dump(exclude_none=True),
        "purposes": [{"purpose": p.purpose, "lawful_basis": p.lawful_basis} for p in register.purposes],
        "categories_of_personal_data": [c.name for c in register.data_categories],
        "recipients": [{"recipient": r.name, "receives": r.receives} for r in register.recipients],
        "third_country_transfers": register.third_country_transfers.summary,
        "storage_periods": {
            item.what: f"{time_limit(item, exact=False)}; {item.enforced_by}" for item in register.retention
        },
        "copies_outside_the_profile_store": [
            {"copy": c.copy_, "until": f"{retention[c.until].what}: {time_limit(retention[c.until], False)}"}
            for c in register.after_erasure
            if c.until in ("kafka_topic", "kafka_dead_letter_topic")
        ],
        "source": register.processing.source,
        "automated_decisions": register.processing.automated_decisions,
        "rights": [{"right": r.right, "how": r.how} for r in register.subject_rights],
        "complaint": "You may lodge a complaint with a supervisory authority (Art. 77 GDPR).",
    }


def access_export(
    rows: Sequence[Mapping[str, Any]],
    keys: KeyRing,
    pseudonym: str,
    register: Register,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The right-of-access answer: the person's stored data, decrypted, and how it is processed."""
    now = now or dt.datetime.now(dt.UTC)
    return {
        "request": {"right": "access (Art. 15 GDPR)", "generated_at": json_value(now)},
        "email_pseudonym": pseudonym,
        "profiles": [decrypted_row(row, keys, now) for row in rows],
        "aggregates": "Counts only (no document about a person): nothing to export.",
        "processing": processing_information(register),
    }


@dataclass
class AggregateCheck:
    """Whether MongoDB holds anything about the person (it must not)."""

    collections_scanned: int = 0
    documents_scanned: int = 0
    documents_naming_subject: int = 0
    email_domain_users: int | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "checked": True,
            "collections_scanned": self.collections_scanned,
            "documents_scanned": self.documents_scanned,
            "documents_naming_the_subject": self.documents_naming_subject,
            "personal_data_to_erase": self.documents_naming_subject > 0,
        }
        if self.email_domain_users is not None:
            result["email_domain_users"] = self.email_domain_users
            result["email_domain_group_is_small"] = self.email_domain_users < SMALL_GROUP
        return result


def check_aggregates(
    db: AggregateDatabase, needles: Iterable[str], email_domain: str | None, skip: Iterable[str] = ()
) -> AggregateCheck:
    """Scan every aggregate document for the person's identifiers (email, pseudonym, user ids).

    ``skip``: collections too large to scan whose schema holds counters only.
    """
    wanted = [needle.lower() for needle in needles if needle]
    result = AggregateCheck()
    for name in sorted(set(db.list_collection_names()) - set(skip)):
        result.collections_scanned += 1
        for document in db[name].find():
            result.documents_scanned += 1
            text = json.dumps(document, default=str, ensure_ascii=False).lower()
            if any(needle in text for needle in wanted):
                result.documents_naming_subject += 1
    if email_domain:
        document = db["email_domains"].find_one({"_id": email_domain})
        result.email_domain_users = int(document["users"]) if document else 0
    return result


@dataclass
class Erasure:
    """What an erasure did, as counts (what is printed and logged)."""

    rows_found: int
    rows_deleted: int = 0
    rows_remaining: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_found": self.rows_found,
            "rows_deleted": self.rows_deleted,
            "rows_remaining": self.rows_remaining,
            **self.details,
        }


def erase_rows(
    table: ProfileTable, rows: Sequence[Mapping[str, Any]], pseudonym: str, user_ids: Iterable[uuid.UUID] = ()
) -> Erasure:
    """Delete each row by its primary key, then look again: nothing of the person may remain."""
    erasure = Erasure(rows_found=len(rows))
    for row in rows:
        table.delete(row["user_id"])
        erasure.rows_deleted += 1
    erasure.rows_remaining = len(find_rows(table, pseudonym, user_ids))
    return erasure


def email_domain(email: str) -> str | None:
    """The domain as the job stores it (lower-cased, after the last "@"), or None."""
    _, at, domain = email.strip().lower().rpartition("@")
    return domain if at and domain else None
