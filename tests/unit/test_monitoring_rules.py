"""roles/prometheus and roles/node_exporter as Ansible renders them: the scrape
configuration, the alert rules and the web configuration pass promtool's checks (the
role validates them with the same commands when it writes them), the alert rules pass
their `promtool test rules` tests (tests/unit/promtool/alerts_test.yml), and node_exporter
reports exactly the project's units.

promtool is Debian's (package prometheus, deps/debian-12.txt group `promtool`): without
it these tests skip, except under CI, where they fail.

The lab test (tests/integration/test_monitoring.py) checks a real deploy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.roles import ADDRESS, HOST, exec_start, render
from tests.tls import certificate_authority, write_service_tls

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yml"
# A bcrypt hash (of "secret"), standing for the one the role computes on the host.
ADMIN_HASH = "$2b$12$0123456789abcdef01234eICsMURr0XEkIidfSTcD0DxJGMoeOP1G"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is missing: make deps DEPS=promtool (Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run these tests")
        pytest.skip(message)
    return path


def _promtool(promtool: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - promtool, fixed arguments
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered files in one directory (one ansible-playbook run), the promtool tests
    beside the rules; the configuration names the rules and certificates there."""
    work = tmp_path_factory.mktemp("monitoring")
    tls_dir = write_service_tls(work / "tls", certificate_authority("bdf monitoring test CA"), [ADDRESS])
    out = work / "render" / "rendered"  # where render() writes them
    render(
        work / "render",
        ["node_exporter", "prometheus", "stream_job", "dashboard", "producer"],
        {
            "prometheus.yml": ("prometheus/templates/bigdataflow.yml.j2", {}),
            "rules.yml": ("prometheus/templates/bigdataflow-rules.yml.j2", {}),
            "web.yml": ("prometheus/templates/bigdataflow-web.yml.j2", {}),
            "prometheus.conf": ("prometheus/templates/prometheus.conf.j2", {}),
            "node-exporter.conf": ("node_exporter/templates/node-exporter.conf.j2", {}),
            "node-exporter-web.yml": ("node_exporter/templates/node-exporter-web.yml.j2", {}),
            "node-exporter.nft": ("node_exporter/templates/node-exporter.nft.j2", {}),
        },
        values={
            "units.json": "[stream_unit, dashboard_unit, producer_unit, prometheus_stream_unit]",
            "include.json": "node_exporter_unit_include",
        },
        extra_vars={
            "bdf_tls_enabled": True,
            "prometheus_rules_file": str(out / "rules.yml"),
            "prometheus_tls_dir": str(tls_dir),
            "prometheus_admin_hash": {"stdout": ADMIN_HASH},
        },
    )
    shutil.copy(PROMTOOL_TESTS, out / PROMTOOL_TESTS.name)
    return out


def test_rendered_scrape_config_passes_promtool_check_config(promtool, rendered):
    result = _promtool(promtool, "check", "config", rendered / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rendered_alert_rules_pass_promtool_check_rules(promtool, rendered):
    result = _promtool(promtool, "check", "rules", rendered / "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_alerts_fire_on_crash_loop_disk_and_target_down_and_not_on_healthy_series(promtool, rendered):
    result = _promtool(promtool, "test", "rules", PROMTOOL_TESTS.name, cwd=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rendered_web_config_passes_promtool_check_web_config(promtool, rendered):
    result = _promtool(promtool, "check", "web-config", rendered / "web.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    web = yaml.safe_load((rendered / "web.yml").read_text())
    assert web["basic_auth_users"] == {"admin": ADMIN_HASH}
    assert web["tls_server_config"]["min_version"] == "TLS12"


def test_every_alert_has_a_summary_and_a_description(rendered):
    rules = yaml.safe_load((rendered / "rules.yml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} == {
        "BdfTargetDown",
        "BdfStreamJobDown",
        "BdfUnitRestarting",
        "BdfFilesystemFull",
        "BdfUnitFailed",
    }
    assert [rule["alert"] for rule in rules if set(rule["annotations"]) != {"summary", "description"}] == []


def test_every_host_is_scraped_over_https_verified_against_the_deployment_ca(rendered):
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"node", "prometheus"}
    for job in jobs.values():
        assert job["scheme"] == "https"
        assert job["tls_config"]["ca_file"].endswith("/ca.crt")
        assert job["tls_config"]["insecure_skip_verify"] is False
    assert jobs["node"]["static_configs"] == [{"targets": [f"{ADDRESS}:9100"], "labels": {"instance": HOST}}]
    assert jobs["prometheus"]["basic_auth"]["password_file"] == "/etc/prometheus/admin-password"
    assert "password" not in jobs["prometheus"]["basic_auth"]


@pytest.mark.parametrize(
    ("drop_in", "binary", "port", "flags"),
    [
        (
            "prometheus.conf",
            "/usr/bin/prometheus",
            9090,
            ["--web.config.file=/etc/prometheus/bigdataflow-web.yml", "--storage.tsdb.retention.time=15d"],
        ),
        (
            "node-exporter.conf",
            "/usr/bin/prometheus-node-exporter",
            9100,
            [
                "--web.config.file=/etc/prometheus/node-exporter-web.yml",
                "--collector.systemd",
                "--collector.systemd.enable-restarts-metrics",
            ],
        ),
    ],
)
def test_servers_listen_on_the_hosts_address_with_their_web_config_and_flags(
    rendered, drop_in, binary, port, flags
):
    # The drop-in's ExecStart after the empty one that clears the package's.
    args = exec_start((rendered / drop_in).read_text().replace("ExecStart=\n", ""))
    assert args[0] == binary
    assert f"--web.listen-address={ADDRESS}:{port}" in args
    assert [flag for flag in flags if flag not in args] == []
    # systemd would read these in ExecStart (escapes, variables, specifiers).
    assert not set("\\$%") & set(" ".join(args))


def test_node_exporter_serves_the_host_certificate(rendered):
    web = yaml.safe_load((rendered / "node-exporter-web.yml").read_text())
    assert web["tls_server_config"] == {
        "cert_file": "/etc/prometheus/node-exporter-tls/host.crt",
        "key_file": "/etc/prometheus/node-exporter-tls/host.key",
        "min_version": "TLS12",
    }


def test_node_exporter_reports_the_project_units_and_no_others(rendered):
    include = yaml.safe_load((rendered / "include.json").read_text())
    units = yaml.safe_load((rendered / "units.json").read_text())
    # node_exporter anchors the expression (^(?:...)$): fullmatch, as it matches.
    project = [f"{unit}.service" for unit in units] + [
        "kafka.service",
        "cassandra.service",
        "ferretdb.service",
        "postgresql@15-main.service",
        "spark-master.service",
        "spark-worker.service",
        "bdf-randomuser.service",
        "bdf-crashloop-test.service",  # tests/integration/test_monitoring.py's throwaway unit
        "prometheus.service",
        "prometheus-node-exporter.service",
        "node-exporter-firewall.service",
    ]
    assert [unit for unit in project if not re.fullmatch(include, unit)] == []
    others = ["ssh.service", "cron.service", "systemd-journald.service", "kafka.socket", "xkafka.service"]
    assert [unit for unit in others if re.fullmatch(include, unit)] == []
    # The stream job's alert names the stream_job role's unit.
    assert units[3] == units[0]


def test_node_exporter_port_is_open_to_the_monitoring_hosts_only(rendered):
    rules = (rendered / "node-exporter.nft").read_text()
    assert f"tcp dport 9100 ip saddr {{ {ADDRESS} }} accept" in rules
    assert rules.index("accept\n        tcp dport 9100 reject") > 0
