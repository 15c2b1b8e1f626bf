"""Synthetic aggregates and a throwaway local FerretDB: for the README screenshot, the
browser tests and the load measurement. Nothing here is personal data: the numbers are
drawn from a seeded generator and the email domains are reserved example names.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bdf import clients
from bdf.config import Credentials, MongoConnection
from dashboard import data
from dashboard.ids import NATIONALITIES
from jobs.aggregates import AGGREGATE_COLLECTIONS, EPOCH

REPO = Path(__file__).resolve().parents[1]
FERRETDB_ENV = "BDF_FERRETDB_BINARY"


# --- Synthetic aggregates --------------------------------------------------------------------
def _split(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` in integer parts proportional to ``weights`` (largest remainders), summing exactly."""
    scale = sum(weights)
    exact = [total * w / scale for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _epoch_day(day: dt.date) -> int:
    return (day - EPOCH).days


def synthetic_aggregates(
    profiles: int = 1_000_000,
    domains: int = 2_000,
    seed: int = 6,
    now: dt.datetime | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Aggregate documents as the stream job would write them after ``profiles`` profiles.

    Counts are consistent across collections (nationality x gender sums to nationality,
    gender and the total). About 21 + 2 + 42 + ``domains`` + 750 + 250 + 1 documents.
    """
    rng = random.Random(seed)  # noqa: S311 - synthetic counts, not secrets
    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    codes = sorted(NATIONALITIES)

    def doc(key: str, users: int, birth_sum: int = 0) -> dict[str, Any]:
        return {"_id": key, "users": users, "birth_epoch_day_sum": birth_sum, "updated_at": now}

    # Birth months: ages 18 to 79, a broad bump around 45; every profile has one.
    months = [(today.year - age, month) for age in range(18, 80) for month in range(1, 13)]
    month_users = _split(profiles, [1.0 + 1.5 * (1 - abs(today.year - y - 45) / 35) for y, _ in months])
    birth_months = [doc(f"{y:04d}-{m:02d}", n) for (y, m), n in zip(months, month_users, strict=True) if n]
    mean_birth = sum(_epoch_day(dt.date(y, m, 15)) * n for (y, m), n in zip(months, month_users, strict=True))
    mean_birth //= max(profiles, 1)

    nat_users = _split(profiles, [rng.uniform(0.4, 1.6) for _ in codes])
    pairs: list[dict[str, Any]] = []
    nationality: list[dict[str, Any]] = []
    gender_sums = {"female": [0, 0], "male": [0, 0]}
    for code, users in zip(codes, nat_users, strict=True):
        shift = rng.randint(-1500, 1500)  # each nationality a few years older or younger
        female, male = _split(users, [rng.uniform(0.47, 0.53), 0.5])
        nat_sum = 0
        for gender, count in (("female", female), ("male", male)):
            birth_sum = count * (mean_birth + shift + (200 if gender == "female" else -200))
            pairs.append(doc(f"{code}|{gender}", count, birth_sum))
            gender_sums[gender][0] += count
            gender_sums[gender][1] += birth_sum
            nat_sum += birth_sum
        nationality.append(doc(code, users, nat_sum))
    total_sum = sum(d["birth_epoch_day_sum"] for d in nationality)

    names = (["example.com", "example.net", "example.org"] + [f"mail{i}.example" for i in range(domains)])[
        : max(domains, 1)
    ]
    domain_users = _split(profiles, [1 / (rank + 1) ** 1.1 for rank in range(len(names))])

    first_year = today.year - 21
    reg_months = [
        (y, m)
        for y in range(first_year, today.year + 1)
        for m in range(1, 13)
        if (y, m) <= (today.year, today.month)
    ]
    # A slowly growing sign-up rate with a yearly rhythm and a little noise.
    reg_users = _split(
        profiles,
        [
            (1.0 + 1.5 * i / len(reg_months))
            * (1.0 + 0.06 * math.sin(2 * math.pi * m / 12))
            * rng.uniform(0.95, 1.05)
            for i, (_, m) in enumerate(reg_months)
        ],
    )

    return {
        data.NATIONALITY: nationality,
        data.GENDER: [doc(g, n, s) for g, (n, s) in gender_sums.items()],
        data.NATIONALITY_GENDER: pairs,
        data.EMAIL_DOMAINS: [doc(d, n) for d, n in zip(names, domain_users, strict=True) if n],
        data.BIRTH_MONTHS: birth_months,
        data.REGISTRATIONS: [
            doc(f"{y:04d}-{m:02d}", n) for (y, m), n in zip(reg_months, reg_users, strict=True)
        ],
        data.TOTALS: [doc("all", profiles, total_sum)],
    }


def seed(db: Any, documents: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Replace the aggregate collections of ``db`` with ``documents``."""
    for name in AGGREGATE_COLLECTIONS:
        db[name].delete_many({})
        if documents.get(name):
            db[name].insert_many([dict(d) for d in documents[name]], ordered=False)


# --- A local FerretDB ------------------------------------------------------------------------
def ferretdb_binary() -> Path | None:
    """``$BDF_FERRETDB_BINARY``, else the one ``make artifacts`` builds into .artifacts/."""
    if os.environ.get(FERRETDB_ENV):
        return Path(os.environ[FERRETDB_ENV])
    found = sorted((REPO / ".artifacts" / "ferretdb").glob("ferretdb-*-linux-amd64"))
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalFerretDB:
    """FerretDB v1 on SQLite in ``workdir``, on 127.0.0.1 only, with authentication on."""

    ADMIN = "admin"

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        listen: Sequence[str] | None = None,
        ready: MongoConnection | None = None,
    ) -> None:
        """``tls``: a certificate and key (PEM) for a second, TLS listener on ``tls_address``.

        ``listen``: FerretDB's ``--listen*`` arguments instead of those (e.g. the role's),
        and ``ready``: the connection that tells it has started, then."""
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.listen = listen
        self.ready = ready
        self.admin_password = os.urandom(12).hex()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tls_address(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def tls_arguments(self) -> list[str]:
        if self.tls is None:
            return []
        certificate, key = self.tls
        return [
            f"--listen-tls={self.tls_address}",
            f"--listen-tls-cert-file={certificate}",
            f"--listen-tls-key-file={key}",
        ]

    def listen_arguments(self) -> list[str]:
        if self.listen is not None:
            return list(self.listen)
        return [f"--listen-addr={self.address}", *self.tls_arguments()]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> LocalFerretDB:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "ferretdb.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                str(self.binary),
                "--handler=sqlite",
                f"--sqlite-url=file:{self.workdir}/",
                f"--state-dir={self.workdir}",
                *self.listen_arguments(),
                "--debug-addr=-",
                "--telemetry=disable",
                "--log-level=WARN",
                "--test-enable-new-auth",
                "--setup-database=admin",
                f"--setup-username={self.ADMIN}",
                f"--setup-password={self.admin_password}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"FerretDB exited with {self._process.returncode}; see {self.workdir}/ferretdb.log"
                )
            try:
                with self.admin_client(self.ready) as client:
                    client.admin.command("ping")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def admin_client(self, connection: MongoConnection | None = None) -> Any:
        """The admin's client, on the clear-text listener unless ``connection`` says otherwise."""
        return clients.mongo_client(
            connection or MongoConnection(hosts=[self.address]),
            Credentials(username=self.ADMIN, password=self.admin_password),
            serverSelectionTimeoutMS=2000,
            tz_aware=True,
        )

    def add_user(self, database: str, username: str, password: str) -> None:
        """A login for ``database``. FerretDB v1 has no roles: MongoDB's "read" is the role's job."""
        with self.admin_client() as client:
            client[database].command("createUser", username, pwd=password, roles=[])

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> LocalFerretDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(
    directory: Path,
    mongo_address: str,
    database: str,
    username: str,
    password: str,
    dashboard: Mapping[str, Any] | None = None,
) -> Path:
    """A dashboard configuration file and its 0600 credentials file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    credentials = directory / "mongodb-dashboard.toml"
    credentials.write_text(f'username = "{username}"\npassword = "{password}"\n', encoding="utf-8")
    credentials.chmod(0o600)
    lines = [
        "[mongodb]",
        f'hosts = ["{mongo_address}"]',
        f'database = "{database}"',
        f'auth_source = "{database}"',
        f'credentials_file = "{credentials}"',
        "",
        "[dashboard]",
        *(f"{key} = {json.dumps(value)}" for key, value in (dashboard or {}).items()),
    ]
    config = directory / "dashboard.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
