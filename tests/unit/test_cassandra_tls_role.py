"""roles/cassandra and the stream job's configuration with ``bdf_tls_enabled``, rendered on
this machine by the roles' own templates and tasks (tests/cassandra_node.py): what
cassandra.yaml, cqlshrc and bigdataflow.toml say, the node's copies and the Spark hosts'
PKCS12 trust store, and that a second run changes nothing.

tests/integration/test_tls_cassandra.py starts a real node on the same rendered files."""

from __future__ import annotations

import configparser
import json
import stat
import tomllib

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from bdf import clients
from bdf.config import Credentials, load_settings
from tests.cassandra_node import render

PEM_FACTORY = "org.apache.cassandra.security.PEMBasedSslContextFactory"


@pytest.fixture(scope="module")
def with_tls(tmp_path_factory):
    root = tmp_path_factory.mktemp("cassandra-tls")
    first = render(root, tls=True)
    return first, render(root, tls=True)


@pytest.fixture(scope="module")
def without_tls(tmp_path_factory):
    return render(tmp_path_factory.mktemp("cassandra-clear"), tls=False)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tls_makes_the_cql_port_tls_only_with_the_nodes_pem_copies(with_tls):
    rendered, _ = with_tls
    client = yaml.safe_load(rendered.cassandra_yaml.read_text())["client_encryption_options"]
    assert client == {
        "enabled": True,
        "optional": False,  # no clear-text client on the same port
        "ssl_context_factory": {"class_name": PEM_FACTORY},
        "keystore": str(rendered.tls_dir / "keystore.pem"),
        "truststore": str(rendered.tls_dir / "ca.crt"),
        "require_client_auth": False,  # clients log in with a password
        "accepted_protocols": ["TLSv1.3", "TLSv1.2"],
    }
    keystore = (rendered.tls_dir / "keystore.pem").read_text()
    assert keystore.index("PRIVATE KEY") < keystore.index("CERTIFICATE")
    assert _mode(rendered.tls_dir / "keystore.pem") == 0o600


def test_tls_encrypts_every_internode_connection_with_mutual_certificates(with_tls):
    rendered, _ = with_tls
    server = yaml.safe_load(rendered.cassandra_yaml.read_text())["server_encryption_options"]
    assert server["internode_encryption"] == "all" and server["optional"] is False
    assert server["ssl_context_factory"] == {"class_name": PEM_FACTORY}
    assert server["keystore"] == server["outbound_keystore"] == str(rendered.tls_dir / "keystore.pem")
    assert server["require_client_auth"] is True and server["require_endpoint_verification"] is True
    # The host certificate serves both sides of an internode connection.
    usages = (
        x509.load_pem_x509_certificate((rendered.tls_dir / "host.crt").read_bytes())
        .extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        .value
    )
    assert {usage.dotted_string for usage in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}


def test_the_node_is_recorded_for_rotate_certs_with_its_restart_and_health_tasks(with_tls):
    rendered, _ = with_tls
    entry = json.loads((rendered.root / "host" / "tls" / "services" / "cassandra.json").read_text())
    assert entry["role"] == "cassandra" and entry["restart_tasks"] == "restart_and_wait.yml"
    assert entry["dir"] == str(rendered.tls_dir)


def test_the_stream_jobs_configuration_verifies_the_ca_and_gives_the_connector_the_pkcs12_store(with_tls):
    rendered, _ = with_tls
    cassandra = load_settings(rendered.stream_toml, environ={}).cassandra
    assert cassandra.tls and cassandra.ca_file == rendered.ca_file
    assert clients.cassandra_ssl_context(cassandra).check_hostname
    conf = clients.cassandra_spark_conf(cassandra, Credentials(username="bigdataflow", password="x"))
    password = rendered.truststore_password_file.read_text().strip()
    assert conf["spark.cassandra.connection.ssl.enabled"] == "true"
    assert conf["spark.cassandra.connection.ssl.trustStore.type"] == "PKCS12"
    assert conf["spark.cassandra.connection.ssl.trustStore.path"] == str(rendered.truststore)
    assert conf["spark.cassandra.connection.ssl.trustStore.password"] == password
    assert _mode(rendered.truststore_password_file) == 0o600 and len(password) == 32
    store = pkcs12.load_pkcs12(rendered.truststore.read_bytes(), password.encode())
    ca = x509.load_pem_x509_certificate(rendered.ca_file.read_bytes())
    assert store.key is None and [entry.certificate for entry in store.additional_certs] == [ca]


def test_roots_cqlshrc_speaks_tls_to_this_node_and_validates_it_against_the_ca(with_tls):
    rendered, _ = with_tls
    cqlshrc = configparser.ConfigParser()
    cqlshrc.read(rendered.cqlshrc)
    assert dict(cqlshrc["connection"]) == {"hostname": "127.0.0.1", "port": "9042", "ssl": "true"}
    assert dict(cqlshrc["ssl"]) == {"certfile": str(rendered.ca_file), "validate": "true"}
    assert not cqlshrc.has_section("authentication"), "credentials do not belong in cqlshrc"


def test_a_second_run_changes_nothing(with_tls):
    _, second = with_tls
    assert second.recap["changed"] == 0, "not idempotent: a second deploy would restart Cassandra"


def test_without_the_switch_nothing_is_encrypted_and_no_certificate_is_copied(without_tls):
    config = yaml.safe_load(without_tls.cassandra_yaml.read_text())
    assert "client_encryption_options" not in config and "server_encryption_options" not in config
    assert not without_tls.tls_dir.exists() and not without_tls.truststore.exists()
    cassandra = tomllib.loads(without_tls.stream_toml.read_text())["cassandra"]
    assert "tls" not in cassandra and "truststore_file" not in cassandra
    cqlshrc = configparser.ConfigParser()
    cqlshrc.read(without_tls.cqlshrc)
    assert cqlshrc["connection"]["ssl"] == "false" and not cqlshrc.has_section("ssl")
