"""What the dashboard reads: the MongoDB aggregate collections, and nothing per person.

Reading is split in three so that most of it is testable without a server:

- ``read_documents(db, ...)`` is the only code that talks to MongoDB: one ``find`` per
  aggregate collection (a few dozen to a few thousand small documents, whatever the
  number of profiles behind them);
- ``summarise(documents, ...)`` turns those documents into a *snapshot*: a small,
  JSON-ready dict that the page keeps in a ``dcc.Store`` (filters re-render from it
  without asking MongoDB again);
- ``select(snapshot, nationalities, genders)`` applies the page's filters.

``AggregateSource`` ties them together for the app: a lazily created client with short
time-outs, and every failure turned into a ``Problem`` the page can show in a sentence.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobs.aggregates import (
    AGGREGATE_COLLECTIONS,
    BIRTH_MONTHS,
    EMAIL_DOMAINS,
    GENDER,
    NATIONALITY,
    NATIONALITY_GENDER,
    REGISTRATIONS,
    TOTALS,
    age_bands,
    average_age,
)
from jobs.config import ConfigError, MongoSettings, load_credentials

log = logging.getLogger(__name__)

# The only fields read: counts, sums of birth days and write times; never anything else.
PROJECTION = {"users": 1, "birth_epoch_day_sum": 1, "updated_at": 1}
UNKNOWN = "unknown"


# --- Reading ---------------------------------------------------------------------------------
def read_documents(db: Any, top_domains: int) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every aggregate document but email domains, of which only the ``top_domains`` largest.

    Returns the documents by collection and how many email domains there are in all.
    """
    documents = {
        name: list(db[name].find({}, PROJECTION)) for name in AGGREGATE_COLLECTIONS if name != EMAIL_DOMAINS
    }
    domains = db[EMAIL_DOMAINS]
    documents[EMAIL_DOMAINS] = list(
        domains.find({}, PROJECTION).sort([("users", -1), ("_id", 1)]).limit(top_domains)
    )
    return documents, domains.estimated_document_count()


# --- Summarising -----------------------------------------------------------------------------
def _key(document: Mapping[str, Any]) -> str:
    key = document.get("_id")
    return UNKNOWN if key in (None, "") else str(key)


def _counts(document: Mapping[str, Any]) -> dict[str, int]:
    return {
        "users": int(document.get("users") or 0),
        "birth_epoch_day_sum": int(document.get("birth_epoch_day_sum") or 0),
    }


def _split_nationality_gender(key: str) -> tuple[str, str]:
    """``"FI|female"`` -> ``("FI", "female")``; Spark's ``concat_ws`` drops a null part."""
    if "|" in key:
        nationality, _, gender = key.partition("|")
        return nationality or UNKNOWN, gender or UNKNOWN
    return (UNKNOWN, key) if key in ("female", "male") else (key, UNKNOWN)


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # a client without tz_aware returns naive UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def summarise(
    documents: Mapping[str, Iterable[Mapping[str, Any]]],
    domain_count: int,
    read_at: dt.datetime,
    today: dt.date,
) -> dict[str, Any]:
    """The page's snapshot (JSON-ready) from aggregate documents grouped by collection."""
    docs = {name: list(documents.get(name, ())) for name in AGGREGATE_COLLECTIONS}
    nationality_gender: dict[str, dict[str, dict[str, int]]] = {}
    for document in docs[NATIONALITY_GENDER]:
        nationality, gender = _split_nationality_gender(_key(document))
        nationality_gender.setdefault(nationality, {})[gender] = _counts(document)
    totals = [_counts(d) for d in docs[TOTALS]]
    total = (
        totals[0]
        if totals
        else {
            "users": sum(int(d.get("users") or 0) for d in docs[GENDER]),
            "birth_epoch_day_sum": sum(int(d.get("birth_epoch_day_sum") or 0) for d in docs[GENDER]),
        }
    )
    updates = [d["updated_at"] for name in AGGREGATE_COLLECTIONS for d in docs[name] if d.get("updated_at")]
    return {
        "read_at": _iso(read_at),
        "updated_at": _iso(max(updates)) if updates else None,
        "total": total,
        "nationality": {_key(d): _counts(d) for d in docs[NATIONALITY]},
        "gender": {_key(d): _counts(d) for d in docs[GENDER]},
        "nationality_gender": nationality_gender,
        "age_bands": age_bands(docs[BIRTH_MONTHS], today),
        "registrations": sorted(
            [_key(d), int(d.get("users") or 0)] for d in docs[REGISTRATIONS] if _key(d) != UNKNOWN
        ),
        "email_domains": sorted(
            ([_key(d), int(d.get("users") or 0)] for d in docs[EMAIL_DOMAINS]), key=lambda kv: (-kv[1], kv[0])
        ),
        "email_domain_count": int(domain_count),
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

    def _database(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymongo import MongoClient

                timeout_ms = int(self._timeout * 1000)
                self._client = MongoClient(
                    list(self._mongodb.hosts),
                    username=self._credentials.username,
                    password=self._credentials.password,
                    authSource=self._mongodb.auth_source,
                    tls=self._mongodb.tls,
                    appname="bigdataflow-dashboard",
                    serverSelectionTimeoutMS=timeout_ms,
                    connectTimeoutMS=timeout_ms,
                    socketTimeoutMS=timeout_ms,
                    maxPoolSize=8,
                    tz_aware=True,
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
                documents, domain_count = read_documents(self._database(), self._top_domains)
            snapshot = summarise(documents, domain_count, now, now.date())
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
        return Reading(snapshot=snapshot)

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
