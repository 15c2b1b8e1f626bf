"""The dashboard over HTTPS: gunicorn with the options roles/dashboard renders with
bdf_tls_enabled (its bind, --certfile, --keyfile), a throwaway CA made here.

The page is served to a client verifying that CA; a client trusting another CA fails
the handshake, and plain HTTP on the port gets no page: the port is the only one open.
The page needs no MongoDB to load (it reads the aggregates when the browser asks).
"""

from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard import demo
from tests.roles import REPO, exec_start, render
from tests.tls import (
    certificate_authority,
    chromium_trust_flags,
    listening_ports,
    write_pem,
    write_service_tls,
)

pytestmark = [pytest.mark.integration]


def _context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path, subprocess.Popen]]:
    """(https URL, port, CA file, gunicorn) started from the rendered unit's ExecStart."""
    work = tmp_path_factory.mktemp("dashboard-tls")
    ca = certificate_authority("bdf dashboard test CA")
    ca_file, _ = write_pem(work, "ca", ca)
    tls_dir = write_service_tls(work / "tls", ca, ["localhost", "127.0.0.1"])
    port = demo.free_port()
    unit = render(
        work / "render",
        ["dashboard"],
        {"bdf-dashboard.service": ("dashboard/templates/bdf-dashboard.service.j2", {})},
        extra_vars={
            "bdf_tls_enabled": True,
            "bdf_venv": sys.prefix,
            "dashboard_bind_address": "127.0.0.1",
            "dashboard_port": port,
            "dashboard_tls_dir": str(tls_dir),
            "dashboard_workers": 1,
            "dashboard_threads": 2,
        },
    )["bdf-dashboard.service"]
    args = exec_start(unit)
    assert args[0] == f"{sys.prefix}/bin/gunicorn"
    # This interpreter runs gunicorn on this checkout's dashboard package (cwd first on sys.path).
    config = demo.write_config(
        work / "etc", f"127.0.0.1:{demo.free_port()}", "user_profiles", "dashboard", "unused"
    )
    process = subprocess.Popen(  # noqa: S603 - our interpreter, the rendered arguments
        [sys.executable, "-m", "gunicorn", *args[1:]],
        cwd=REPO,
        env={**os.environ, "BDF_CONFIG": str(config)},
    )
    url = f"https://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}"
            try:
                urllib.request.urlopen(url, timeout=5, context=_context(ca_file)).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer over HTTPS"
                time.sleep(0.2)
        yield url, port, ca_file, process
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_gunicorn_serves_the_page_over_tls_verified_by_the_ca(dashboard):
    url, _, ca_file, _ = dashboard
    with urllib.request.urlopen(url, timeout=10, context=_context(ca_file)) as response:  # noqa: S310
        assert response.status == 200
        assert b"<title>BigDataFlow" in response.read()


def test_a_client_trusting_another_ca_fails_the_handshake(dashboard, tmp_path):
    url, _, _, _ = dashboard
    other, _ = write_pem(tmp_path, "other-ca", certificate_authority("another CA"))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(url, timeout=10, context=_context(other))  # noqa: S310


def test_plain_http_on_the_port_gets_no_page(dashboard):
    _, port, _, _ = dashboard
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        with pytest.raises(http.client.RemoteDisconnected, match="closed connection without response"):
            connection.request("GET", "/")
            connection.getresponse()
    finally:
        connection.close()


def test_the_tls_port_is_the_only_one_gunicorn_listens_on(dashboard):
    _, port, _, process = dashboard
    assert listening_ports(process.pid) == {port}


@pytest.mark.browser
def test_chromium_renders_the_page_over_tls_after_the_ca_check(dashboard):
    """What the lab's browser test does with the lab CA (tests/tls.py chromium_trust_flags);
    without the flag Chromium shows its certificate error instead of the page."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if demo.chromium() is None:
        pytest.skip("no chromium")
    url, port, ca_file, _ = dashboard

    def title(flags: list[str]) -> str:
        options = webdriver.ChromeOptions()
        options.binary_location = demo.chromium()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", *flags):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options)
        try:
            driver.get(url)
            time.sleep(2)  # the page's title is static: set by the first response
            return driver.title
        finally:
            driver.quit()

    assert "BigDataFlow" in title(chromium_trust_flags("127.0.0.1", port, ca_file))
    assert "BigDataFlow" not in title([])
