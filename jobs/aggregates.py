"""Aggregate documents: how the job writes them and how readers derive ages from them.

Each MongoDB aggregate collection holds one document per key::

    {"_id": "FI", "users": 412, "birth_epoch_day_sum": 2850161, "updated_at": <datetime>}

``users`` and ``birth_epoch_day_sum`` are absolute values taken from the job's ledger
(``jobs.sinks.AggregateLedger``: each user counted once), so writing the same document twice, or
replaying a micro-batch after a restart, changes nothing: there is no increment.
Ages are not stored because they go stale; they are derived here at read time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

# One MongoDB collection per aggregate (keys: jobs.transform._aggregate_keys); the
# dashboard reads them by these names.
NATIONALITY = "users_by_nationality"
GENDER = "users_by_gender"
NATIONALITY_GENDER = "users_by_nationality_gender"
EMAIL_DOMAINS = "email_domains"
BIRTH_MONTHS = "users_by_birth_month"
REGISTRATIONS = "registrations_by_month"
TOTALS = "totals"
AGGREGATE_COLLECTIONS = (
    NATIONALITY,
    GENDER,
    NATIONALITY_GENDER,
    EMAIL_DOMAINS,
    BIRTH_MONTHS,
    REGISTRATIONS,
    TOTALS,
)
BATCHES_COLLECTION = "stream_batches"
EPOCH = dt.date(1970, 1, 1)
DAYS_PER_YEAR = 365.2425
AGE_BANDS: tuple[tuple[int, int | None], ...] = (
    (0, 17),
    (18, 24),
    (25, 34),
    (35, 44),
    (45, 54),
    (55, 64),
    (65, None),
)


def to_documents(
    rows: Iterable[Mapping[str, Any]], updated_at: dt.datetime
) -> dict[str, list[dict[str, Any]]]:
    """Aggregate rows (collection, key, users, birth_epoch_day_sum) grouped per collection."""
    documents: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        documents.setdefault(row["collection"], []).append(
            {
                "_id": row["key"],
                "users": int(row["users"]),
                "birth_epoch_day_sum": int(row["birth_epoch_day_sum"] or 0),
                "updated_at": updated_at,
            }
        )
    return documents


def average_age(document: Mapping[str, Any], today: dt.date) -> float | None:
    """Mean age in years today, from the mean birth day of the counted users."""
    users = document.get("users") or 0
    if users == 0:
        return None
    mean_birth = EPOCH + dt.timedelta(days=document["birth_epoch_day_sum"] / users)
    return (today - mean_birth).days / DAYS_PER_YEAR


def age_on(birth: dt.date, today: dt.date) -> int:
    """Whole years; someone born on 29 February has their birthday on 1 March in other years."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def age_band_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


def age_bands(birth_month_documents: Iterable[Mapping[str, Any]], today: dt.date) -> dict[str, int]:
    """Users per age band from ``users_by_birth_month`` documents (``_id`` = ``YYYY-MM``).

    A birth month is placed by the age of someone born on its first day: at most one
    month early at a band boundary, never stale.
    """
    bands = {age_band_label(low, high): 0 for low, high in AGE_BANDS}
    for document in birth_month_documents:
        try:
            year, month = (int(part) for part in str(document["_id"]).split("-"))
        except ValueError:
            continue  # the "unknown" key: no birth date to place
        age = age_on(dt.date(year, month, 1), today)
        for low, high in AGE_BANDS:
            if age >= low and (high is None or age <= high):
                bands[age_band_label(low, high)] += int(document["users"])
                break
    return bands
