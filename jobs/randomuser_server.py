"""Offline stand-in for randomuser.me API 1.4, so the producer's HTTP path runs without internet.

Serves ``GET /api/`` and ``GET /api/1.4/`` with the real parameters and response shape,
including the quirks in docs/randomuser-format.md. Users are assembled from value pools
built once at start (see randomuser_data), so a page of 5000 costs milliseconds.

Choices where the real API is lenient: invalid ``results``, ``page``, ``nat``, ``gender``
or ``format`` answer HTTP 400 ``{"error": ...}`` instead of silently falling back, so a
misconfigured producer fails loudly. Unknown ``inc``/``exc`` field names are ignored, as
the real API does.

Reproducibility: the users depend on (seed, page, nat filter, gender) and the pinned Faker
version only; ``results=n`` returns the first n users of the page, so a short last batch
is a prefix of a full one. Only the ``age`` fields follow the clock, as in the real API.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import logging
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import orjson

from bdf.logs import setup_logging
from jobs.randomuser_data import (
    ADJECTIVES,
    ANIMALS,
    NATIONALITIES,
    TIMEZONES,
    WEAK_SECRETS,
    Pool,
    build_pools,
)

log = logging.getLogger("bdf.randomuser")

API_VERSION = "1.4"
MAX_RESULTS = 5000
FIELDS = ("gender", "name", "location", "email", "login", "dob", "registered",
          "phone", "cell", "id", "picture", "nat")  # fmt: skip
FAULT_KINDS = ("500", "503", "429", "error", "delay", "truncate")


def _days(first_year: int, end_year: int) -> tuple[tuple[str, int, tuple[int, int]], ...]:
    """Every day of [first_year, end_year) as ("YYYY-MM-DD", year, (month, day)).

    Picking a day from a table and adding a time of day skips a gmtime() per date.
    """
    first, end = dt.date(first_year, 1, 1).toordinal(), dt.date(end_year, 1, 1).toordinal()
    days = (dt.date.fromordinal(n) for n in range(first, end))
    return tuple((d.isoformat(), d.year, (d.month, d.day)) for d in days)


_BIRTH_DAYS = _days(1944, 2005)
_REGISTRATION_DAYS = _days(2002, 2023)
_REGISTRATION_DAY_NAMES = [day for day, _, _ in _REGISTRATION_DAYS]
_MS_PER_DAY = 86_400_000
_PICTURE = "https://randomuser.me/api/portraits/"


class QueryError(ValueError):
    """A request the API would refuse; answered as ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Query:
    """A validated API request."""

    results: int = 1
    page: int = 1
    seed: str = ""
    nats: tuple[str, ...] = ()
    gender: str | None = None
    inc: tuple[str, ...] = ()
    exc: tuple[str, ...] = ()
    noinfo: bool = False


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be an integer between {low} and {high}")
    return value


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_query(params: Mapping[str, str]) -> Query:
    """Validate query parameters (first value of each) the way the service answers them."""
    fmt = params.get("format", "json").lower() or "json"
    if fmt != "json":
        raise QueryError(f"format {fmt!r} is not served offline; only json")
    nats = tuple(n.upper() for n in _names(params.get("nat", "")))
    unknown = [n for n in nats if n not in NATIONALITIES]
    if unknown:
        raise QueryError(f"unknown nat {','.join(unknown)}; API 1.4 serves {','.join(NATIONALITIES)}")
    gender = params.get("gender", "").lower() or None
    if gender not in (None, "male", "female"):
        raise QueryError("gender must be male or female")
    return Query(
        results=_int(params, "results", 1, 1, MAX_RESULTS),
        page=_int(params, "page", 1, 1, 10**9),
        seed=params.get("seed", "") or secrets.token_hex(8),  # like the API: report a fresh seed
        nats=tuple(dict.fromkeys(nats)),
        gender=gender,
        inc=_names(params.get("inc", "").lower()),
        exc=_names(params.get("exc", "").lower()),
        noinfo="noinfo" in params,
    )


