"""MongoDB over TLS with bdf.clients: the local FerretDB's TLS listener, a throwaway CA.

FerretDB (the one `make artifacts` builds) listens in clear and, with ``--listen-tls``,
on a second port with a certificate for ``localhost`` signed by a CA made here. The
factory's client works with that CA; another CA, an address the certificate does not
name, or a client without TLS on the TLS port fail. Started with the listeners the
mongodb role renders with bdf_tls_enabled, it listens on its TLS port and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bdf.config import MongoConnection
from dashboard import demo
from tests.roles import exec_start, render
from tests.tls import (
    certificate_authority,
    listening_ports,
    server_certificate,
    write_pem,
    write_service_tls,
)

pymongo = pytest.importorskip("pymongo")
pytestmark = [pytest.mark.integration, pytest.mark.ferretdb]


def _binary() -> Path:
    binary = demo.ferretdb_binary()
    if binary is None or not binary.exists():
        pytest.skip(f"no FerretDB binary: run `make artifacts` or set {demo.FERRETDB_ENV}")
    return binary


@pytest.fixture(scope="module")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[demo.LocalFerretDB, Path]]:
    binary = _binary()
    work = tmp_path_factory.mktemp("ferretdb-tls")
    ca = certificate_authority("bdf test CA")
    ca_file, _ = write_pem(work, "ca", ca)
    certificate, key = write_pem(work, "server", server_certificate(ca, ["localhost"]))
    with demo.LocalFerretDB(binary, work / "data", tls=(certificate, key)) as server:
        yield server, ca_file


def tls_connection(server: demo.LocalFerretDB, ca_file: Path, host: str = "localhost") -> MongoConnection:
    return MongoConnection(hosts=[f"{host}:{server.tls_port}"], tls=True, ca_file=ca_file)


def test_the_factorys_client_logs_in_over_tls_with_the_ca(ferretdb):
    server, ca_file = ferretdb
    with server.admin_client(tls_connection(server, ca_file)) as client:
        assert client.admin.command("ping")["ok"] == 1.0
        assert client.options._options["tlsCAFile"] == str(ca_file)


def test_a_client_trusting_another_ca_fails_the_handshake(ferretdb, tmp_path):
    server, _ = ferretdb
    other, _ = write_pem(tmp_path, "other-ca", certificate_authority("another CA"))
    with (
        server.admin_client(tls_connection(server, other)) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError, match="certificate verify failed"),
    ):
        client.admin.command("ping")


def test_an_address_the_certificate_does_not_name_fails_the_handshake(ferretdb):
    server, ca_file = ferretdb
    with (
        server.admin_client(tls_connection(server, ca_file, host="127.0.0.1")) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError, match="IP address mismatch"),
    ):
        client.admin.command("ping")


def test_a_client_without_tls_gets_no_answer_on_the_tls_port(ferretdb):
    server, _ = ferretdb
    with (
        server.admin_client(MongoConnection(hosts=[f"localhost:{server.tls_port}"])) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError),
    ):
        client.admin.command("ping")


def test_the_roles_listeners_serve_tls_verified_by_the_ca_and_nothing_in_clear(tmp_path):
    """roles/mongodb/templates/ferretdb.service.j2's --listen* flags with bdf_tls_enabled,
    rendered by Ansible for 127.0.0.1 and a free port, its certificate files here."""
    binary = _binary()
    ca = certificate_authority("bdf role CA")
    ca_file, _ = write_pem(tmp_path, "ca", ca)
    tls_dir = write_service_tls(tmp_path / "tls", ca, ["127.0.0.1"])
    port = demo.free_port()
    unit = render(
        tmp_path / "render",
        ["mongodb"],
        {"ferretdb.service": ("mongodb/templates/ferretdb.service.j2", {})},
        extra_vars={
            "bdf_tls_enabled": True,
            "mongodb_listen_address": "127.0.0.1",
            "bdf_mongodb_port": port,
            "ferretdb_tls_dir": str(tls_dir),
        },
    )["ferretdb.service"]
    listen = [arg for arg in exec_start(unit) if arg.startswith("--listen")]
    connection = MongoConnection(hosts=[f"127.0.0.1:{port}"], tls=True, ca_file=ca_file)
    with demo.LocalFerretDB(binary, tmp_path / "data", listen=listen, ready=connection) as server:
        assert server.pid is not None
        assert listening_ports(server.pid) == {port}  # no clear-text listener beside it
        with server.admin_client(connection) as client:
            assert client.admin.command("ping")["ok"] == 1.0
        with (
            server.admin_client(MongoConnection(hosts=[f"127.0.0.1:{port}"])) as client,
            pytest.raises(pymongo.errors.ServerSelectionTimeoutError),
        ):
            client.admin.command("ping")
