"""FerretDB and the dashboard with and without bdf_tls_enabled, as Ansible renders the roles:
FerretDB's listeners, the app configuration's [mongodb] section, the role's own admin
connection, gunicorn's options and the dashboard's health checks.

tests/integration/test_tls_ferretdb.py and test_tls_dashboard.py start the servers with
these rendered options."""

from __future__ import annotations

import json
import tomllib

import pytest

from bdf.config import MongoSettings
from tests.roles import ADDRESS, REPO, exec_start, render

CA = "/etc/bigdataflow/tls/ca.crt"


@pytest.fixture(scope="module", params=[True, False], ids=["tls", "clear"])
def rendered(request, tmp_path_factory) -> tuple[bool, dict[str, str]]:
    tls = request.param
    texts = render(
        tmp_path_factory.mktemp("render"),
        ["bdf_python", "mongodb", "dashboard"],
        {
            "ferretdb.service": ("mongodb/templates/ferretdb.service.j2", {}),
            "bdf-dashboard.service": ("dashboard/templates/bdf-dashboard.service.j2", {}),
            "dashboard.toml": (
                "bdf_python/templates/bigdataflow.toml.j2",
                {"app_name": "the dashboard", "app_mongodb_user": "dashboard"},
            ),
        },
        values={
            "admin_request": "mongodb_admin_request",
            "health_url": "dashboard_scheme ~ '://' ~ dashboard_check_host ~ ':' ~ dashboard_port ~ '/'",
            "controller_ca": "dashboard_controller_ca_file",
        },
        extra_vars={"bdf_tls_enabled": tls, "mongodb_admin_password": "not-a-secret"},
    )
    return tls, texts


def listen_flags(unit: str) -> list[str]:
    return [arg for arg in exec_start(unit) if arg.startswith("--listen")]


def test_ferretdb_listens_on_tls_only_with_the_switch(rendered):
    tls, texts = rendered
    if tls:
        assert listen_flags(texts["ferretdb.service"]) == [
            "--listen-addr=",  # the clear-text listener off
            f"--listen-tls={ADDRESS}:27017",
            "--listen-tls-cert-file=/etc/ferretdb/tls/host.crt",
            "--listen-tls-key-file=/etc/ferretdb/tls/host.key",
        ]
    else:
        assert listen_flags(texts["ferretdb.service"]) == [f"--listen-addr={ADDRESS}:27017"]
    assert "--debug-addr=-" in exec_start(texts["ferretdb.service"])  # no HTTP listener either


def test_the_apps_mongodb_section_verifies_the_deployment_ca_with_the_switch(rendered):
    tls, texts = rendered
    section = tomllib.loads(texts["dashboard.toml"])["mongodb"]
    assert section["hosts"] == [f"{ADDRESS}:27017"]
    mongodb = MongoSettings.model_validate(section)
    assert (mongodb.tls, str(mongodb.ca_file) if mongodb.ca_file else None) == (
        (True, CA) if tls else (False, None)
    )


def test_the_roles_own_admin_connection_follows_the_switch(rendered):
    tls, texts = rendered
    request = json.loads(texts["admin_request"])
    assert (request["host"], request["port"]) == (ADDRESS, 27017)
    assert (request["tls"], request["ca_file"]) == ((True, CA) if tls else (False, None))


def test_gunicorn_serves_https_only_with_the_switch(rendered):
    tls, texts = rendered
    args = exec_start(texts["bdf-dashboard.service"])
    binds = [args[i + 1] for i, arg in enumerate(args) if arg == "--bind"]
    assert binds == ["0.0.0.0:8050"]  # one listener: HTTPS with the switch, else HTTP
    tls_options = {arg: args[i + 1] for i, arg in enumerate(args) if arg in ("--certfile", "--keyfile")}
    if tls:
        assert tls_options == {
            "--certfile": "/etc/bigdataflow/dashboard-tls/host.crt",
            "--keyfile": "/etc/bigdataflow/dashboard-tls/host.key",
        }
    else:
        assert tls_options == {}


def test_the_dashboards_health_checks_verify_the_ca_with_the_switch(rendered):
    tls, texts = rendered
    # With TLS the host asks at a name its certificate holds, not 127.0.0.1.
    assert json.loads(texts["health_url"]) == (
        f"https://{ADDRESS}:8050/" if tls else "http://127.0.0.1:8050/"
    )
    assert json.loads(texts["controller_ca"]) == str(REPO / ".secrets" / "unit" / "tls" / "ca.crt")
