"""A real MongoDB-compatible server (FerretDB), a TCP proxy to break it, and headless Chromium.

- ``ferretdb``: one FerretDB v1 (SQLite backend, authentication on) for the session, on
  a free 127.0.0.1 port in a temporary folder; skipped with the reason when the binary
  (``make artifacts``, or ``$BDF_FERRETDB_BINARY``) is absent.
- ``mongo``: per test, a fresh database, a login for the dashboard (a 0600 credentials
  file, as the role renders), a proxy in front of FerretDB that a test can make refuse
  connections or answer slowly, and the dashboard's settings pointing at that proxy.
- ``pytest_setup_options``: the Chrome options dash_duo uses: Debian's chromium,
  headless, no sandbox (the tests run as root).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bdf.config import Settings, load_settings
from dashboard import demo
from dashboard.data import AggregateSource

READER = "dashboard"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium with dash_duo (chromium, chromium-driver)"
    )
    config.addinivalue_line(
        "markers", "ferretdb: starts a local FerretDB (the binary `make artifacts` builds)"
    )


@pytest.hookimpl(optionalhook=True)  # dash's hook: declared only when dash[testing] is installed
def pytest_setup_options() -> Any:
    from selenium.webdriver.chrome.options import Options

    options = Options()
    chromium = demo.chromium()
    if chromium:
        options.binary_location = chromium
    options.add_argument("--headless=new")
    options.add_argument("--window-size=1400,1000")
    return options


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.LocalFerretDB]:
    binary = demo.ferretdb_binary()
    if binary is None or not binary.exists():
        pytest.skip(f"no FerretDB binary: run `make artifacts` or set {demo.FERRETDB_ENV}")
    with demo.LocalFerretDB(binary, tmp_path_factory.mktemp("ferretdb")) as server:
        yield server


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 that forwards, refuses (closes at once) or delays every chunk."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode = "forward"
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self) -> None:
        self.mode, self.delay = "forward", 0.0

    def refuse(self) -> None:
        """Like a server that went away: open connections drop, new ones close at once."""
        self.mode = "refuse"
        self._drop_all()

    def slow(self, delay: float) -> None:
        self.mode, self.delay = "forward", delay

    def _drop_all(self) -> None:
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=2)
        self._drop_all()


@dataclass
class Mongo:
    db: Any  # the test's database, through an admin connection (for seeding)
    proxy: FaultyProxy
    settings: Settings
    config: Path

    def source(self) -> AggregateSource:
        assert self.settings.mongodb is not None
        dashboard = self.settings.dashboard
        return AggregateSource(
            self.settings.mongodb,
            timeout_seconds=dashboard.mongodb_timeout_seconds,
            top_domains=dashboard.top_email_domains,
            reuse_seconds=dashboard.refresh_seconds / 2,
        )


@pytest.fixture()
def mongo(ferretdb: demo.LocalFerretDB, tmp_path: Path) -> Iterator[Mongo]:
    database = f"dash_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    ferretdb.add_user(database, READER, password)
    proxy = FaultyProxy(ferretdb.port)
    config = demo.write_config(
        tmp_path / "etc",
        proxy.address,
        database,
        READER,
        password,
        {"refresh_seconds": 2, "mongodb_timeout_seconds": 1.0, "top_email_domains": 5},
    )
    client = ferretdb.admin_client()
    try:
        yield Mongo(client[database], proxy, load_settings(config), config)
    finally:
        proxy.close()
        client.drop_database(database)
        client.close()
