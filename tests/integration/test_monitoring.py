"""Monitoring on the deployed lab (LAB=1): Prometheus on the monitoring host scrapes every
host's node_exporter over HTTPS, its configuration passes promtool on the host, and a
crash loop fires the restart alert, which resolves once the loop is gone.

The crash loop is a throwaway unit (bdf-crashloop-test.service, /bin/false restarted
every 2 s, matched by node_exporter's unit list): the real stream job is never disturbed.
Prometheus is reached like an operator reaches it: HTTPS verified against the deployment
CA, the admin login from .secrets/<deployment>/prometheus-admin.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
import requests

from tests.lab import CA_FILE, HOSTS, LAB_ONLY, STREAM_HOST, TLS, group_hosts, secret, ssh
from tests.polling import eventually

pytestmark = LAB_ONLY

MONITORING_HOST = group_hosts("monitoring")[0]
PROMETHEUS_URL = f"{'https' if TLS else 'http'}://{HOSTS[MONITORING_HOST]}:9090"
CRASH_UNIT = "bdf-crashloop-test.service"
CRASH_UNIT_FILE = f"/etc/systemd/system/{CRASH_UNIT}"


def _api(path: str, **params: str) -> dict:
    response = requests.get(
        f"{PROMETHEUS_URL}/api/v1/{path}",
        params=params,
        auth=("admin", secret("prometheus-admin")),
        verify=str(CA_FILE) if TLS else True,
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["data"]


def _node_targets() -> dict[str, str]:
    """instance -> health of the node job's active targets."""
    targets = _api("targets", state="active")["activeTargets"]
    return {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "node"}


def _restart_alerts(state: str) -> list[dict]:
    return [
        alert
        for alert in _api("alerts")["alerts"]
        if alert["labels"]["alertname"] == "BdfUnitRestarting"
        and alert["labels"].get("name") == CRASH_UNIT
        and alert["state"] == state
    ]


def test_prometheus_refuses_requests_without_the_login():
    response = requests.get(
        f"{PROMETHEUS_URL}/api/v1/targets", verify=str(CA_FILE) if TLS else True, timeout=10
    )
    assert response.status_code == 401


def test_prometheus_reports_every_inventory_hosts_node_exporter_up():
    expected = dict.fromkeys(HOSTS, "up")
    eventually(
        lambda: _node_targets() == expected,
        timeout=120,
        what=f"every host's node_exporter up in {PROMETHEUS_URL}/api/v1/targets",
        explain=lambda: str(_node_targets()),
    )


def test_prometheus_configuration_passes_promtool_on_the_host():
    result = ssh(MONITORING_HOST, "promtool check config /etc/prometheus/bigdataflow.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture
def crash_loop() -> Iterator[None]:
    """The throwaway crash-looping unit on the stream job's host, removed afterwards."""
    unit = textwrap.dedent("""\
        [Unit]
        Description=BigDataFlow monitoring test: exits at once, restarted again and again
        StartLimitIntervalSec=0

        [Service]
        ExecStart=/bin/false
        Restart=always
        RestartSec=2
    """)
    install = f"cat > {CRASH_UNIT_FILE} <<'EOF'\n{unit}EOF\n"
    result = ssh(STREAM_HOST, install + f"systemctl daemon-reload && systemctl start {CRASH_UNIT}")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield
    finally:
        ssh(STREAM_HOST, f"systemctl stop {CRASH_UNIT}; rm -f {CRASH_UNIT_FILE}; systemctl daemon-reload")


def test_a_crash_loop_fires_the_restart_alert_which_resolves_when_it_ends(crash_loop):
    def restarts() -> str:
        return ssh(STREAM_HOST, f"systemctl show -p NRestarts --value {CRASH_UNIT}").stdout.strip()

    eventually(
        lambda: _restart_alerts("firing"),
        timeout=240,
        what=f"BdfUnitRestarting firing for {CRASH_UNIT} on {STREAM_HOST}",
        explain=lambda: f"NRestarts {restarts()}; alerts {_api('alerts')['alerts']}",
    )
    ssh(STREAM_HOST, f"systemctl stop {CRASH_UNIT}; rm -f {CRASH_UNIT_FILE}; systemctl daemon-reload")
    # It resolves once no restart is left in the last prometheus_alert_restarts_recent (5m).
    eventually(
        lambda: not _restart_alerts("firing") and not _restart_alerts("pending"),
        timeout=420,
        what=f"BdfUnitRestarting for {CRASH_UNIT} resolved once the unit is gone",
        explain=lambda: str(_api("alerts")["alerts"]),
    )
