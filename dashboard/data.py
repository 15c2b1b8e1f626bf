"""What the dashboard reads: the MongoDB aggregate collections, and nothing per person.

Reading is split in three so that most of it is testable without a server:

- ``read_documents(db)`` is the only code that talks to MongoDB: one bounded ``find``
  per aggregate collection (a few dozen to a few thousand small documents, whatever the
  number of profiles behind them);
- ``summarise(documents, ...)`` turns those documents into a *snapshot*: a small,
  JSON-ready dict that the page keeps in a ``dcc.Store`` (filters re-render from it
  without asking MongoDB again). It trusts nothing it reads: a key that the stream job
  cannot have written (``key_checks``, from ``jobs.contract``) is counted under ``OTHER``,
  a document whose counts are not whole non-negative numbers is ignored and counted in
  ``ignored``;
- ``select(snapshot, nationalities, genders)`` applies the page's filters.

``AggregateSource`` ties them together for the app: a lazily created client with short
time-outs, and every failure turned into a ``Problem`` the page can show in a sentence.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bdf import clients
from bdf.config import ConfigError, MongoSettings, load_credentials
from dashboard import ids
from jobs.aggregates import (
    AGGREGATE_COLLECTIONS,
    BIRTH_MONTHS,
    EMAIL_DOMAINS,
    EPOCH,
    GENDER,
    NATIONALITY,
    NATIONALITY_GENDER,
    REGISTRATIONS,
    TOTALS,
    age_bands,
    average_age,
)
from jobs.contract import CLOCK_SKEW_SECONDS, EARLIEST_BIRTH, GENDERS, NATIONALITIES

log = logging.getLogger(__name__)

# The only fields read: counts, sums of birth days and write times; never anything else.
PROJECTION = {"users": 1, "birth_epoch_day_sum": 1, "updated_at": 1}
UNKNOWN = "unknown"  # the key the stream job counts a missing value under
OTHER = ids.OTHER
# At most this many documents are read per collection (a fraction of a second even from
# FerretDB): more than any collection legitimately holds (birth and registration months
# since 1900: about 1,530; email domains: one per mail provider, 2,000 in the synthetic
# load test). A flood of junk keys costs no more than that.
MAX_DOCUMENTS = 2_000
MAX_COUNT = 2**53 - 1  # the largest integer a browser still shows exactly
MAX_DOMAIN_LENGTH = 253
# A hostname's shape: dot-separated labels of letters (any script), digits, inner hyphens.
_DOMAIN_LABEL = r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?"
_DOMAIN = re.compile(rf"{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
_MONTH = re.compile("[0-9]{4}-(?:0[1-9]|1[0-2])")
_EARLIEST_BIRTH = dt.date.fromisoformat(EARLIEST_BIRTH[:10])
_NATIONALITY_KEYS = frozenset((*NATIONALITIES, UNKNOWN))
_GENDER_KEYS = frozenset((*GENDERS, UNKNOWN))


# --- Reading ---------------------------------------------------------------------------------
def read_documents(db: Any) -> tuple[dict[str, list[dict[str, Any]]], frozenset[str]]:
    """The aggregate documents by collection, at most ``MAX_DOCUMENTS`` each, and the
    collections that hold more than that.

    No filter and no sort: FerretDB v1 reads a whole collection for either (seconds for
    20,000 documents), a bare limit it does not; summarising picks the largest.
    """
    documents: dict[str, list[dict[str, Any]]] = {}
    truncated = set()
    for name in AGGREGATE_COLLECTIONS:
        documents[name] = list(db[name].find({}, PROJECTION).limit(MAX_DOCUMENTS + 1))
        if len(documents[name]) > MAX_DOCUMENTS:
            truncated.add(name)
            del documents[name][MAX_DOCUMENTS:]
    return documents, frozenset(truncated)


# --- Checking what MongoDB holds -------------------------------------------------------------
def month_range(today: dt.date) -> tuple[str, str]:
    """The first and last ``yyyy-MM`` a birth or a registration can have (the contract's)."""
    latest = today + dt.timedelta(seconds=CLOCK_SKEW_SECONDS)
    return f"{_EARLIEST_BIRTH:%Y-%m}", f"{latest:%Y-%m}"


def is_email_domain(key: str) -> bool:
    """A hostname's shape, at most 253 characters (the stream job lower-cases it)."""
    return len(key) <= MAX_DOMAIN_LENGTH and _DOMAIN.fullmatch(key) is not None


Classify = Callable[[str | None], tuple[str, bool]]


def _one_of(is_valid: Callable[[str], bool]) -> Classify:
    def classify(key: str | None) -> tuple[str, bool]:
        return (key, True) if key is not None and is_valid(key) else (OTHER, False)

    return classify


def _pair(key: str | None) -> tuple[str, bool]:
    nationality, gender = _split_nationality_gender(key) if key is not None else (OTHER, OTHER)
    return f"{nationality}|{gender}", OTHER not in (nationality, gender)


def key_checks(today: dt.date) -> dict[str, Classify]:
    """Per collection: how a key is shown, and whether it is one the stream job can write
    for a valid profile (if not, it is shown as ``OTHER``, per part for nationality|gender)."""
    first, last = month_range(today)

    def is_month(key: str) -> bool:
        return key == UNKNOWN or (_MONTH.fullmatch(key) is not None and first <= key <= last)

    return {
        NATIONALITY: _one_of(_NATIONALITY_KEYS.__contains__),
        GENDER: _one_of(_GENDER_KEYS.__contains__),
        NATIONALITY_GENDER: _pair,
        EMAIL_DOMAINS: _one_of(lambda key: key == UNKNOWN or is_email_domain(key)),
        BIRTH_MONTHS: _one_of(is_month),
        REGISTRATIONS: _one_of(is_month),
        TOTALS: _one_of("all".__eq__),
    }


def whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a finite whole number a browser shows exactly, else None.

    BSON integers, and doubles without a fraction; not booleans, strings, NaN, decimals.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and abs(value) <= MAX_COUNT:
        return int(value)
    return None


def counts(document: Mapping[str, Any], today: dt.date) -> dict[str, int] | None:
    """A document's ``users`` and ``birth_epoch_day_sum``, or None when they cannot be true.

    ``users`` is required and non-negative; the birth-day sum (0 when absent) must put the
    mean birth between the contract's earliest birth and today, or be 0 for nobody.
    """
    users = whole_number(document.get("users"))
    raw_sum = document.get("birth_epoch_day_sum")
    birth_sum = 0 if raw_sum is None else whole_number(raw_sum)
    if users is None or users < 0 or birth_sum is None:
        return None
    earliest, latest = (_EARLIEST_BIRTH - EPOCH).days, (today - EPOCH).days + 1
    if not (earliest * users <= birth_sum <= latest * users):
        return None
    return {"users": users, "birth_epoch_day_sum": birth_sum}


def _key(document: Mapping[str, Any]) -> str | None:
    """The document's key, or None when it is not text (MongoDB allows any ``_id``)."""
    key = document.get("_id")
    return key if isinstance(key, str) and key else None


def _split_nationality_gender(key: str) -> tuple[str, str]:
    """``"FI|female"`` -> ``("FI", "female")``; Spark's ``concat_ws`` drops a null part.

    A part that is not a nationality (or a gender) becomes ``OTHER``.
    """
    if "|" in key:
        nationality, _, gender = key.partition("|")
        nationality, gender = nationality or UNKNOWN, gender or UNKNOWN
    else:
        nationality, gender = (UNKNOWN, key) if key in GENDERS else (key, UNKNOWN)
    return (
        nationality if nationality in _NATIONALITY_KEYS else OTHER,
        gender if gender in _GENDER_KEYS else OTHER,
    )


@dataclass
class Checked:
    """One collection's documents as the page may use them: keys checked, counts readable."""

    counts: dict[str, dict[str, int]]  # by key as shown (junk keys summed under OTHER)
    unrecognised: int = 0  # documents whose key is shown as OTHER
    ignored: int = 0  # documents left out: their counts cannot be true


def check(documents: Iterable[Mapping[str, Any]], classify: Classify, today: dt.date) -> Checked:
    """One collection's documents, checked: junk keys under ``OTHER``, junk counts left out."""
    checked = Checked({})
    for document in documents:
        item = counts(document, today)
        if item is None:
            checked.ignored += 1
            continue
        key, recognised = classify(_key(document))
        checked.unrecognised += not recognised
        checked.counts[key] = _sum([checked.counts[key], item]) if key in checked.counts else item
    return checked


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # a client without tz_aware returns naive UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _last_update(documents: Iterable[Mapping[str, Any]]) -> dt.datetime | None:
    moments = [d["updated_at"] for d in documents if isinstance(d.get("updated_at"), dt.datetime)]
    return max((m if m.tzinfo else m.replace(tzinfo=dt.UTC) for m in moments), default=None)


# --- Summarising -----------------------------------------------------------------------------
def summarise(
    documents: Mapping[str, Iterable[Mapping[str, Any]]],
    read_at: dt.datetime,
    today: dt.date,
    top_domains: int = 10,
    truncated: Iterable[str] = (),
) -> dict[str, Any]:
    """The page's snapshot (JSON-ready) from aggregate documents grouped by collection.

    ``unrecognised`` and ``ignored`` count, per collection, the documents shown under
    ``OTHER`` and those left out (their counts cannot be true); ``truncated`` names the
    collections of which not every document was read.
    """
    docs = {name: list(documents.get(name, ())) for name in AGGREGATE_COLLECTIONS}
    checks = key_checks(today)
    checked = {name: check(docs[name], checks[name], today) for name in AGGREGATE_COLLECTIONS}

    nationality_gender: dict[str, dict[str, dict[str, int]]] = {}
    for key, item in checked[NATIONALITY_GENDER].counts.items():
        nationality, _, gender = key.partition("|")
        nationality_gender.setdefault(nationality, {})[gender] = item
    total = checked[TOTALS].counts.get("all") or _sum(checked[GENDER].counts.values())

    birth_months = checked[BIRTH_MONTHS].counts
    bands = age_bands(({"_id": k, "users": c["users"]} for k, c in birth_months.items() if k != OTHER), today)
    if OTHER in birth_months:
        bands[OTHER] = birth_months[OTHER]["users"]
    registrations = checked[REGISTRATIONS].counts
    domain_counts = checked[EMAIL_DOMAINS].counts
    updated_at = _last_update(d for name in AGGREGATE_COLLECTIONS for d in docs[name])
    return {
        "read_at": _iso(read_at),
        "updated_at": _iso(updated_at),
        "total": total,
        "nationality": checked[NATIONALITY].counts,
        "gender": checked[GENDER].counts,
        "nationality_gender": nationality_gender,
        "age_bands": bands,
        "registrations": sorted(
            [k, c["users"]] for k, c in registrations.items() if k not in (UNKNOWN, OTHER)
        ),
        "registrations_other": registrations.get(OTHER, {"users": 0})["users"],
        "email_domains": sorted(
            ([k, c["users"]] for k, c in domain_counts.items() if k != OTHER), key=lambda kv: (-kv[1], kv[0])
        )[:top_domains],
        "email_domain_count": len(domain_counts) - (OTHER in domain_counts),
        "truncated": sorted(truncated),
        "unrecognised": {name: c.unrecognised for name, c in checked.items() if c.unrecognised},
        "ignored": {name: c.ignored for name, c in checked.items() if c.ignored},
    }


def is_empty(snapshot: Mapping[str, Any] | None) -> bool:
    return not snapshot or (snapshot["total"]["users"] == 0 and not snapshot["nationality"])


# --- Filtering -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What the charts that honour the filters show; ages in years (None: nobody counted)."""

    users: int
    average_age: float | None
    by_nationality: dict[str, int]
    age_by_nationality: dict[str, float | None]
    by_gender: dict[str, int]
    filtered: bool


def _sum(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    users = birth = 0
    for item in counts:
        users += item["users"]
        birth += item["birth_epoch_day_sum"]
    return {"users": users, "birth_epoch_day_sum": birth}


def select(
    snapshot: Mapping[str, Any],
    nationalities: Iterable[str] | None,
    genders: Iterable[str] | None,
    today: dt.date,
) -> Selection:
    """Apply the nationality and gender filters (empty or None: everyone).

    Without a filter every number comes straight from its own collection; with one, from
    ``users_by_nationality_gender``, the only aggregate broken down by both.
    """
    nats = set(nationalities or ())
    gens = set(genders or ())
    pairs = snapshot["nationality_gender"]

    def wanted(nationality: str, gender: str) -> bool:
        return (not nats or nationality in nats) and (not gens or gender in gens)

    if gens:
        by_nat = {
            nat: _sum(c for gender, c in per_gender.items() if wanted(nat, gender))
            for nat, per_gender in pairs.items()
            if not nats or nat in nats
        }
    else:
        by_nat = {nat: c for nat, c in snapshot["nationality"].items() if not nats or nat in nats}
    if nats:
        by_gender: dict[str, dict[str, int]] = {}
        for nat, per_gender in pairs.items():
            for gender, c in per_gender.items():
                if wanted(nat, gender):
                    by_gender[gender] = _sum([by_gender.get(gender, _sum(())), c])
    else:
        by_gender = {g: c for g, c in snapshot["gender"].items() if not gens or g in gens}

    filtered = bool(nats or gens)
    total = _sum(by_nat.values()) if filtered else snapshot["total"]
    return Selection(
        users=total["users"],
        average_age=average_age(total, today),
        by_nationality={nat: c["users"] for nat, c in by_nat.items() if c["users"]},
        age_by_nationality={nat: average_age(c, today) for nat, c in by_nat.items() if c["users"]},
        by_gender={g: c["users"] for g, c in by_gender.items() if c["users"]},
        filtered=filtered,
    )


# --- The source the app polls ----------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Why a refresh got no data, in words for the page (details go to the log)."""

    kind: str  # unreachable | slow | refused | error | config
    message: str


@dataclass(frozen=True)
class Reading:
    snapshot: dict[str, Any] | None = None
    problem: Problem | None = None


def describe_failure(error: Exception, timeout_seconds: float) -> Problem:
    """A pymongo (or configuration) error as one sentence, without internals."""
    from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError

    if isinstance(error, ConfigError):
        return Problem("config", f"The dashboard's MongoDB settings are wrong: {error}")
    if isinstance(error, ServerSelectionTimeoutError):
        return Problem(
            "unreachable", f"Cannot reach MongoDB: no server answered within {timeout_seconds:g} s."
        )
    if isinstance(error, PyMongoError) and error.timeout:
        return Problem("slow", f"MongoDB is slow: reading the aggregates took over {timeout_seconds:g} s.")
    if isinstance(error, OperationFailure) and error.code in (13, 18):  # Unauthorized, AuthenticationFailed
        return Problem("refused", "MongoDB refused the dashboard's read-only credentials.")
    return Problem("error", "MongoDB answered with an error; the dashboard's log has the details.")


class AggregateSource:
    """Reads snapshots for the app: the client is created on first use, never at import.

    Every read is bounded by ``timeout_seconds`` (server selection included), so a slow or
    absent MongoDB costs one refresh that long, then the page says so; the next refresh
    tries again, which is how the page recovers by itself.

    A reading (data or problem) is reused for ``reuse_seconds``, and one read runs at a
    time: however many pages are open, a worker asks MongoDB at most once per period, and
    a page that opens right after another one gets its data without waiting for MongoDB.
    """

    def __init__(
        self,
        mongodb: MongoSettings,
        timeout_seconds: float = 3.0,
        top_domains: int = 10,
        reuse_seconds: float = 0.0,
    ) -> None:
        self._mongodb = mongodb
        self._timeout = timeout_seconds
        self._top_domains = top_domains
        self._reuse = reuse_seconds
        self._credentials = load_credentials(mongodb.credentials_file)  # a bad file fails at start
        self._client: Any = None
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._last: tuple[float, Reading] | None = None
        self._last_kind: str | None = "start"
        self._last_junk: tuple[dict[str, int], dict[str, int], list[str]] = ({}, {}, [])

    def _database(self) -> Any:
        with self._lock:
            if self._client is None:
                from bson.codec_options import DatetimeConversion

                timeout_ms = int(self._timeout * 1000)
                self._client = clients.mongo_client(
                    self._mongodb,
                    self._credentials,
                    appname="bigdataflow-dashboard",
                    serverSelectionTimeoutMS=timeout_ms,
                    connectTimeoutMS=timeout_ms,
                    socketTimeoutMS=timeout_ms,
                    maxPoolSize=8,
                    tz_aware=True,
                    # A document MongoDB holds must not fail the whole read: a write time
                    # beyond year 9999 decodes as milliseconds (then ignored), bad UTF-8 as U+FFFD.
                    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                    unicode_decode_error_handler="replace",
                )
            return self._client[self._mongodb.database]

    def read(self) -> Reading:
        """The latest reading, from MongoDB unless one younger than ``reuse_seconds`` exists."""
        with self._read_lock:
            if self._last is not None and time.monotonic() - self._last[0] < self._reuse:
                return self._last[1]
            reading = self.read_now()
            self._last = (time.monotonic(), reading)
            return reading

    def latest(self, max_age: float) -> Reading | None:
        """The last reading if it is younger than ``max_age`` seconds; never waits for MongoDB."""
        last = self._last
        if last is not None and time.monotonic() - last[0] < max_age:
            return last[1]
        return None

    def read_now(self, now: dt.datetime | None = None) -> Reading:
        import pymongo
        from pymongo.errors import PyMongoError

        now = now or dt.datetime.now(dt.UTC)
        started = dt.datetime.now(dt.UTC)
        try:
            with pymongo.timeout(self._timeout):
                documents, truncated = read_documents(self._database())
            snapshot = summarise(documents, now, now.date(), self._top_domains, truncated)
        except (PyMongoError, ConfigError) as error:
            problem = describe_failure(error, self._timeout)
            self._note(problem.kind, problem.message, error)
            return Reading(problem=problem)
        except Exception as error:
            # The page's boundary: a document of an unexpected shape must not put a traceback
            # in the browser. The log has it; the page says where to look.
            log.exception("cannot summarise the aggregates", extra={"fields": {"state": "error"}})
            self._last_kind = "error"
            return Reading(problem=describe_failure(error, self._timeout))
        self._note("empty" if is_empty(snapshot) else "ok", "aggregates read", None, started)
        self._note_junk(snapshot)
        return Reading(snapshot=snapshot)

    def _note_junk(self, snapshot: Mapping[str, Any]) -> None:
        """Log, when they change, how many documents per collection were not taken as they are
        (numbers only: a junk key may be anything, personal data included)."""
        junk = (snapshot["unrecognised"], snapshot["ignored"], snapshot["truncated"])
        if junk == self._last_junk:
            return
        self._last_junk = junk
        log.warning(
            "aggregate documents not shown as stored",
            extra={
                "fields": {
                    "unrecognised_keys": junk[0],
                    "unreadable_counts": junk[1],
                    "not_all_read": junk[2],
                }
            },
        )

    def _note(
        self, kind: str, message: str, error: Exception | None, started: dt.datetime | None = None
    ) -> None:
        """Log when the state changes (ok, empty, unreachable, ...), not on every refresh."""
        if kind == self._last_kind:
            return
        self._last_kind = kind
        fields: dict[str, Any] = {"state": kind, "database": self._mongodb.database}
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            log.warning(message, extra={"fields": fields})
        else:
            if started is not None:
                fields["read_ms"] = round((dt.datetime.now(dt.UTC) - started).total_seconds() * 1000, 1)
            log.info(message if kind == "ok" else "no aggregates in MongoDB yet", extra={"fields": fields})

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