def _date(
    r: Callable[[], float],
    days: Sequence[tuple[str, int, tuple[int, int]]],
    now: time.struct_time,
    first: int = 0,
) -> dict[str, Any]:
    """A random instant among ``days[first:]``: ISO-8601 UTC with milliseconds and Z, and whole
    years at ``now``."""
    day, year, month_day = days[first + int(r() * (len(days) - first))]
    seconds, ms = divmod(int(r() * _MS_PER_DAY), 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    age = now.tm_year - year - ((now.tm_mon, now.tm_mday) < month_day)
    return {"date": f"{day}T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z", "age": age}


def _user(rng: random.Random, pool: Pool, gender: str, now: time.struct_time) -> dict[str, Any]:
    # seq[int(random() * len)] costs about half of rng.choice/randrange; this is the hot path.
    r = rng.random

    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(r() * len(seq))]

    male = gender == "male"
    spec = pool.spec
    first, first_ascii = pick(pool.male if male else pool.female)
    last, last_ascii = pick(pool.last)
    offset, description = pick(TIMEZONES)
    password = pick(WEAK_SECRETS)
    # 6 random bytes -> 8 base64 characters; altchars keep the salt alphanumeric like the API's.
    salt = base64.b64encode(rng.getrandbits(48).to_bytes(6, "big"), b"xQ").decode()
    salted = (salt + password).encode()
    h = f"{rng.getrandbits(128):032x}"
    uuid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
    birth = _date(r, _BIRTH_DAYS, now)
    if spec.id_value is None or r() < 0.02:
        national_id: dict[str, str | None] = {"name": "", "value": None}
    else:
        national_id = {"name": spec.id_name, "value": spec.id_value(rng)}
    folder = "men" if male else "women"
    picture = int(r() * 100)
    domain = pick(pool.domains)
    style = int(r() * 4)
    if style == 0 or domain == "example.com":  # the real API's form
        email = f"{first_ascii}.{last_ascii}@{domain}"
    elif style == 1:
        email = f"{first_ascii}{last_ascii}{int(r() * 100)}@{domain}"
    elif style == 2:
        email = f"{first_ascii[0]}{last_ascii}@{domain}"
    else:
        email = f"{first_ascii}_{last_ascii}{50 + int(r() * 50)}@{domain}"
    return {
        "gender": gender,
        "name": {"title": pick(spec.titles[0 if male else 1]), "first": first, "last": last},
        "location": {
            "street": {"number": 1 + int(r() * 9999), "name": pick(pool.streets)},
            "city": pick(pool.cities),
            "state": pick(pool.states),
            "country": spec.country,
            "postcode": pick(pool.postcodes),
            "coordinates": {"latitude": f"{r() * 180 - 90:.4f}", "longitude": f"{r() * 360 - 180:.4f}"},
            "timezone": {"offset": offset, "description": description},
        },
        "email": email,
        "login": {
            "uuid": uuid,
            "username": f"{pick(ADJECTIVES)}{pick(ANIMALS)}{100 + int(r() * 900)}",
            "password": password,
            "salt": salt,
            "md5": hashlib.md5(salted, usedforsecurity=False).hexdigest(),
            "sha1": hashlib.sha1(salted, usedforsecurity=False).hexdigest(),
            "sha256": hashlib.sha256(salted).hexdigest(),
        },
        "dob": birth,
        # After the day of birth: the input contract refuses a registration before it.
        "registered": _date(
            r, _REGISTRATION_DAYS, now, bisect.bisect_right(_REGISTRATION_DAY_NAMES, birth["date"])
        ),
        "phone": pick(pool.phones),
        "cell": pick(pool.phones),
        "id": national_id,
        "picture": {
            "large": f"{_PICTURE}{folder}/{picture}.jpg",
            "medium": f"{_PICTURE}med/{folder}/{picture}.jpg",
            "thumbnail": f"{_PICTURE}thumb/{folder}/{picture}.jpg",
        },
        "nat": pool.nat,
    }


