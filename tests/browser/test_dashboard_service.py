"""The dashboard as the systemd unit runs it: gunicorn on ``dashboard.app:server``, config from
``$BDF_CONFIG``, against FerretDB; HTTP only (no browser)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dashboard import demo, ids

pytestmark = [pytest.mark.ferretdb]


@contextmanager
def serving(config: Path, workers: int = 2, threads: int = 4, wait: bool = True) -> Iterator[str]:
    """gunicorn as the unit runs it; ``wait=False`` returns before any worker has booted."""
    port = demo.free_port()
    process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--threads", str(threads), "--no-control-socket", "dashboard.app:server"],
        env={**os.environ, "BDF_CONFIG": str(config)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}"
            try:
                if wait:
                    urllib.request.urlopen(url, timeout=2).close()
                else:  # the port is bound (requests queue until a worker takes them)
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture()
def gunicorn(mongo) -> Iterator[str]:
    with serving(mongo.config) as url:
        yield url


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return response.status, response.read()


def refresh(url: str) -> dict[str, Any]:
    """Call the page's refresh callback the way the browser does; returns its outputs by id."""
    _, body = get(f"{url}/_dash-dependencies")
    callback = next(
        c for c in json.loads(body) if c["inputs"] == [{"id": ids.INTERVAL, "property": "n_intervals"}]
    )
    outputs = [
        dict(zip(("id", "property"), o.rsplit(".", 1), strict=True))
        for o in callback["output"][2:-2].split("...")
    ]
    payload = {
        "output": callback["output"],
        "outputs": outputs,
        "inputs": [{"id": ids.INTERVAL, "property": "n_intervals", "value": 0}],
        "changedPropIds": [f"{ids.INTERVAL}.n_intervals"],
        "state": [{"id": ids.SNAPSHOT, "property": "data", "value": None}],
    }
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        f"{url}/_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        assert response.status == 200
        return {key: value for key, value in json.loads(response.read())["response"].items()}


def test_gunicorn_serves_the_page_its_assets_and_the_aggregates(gunicorn, mongo) -> None:
    demo.seed(mongo.db, demo.synthetic_aggregates(profiles=1234, domains=7))

    status, page = get(gunicorn)
    assert status == 200
    assert b"<title>BigDataFlow" in page
    status, topojson = get(f"{gunicorn}/assets/topojson/world_110m.json")
    assert status == 200
    assert json.loads(topojson)["type"] == "Topology"
    assert get(f"{gunicorn}/assets/style.css")[0] == 200

    outputs = refresh(gunicorn)
    assert outputs[ids.SNAPSHOT]["data"]["total"]["users"] == 1234
    assert outputs[ids.BANNER]["className"] == "banner hidden"


def test_gunicorn_keeps_serving_when_mongodb_is_down_and_says_so(gunicorn, mongo) -> None:
    mongo.proxy.refuse()

    assert get(gunicorn)[0] == 200
    outputs = refresh(gunicorn)
    assert ids.SNAPSHOT not in outputs  # nothing to replace the page's last data with
    assert outputs[ids.BANNER]["children"].startswith("Cannot reach MongoDB")
    assert outputs[ids.BANNER]["className"] == "banner banner-error"


def test_a_fresh_worker_serves_every_script_to_parallel_first_requests(mongo) -> None:
    """A browser fetches the page's scripts in parallel, maybe as a worker's first requests.

    Dash prepares itself on its first request; without the app's warm-up, the other
    threads' requests meanwhile were refused ("not a registered library").
    """
    from dashboard.app import create_app

    page = create_app(mongo.settings).server.test_client().get("/").get_data(as_text=True)
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert len(scripts) > 5
    with serving(mongo.config, workers=1, threads=8, wait=False) as url, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda src: get(f"{url}{src}")[0], scripts))
    assert statuses == [200] * len(scripts)
