"""The README's screenshot and the page-load measurement, against synthetic aggregates.

    python -m dashboard.screenshot --output docs/dashboard.png
    python -m dashboard.screenshot --measure 5          # timings as JSON on stdout

Starts a throwaway FerretDB (the binary ``make artifacts`` builds, or
``$BDF_FERRETDB_BINARY``) in a temporary folder, seeds it with aggregates equivalent to
``--profiles`` profiles (synthetic counts, no personal data), serves the dashboard with
gunicorn exactly as the systemd unit does, and drives Debian's headless Chromium
through chromedriver. Everything listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from bdf.config import load_settings
from bdf.logs import setup_logging
from dashboard import demo
from dashboard.data import AggregateSource

log = logging.getLogger(__name__)

DATABASE = "user_profiles"
READER = "dashboard"

# Installed before the page's own scripts: notes when the page first shows every number
# and every chart drawn (the map once its outlines are loaded), relative to navigation start.
READY_PROBE = """
window.__bdfReady = null;
window.__bdfNumbers = null;
(function probe() {
  const users = document.getElementById('kpi-users');
  const graphs = Array.from(document.querySelectorAll('.js-plotly-plot'));
  const drawn = graphs.length === 6 && graphs.every(g => g._fullLayout && g.data && g.data.length > 0
      && g.data[0].type !== undefined && !(g.layout.annotations || []).length);
  const map = document.querySelectorAll('#graph-map path.choroplethlocation').length > 0;
  if (users && users.textContent !== '\\u2013' && !window.__bdfNumbers) {
    window.__bdfNumbers = performance.now();
  }
  if (users && users.textContent !== '\\u2013' && drawn && map) {
    window.__bdfReady = performance.now();
  } else {
    requestAnimationFrame(probe);
  }
})();
"""


@contextmanager
def seeded_dashboard(workdir: Path, profiles: int, domains: int, workers: int = 2) -> Iterator[str]:
    """A FerretDB with synthetic aggregates and gunicorn serving the dashboard; yields its URL."""
    binary = demo.ferretdb_binary()
    if binary is None or not binary.exists():
        raise click.ClickException(f"no FerretDB binary: run `make artifacts` or set {demo.FERRETDB_ENV}")
    with demo.LocalFerretDB(binary, workdir / "ferretdb") as ferret:
        password = os.urandom(12).hex()
        ferret.add_user(DATABASE, READER, password)
        with ferret.admin_client() as client:
            demo.seed(client[DATABASE], demo.synthetic_aggregates(profiles, domains))
        config = demo.write_config(
            workdir / "etc", ferret.address, DATABASE, READER, password, {"refresh_seconds": 60}
        )
        port = demo.free_port()
        gunicorn = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                "4",
                "--log-level",
                "warning",
                "--no-control-socket",
                "dashboard.app:server",
            ],
            env={**os.environ, "BDF_CONFIG": str(config)},
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            _wait_http(url, gunicorn)
            yield url
        finally:
            gunicorn.terminate()
            gunicorn.wait(timeout=15)


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise click.ClickException(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own 127.0.0.1 URL
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def browser(width: int, height: int) -> Any:
    from selenium import webdriver

    chromium = demo.chromium()
    if chromium is None:
        raise click.ClickException("no Chromium: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options)


def wait_ready(driver: Any, timeout: float = 30.0) -> float:
    """Milliseconds from navigation start to everything drawn (the probe's mark)."""
    deadline = time.monotonic() + timeout
    while True:
        ready = driver.execute_script("return window.__bdfReady;")
        if ready is not None:
            return float(ready)
        if time.monotonic() > deadline:
            raise click.ClickException("the page did not finish drawing in time")
        time.sleep(0.05)


def load_page(driver: Any, url: str) -> dict[str, float]:
    driver.get(url)
    ready = wait_ready(driver)
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "const calls = performance.getEntriesByType('resource')"
        "  .filter(r => r.name.includes('_dash-update-component'));"
        "const first = calls.length ? Math.min(...calls.map(r => r.startTime)) : 0;"
        "const last = calls.length ? Math.max(...calls.map(r => r.responseEnd)) : 0;"
        "return {html: n.responseEnd, dom: n.domContentLoadedEventEnd, load: n.loadEventEnd,"
        "        first_callback_start: first, last_callback_end: last,"
        "        callbacks_total: calls.reduce((s, r) => s + r.duration, 0)};"
    )
    numbers = driver.execute_script("return window.__bdfNumbers;")
    return {
        "numbers_ms": round(float(numbers), 1),
        "drawn_ms": round(ready, 1),
        **{f"{k}_ms": round(v, 1) for k, v in timing.items()},
    }


def measure(url: str, loads: int) -> dict[str, Any]:
    """Cold load (empty cache), then ``loads`` warm loads; plus the server-side read alone."""
    driver = browser(1400, 1000)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": READY_PROBE})
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        cold = load_page(driver, url)
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
        load_page(driver, url)  # fills the cache
        warm = [load_page(driver, url) for _ in range(loads)]
    finally:
        driver.quit()
    return {
        "cold": cold,
        "warm_median": {key: statistics.median(run[key] for run in warm) for key in warm[0]},
        "warm_max_drawn_ms": max(run["drawn_ms"] for run in warm),
    }


def time_reads(config: Path, reads: int) -> dict[str, float]:
    source = AggregateSource(load_settings(config).mongodb)  # type: ignore[arg-type]
    source.read_now()  # connect and authenticate once
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        reading = source.read_now()
        times.append((time.perf_counter() - started) * 1000)
        assert reading.snapshot is not None, reading.problem
    source.close()
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


@click.command()
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG screenshot here."
)
@click.option(
    "--measure", "loads", type=int, default=0, help="Time this many warm page loads (and a cold one)."
)
@click.option(
    "--profiles", type=int, default=1_000_000, show_default=True, help="Profiles the aggregates stand for."
)
@click.option("--domains", type=int, default=2_000, show_default=True, help="Distinct email domains.")
@click.option("--width", type=int, default=1400, show_default=True)
def main(output: Path | None, loads: int, profiles: int, domains: int, width: int) -> None:
    """Screenshot the dashboard and/or measure its page load, on synthetic aggregates."""
    setup_logging()
    if output is None and not loads:
        raise click.UsageError("give --output PATH, --measure N, or both")
    with (
        tempfile.TemporaryDirectory(prefix="bdf-dashboard-") as tmp,
        seeded_dashboard(Path(tmp), profiles, domains) as url,
    ):
        if loads:
            results = {
                "profiles": profiles,
                "email_domains": domains,
                "read_aggregates": time_reads(Path(tmp) / "etc" / "dashboard.toml", 20),
                "page": measure(url, loads),
            }
            click.echo(json.dumps(results, indent=2))
        if output is not None:
            driver = browser(width, 1000)
            try:
                driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": READY_PROBE})
                driver.get(url)
                wait_ready(driver)
                height = driver.execute_script("return document.documentElement.scrollHeight;")
                driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
                time.sleep(1.0)  # let the responsive charts settle at the new size
                png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_bytes(base64.b64decode(png))
            finally:
                driver.quit()
            click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