def generate_users(
    count: int,
    seed: str,
    page: int = 1,
    nats: Sequence[str] = (),
    gender: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The first ``count`` users of (seed, page) as the API returns them, in process.

    ``nats`` are API codes (``("FI", "TR")``; empty: all). Same arguments, same users,
    except ``age`` fields, which are whole years at ``now`` (default: the clock).
    """
    nats = tuple(n.upper() for n in nats)
    pools = build_pools()
    chosen = [pools[n] for n in (nats or NATIONALITIES)]
    # A str seed is hashed with SHA-512 by random.Random: stable across processes and runs.
    rng = random.Random(f"{seed}|{page}|{','.join(nats)}|{gender or ''}")  # noqa: S311 - synthetic data
    clock = time.gmtime(time.time() if now is None else now)
    genders = ("male", "female")
    r = rng.random
    return [
        _user(rng, chosen[int(r() * len(chosen))], gender or genders[r() < 0.5], clock) for _ in range(count)
    ]


def generate_page(query: Query, now: float | None = None) -> dict[str, Any]:
    """The full response body (``results`` + ``info``) for a validated query."""
    users = generate_users(query.results, query.seed, query.page, query.nats, query.gender, now)
    keep = [f for f in FIELDS if f in query.inc] if query.inc else [f for f in FIELDS if f not in query.exc]
    if len(keep) != len(FIELDS):
        users = [{f: user[f] for f in keep} for user in users]
    body: dict[str, Any] = {"results": users}
    if not query.noinfo:
        body["info"] = {
            "seed": query.seed,
            "results": query.results,
            "page": query.page,
            "version": API_VERSION,
        }
    return body


def respond(path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for a GET; errors are ``{"error": ...}`` like the real API."""
    route = path.rstrip("/")
    try:
        if route not in ("/api", f"/api/{API_VERSION}"):
            if route.startswith("/api/"):
                raise QueryError(f"only API version {API_VERSION} is served offline", 404)
            raise QueryError("not found; use /api/ or /api/1.4/", 404)
        return 200, orjson.dumps(generate_page(parse_query(params)))
    except QueryError as exc:
        return exc.status, orjson.dumps({"error": str(exc)})


@dataclass
class Faults:
    """Make some requests fail so clients' retries can be tested over real HTTP.

    The first ``first`` requests fail, cycling through ``kinds``; after that each request
    fails with probability ``rate``. Kinds: 500/503 (server error), 429 (with Retry-After),
    error (HTTP 200 carrying ``{"error": ...}``, as the real API does when overloaded),
    delay (answer after ``delay_seconds``), truncate (close the connection mid-body).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    first: int = 0
    delay_seconds: float = 2.0
    retry_after_seconds: int = 1
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    injected: dict[str, int] = field(init=False, default_factory=dict)  # kind -> count, for checks
    _served: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be among {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        self._rng = random.Random(self.seed)  # noqa: S311 - test tooling

    def next(self) -> str | None:
        """The fault for the next request, or None to answer normally."""
        with self._lock:
            n, self._served = self._served, self._served + 1
            if n < self.first:
                kind = self.kinds[n % len(self.kinds)]
            elif self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
            else:
                return None
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind


class RandomUserServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer carrying the fault plan and an optional per-request hook."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        faults: Faults | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        build_pools()  # pay the Faker cost before the first request
        self.faults = faults
        self.on_request = on_request
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:8080/api/``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/api/"


@contextmanager
def running(
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    on_request: Callable[[str], None] | None = None,
) -> Iterator[RandomUserServer]:
    """A server answering in a background thread (port 0: any free port), for tests and benchmarks."""
    server = RandomUserServer((host, port), faults=faults, on_request=on_request)
    # A short poll interval makes shutdown() quick; tests start many servers.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="randomuser", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: RandomUserServer
    protocol_version = "HTTP/1.1"  # keep-alive: the producer reuses its connection
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms stall

    def do_GET(self) -> None:
        if self.server.on_request:
            self.server.on_request(self.path)
        split = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        fault = self.server.faults.next() if self.server.faults else None
        if fault:
            log.debug("injecting fault %s", fault)
        if fault in ("500", "503"):
            self._send(int(fault), orjson.dumps({"error": "injected server error"}))
            return
        if fault == "429":
            retry = str(self.server.faults.retry_after_seconds)
            self._send(429, orjson.dumps({"error": "too many requests"}), {"Retry-After": retry})
            return
        if fault == "error":
            self._send(200, orjson.dumps({"error": "Uh oh, something has gone wrong (injected)"}))
            return
        if fault == "delay":
            time.sleep(self.server.faults.delay_seconds)
        status, body = respond(split.path, params)
        if fault == "truncate":
            self._send(status, body[: len(body) // 2], {"Content-Length": str(len(body))})
            self.close_connection = True
            return
        self._send(status, body)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(body)),
            **(headers or {}),
        }
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away before the answer was sent")
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _parse_kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    kinds = _names(value.lower())
    if not kinds or set(kinds) - set(FAULT_KINDS):
        raise click.BadParameter(f"comma list of {', '.join(FAULT_KINDS)}")
    return kinds


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 = any free port."
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of requests answered with an injected fault (testing only).",
)
@click.option(
    "--fault-kinds",
    default=",".join(FAULT_KINDS),
    show_default=True,
    callback=_parse_kinds,
    help="Which faults to inject.",
)
@click.option(
    "--fault-delay",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a 'delay' fault waits before answering.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def main(
    host: str, port: int, fault_rate: float, fault_kinds: tuple[str, ...], fault_delay: float, verbose: bool
) -> None:
    """Serve the randomuser.me API 1.4 shape offline at /api/ and /api/1.4/."""
    setup_logging(verbose)
    faults = Faults(rate=fault_rate, kinds=fault_kinds, delay_seconds=fault_delay) if fault_rate else None
    server = RandomUserServer((host, port), faults=faults)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # leaves serve_forever; systemd sends SIGTERM

    signal.signal(signal.SIGTERM, stop)
    log.info("serving randomuser API %s on %s (fault rate %s)", API_VERSION, server.url, fault_rate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
