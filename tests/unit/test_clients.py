"""bdf.clients: the exact options every client gets, with and without TLS, and the errors."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import pytest

from bdf import clients
from bdf.config import (
    CassandraConnection,
    CassandraSettings,
    ConfigError,
    Credentials,
    KafkaConnection,
    MongoConnection,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
BROKERS = ["broker-a.invalid:9093", "broker-b.invalid:9093"]


@pytest.fixture
def login() -> Credentials:
    return Credentials(username=f"user-{secrets.token_hex(4)}", password=secrets.token_urlsafe(16))


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A real PEM certificate (ssl.SSLContext loads it), made for the test."""
    from tests.tls import certificate_authority

    ca = certificate_authority("Test CA")
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.certificate_pem)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bdf.toml"
    path.write_text(text)
    return path


# --- Kafka ----------------------------------------------------------------------------------


def test_kafka_clear_text_clients_get_brokers_and_scram_and_nothing_of_tls(login):
    kafka = KafkaConnection(bootstrap_servers=BROKERS)
    assert clients.kafka_config(kafka, login) == {
        "bootstrap.servers": ",".join(BROKERS),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": login.username,
        "sasl.password": login.password,
    }
    jaas = (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="'
        f'{login.username}" password="{login.password}";'
    )
    assert clients.kafka_spark_options(kafka, login) == {
        "kafka.bootstrap.servers": ",".join(BROKERS),
        "kafka.security.protocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": jaas,
    }


def test_kafka_tls_clients_verify_the_broker_and_its_host_name_against_the_ca(login, ca_file):
    kafka = KafkaConnection(bootstrap_servers=BROKERS, security_protocol="SASL_SSL", ca_file=ca_file)
    confluent = clients.kafka_config(kafka, login)
    assert confluent["security.protocol"] == "SASL_SSL"
    assert confluent["ssl.ca.location"] == str(ca_file)
    assert confluent["ssl.endpoint.identification.algorithm"] == "https"
    java = clients.kafka_java_config(kafka, login)
    assert {key: java[key] for key in java if key.startswith("ssl.")} == {
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    spark = clients.kafka_spark_options(kafka, login)
    assert spark == {"kafka.bootstrap.servers": ",".join(BROKERS)} | {
        f"kafka.{k}": v for k, v in java.items()
    }


def test_kafka_properties_file_escapes_the_login_for_both_syntaxes():
    kafka = KafkaConnection(bootstrap_servers=BROKERS)
    text = clients.kafka_properties(kafka, Credentials(username='ad"min', password='p\\a"ss é'))
    assert text.startswith("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n")
    # Properties escaping (\\ -> \, \u00e9 -> é) on top of JAAS quoting (\" -> ", \\ -> \).
    assert 'username="ad\\\\"min" password="p\\\\\\\\a\\\\"ss \\u00e9";' in text


def test_kafka_properties_refuse_a_line_break_in_the_login():
    kafka = KafkaConnection(bootstrap_servers=BROKERS)
    with pytest.raises(ConfigError, match="line breaks"):
        clients.kafka_properties(kafka, Credentials(username="admin", password="pw\nssl.x=y"))


def test_the_roles_admin_properties_template_renders_what_the_factory_writes(login, ca_file):
    """roles/kafka/templates/admin-client.properties.j2 is the host-side twin of kafka_properties."""
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Template(
        (REPO / "roles/kafka/templates/admin-client.properties.j2").read_text(), trim_blocks=True
    )  # as Ansible renders it
    for protocol, ca in (("SASL_PLAINTEXT", None), ("SASL_SSL", ca_file)):
        kafka = KafkaConnection(bootstrap_servers=BROKERS, security_protocol=protocol, ca_file=ca)
        variables = {
            "ansible_managed": "managed",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_admin_user": login.username,
            "kafka_admin_password": login.password,
            "kafka_client_security_protocol": protocol,
        }
        if ca is not None:
            variables["kafka_client_ca_file"] = str(ca)
        rendered = [line for line in template.render(**variables).splitlines() if not line.startswith("#")]
        assert rendered == clients.kafka_properties(kafka, login).splitlines()


def test_sasl_ssl_without_a_ca_file_is_refused_naming_file_and_key(tmp_path):
    path = write(
        tmp_path,
        '[kafka]\nbootstrap_servers = ["b:9093"]\ncredentials_file = "k.toml"\n'
        'security_protocol = "SASL_SSL"\n',
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value)
    assert "kafka.ca_file: Value error, required with SASL_SSL" in str(error.value)


def test_a_missing_ca_file_is_a_config_error_naming_the_key(login, tmp_path):
    kafka = KafkaConnection(
        bootstrap_servers=BROKERS, security_protocol="SASL_SSL", ca_file=tmp_path / "no.pem"
    )
    with pytest.raises(ConfigError, match=r"kafka.ca_file: .*no.pem not found"):
        clients.kafka_config(kafka, login)


# --- Cassandra ------------------------------------------------------------------------------


def test_cassandra_clear_text_cluster_logs_in_with_the_dc_aware_policy(login):
    cluster = clients.cassandra_cluster(
        CassandraConnection(hosts=["10.0.0.1", "10.0.0.2"], port=9142, local_datacenter="dc9"),
        login,
        connect_timeout=7,
    )
    assert [str(point) for point in cluster.contact_points] == ["10.0.0.1", "10.0.0.2"]
    assert (cluster.port, cluster.connect_timeout, cluster.protocol_version) == (9142, 7, 5)
    assert cluster.ssl_context is None
    assert cluster.profile_manager.default.load_balancing_policy.local_dc == "dc9"
    assert (cluster.auth_provider.username, cluster.auth_provider.password) == (
        login.username,
        login.password,
    )


def test_cassandra_reads_and_writes_at_local_quorum_by_default(login):
    from cassandra import ConsistencyLevel
    from cassandra.query import dict_factory

    cluster = clients.cassandra_cluster(
        CassandraConnection(hosts=["10.0.0.1"]), login, row_factory=dict_factory
    )
    profile = cluster.profile_manager.default
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert profile.row_factory is dict_factory


def test_cassandra_without_credentials_has_no_auth_provider():
    cluster = clients.cassandra_cluster(CassandraConnection(hosts=["10.0.0.1"]), None)
    assert cluster.auth_provider is None


def test_cassandra_tls_requires_the_certificate_and_its_host_name_against_the_ca(login, ca_file):
    cluster = clients.cassandra_cluster(
        CassandraConnection(hosts=["10.0.0.1"], tls=True, ca_file=ca_file), login
    )
    context = cluster.ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "Test CA"),),)]


def test_cassandra_tls_without_a_ca_file_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"ca_file\n.*required with tls = true"):
        CassandraConnection(hosts=["h"], tls=True)


def cassandra_settings(tmp_path: Path, **tls: object) -> CassandraSettings:
    return CassandraSettings(hosts=["10.0.0.1"], credentials_file=tmp_path / "c.toml", **tls)


def test_spark_cassandra_connector_gets_no_ssl_options_without_tls(login, tmp_path):
    assert clients.cassandra_spark_conf(cassandra_settings(tmp_path), login) == {
        "spark.cassandra.connection.host": "10.0.0.1",
        "spark.cassandra.connection.port": "9042",
        "spark.cassandra.connection.localDC": "datacenter1",
        "spark.cassandra.auth.username": login.username,
        "spark.cassandra.auth.password": login.password,
        "spark.cassandra.input.consistency.level": "LOCAL_QUORUM",
        "spark.cassandra.output.consistency.level": "LOCAL_QUORUM",
    }


def test_spark_cassandra_connector_with_tls_gets_the_pkcs12_trust_store(login, ca_file, tmp_path):
    store, password = tmp_path / "truststore.p12", tmp_path / "truststore.password"
    store.write_bytes(b"not parsed here")
    password.write_text("store-secret\n")
    password.chmod(0o600)
    settings = cassandra_settings(
        tmp_path, tls=True, ca_file=ca_file, truststore_file=store, truststore_password_file=password
    )
    conf = clients.cassandra_spark_conf(settings, login)
    assert {key: conf[key] for key in conf if ".ssl." in key} == {
        "spark.cassandra.connection.ssl.enabled": "true",
        # Not the connector's default RSA-only suites: the deployment's keys are EC.
        "spark.cassandra.connection.ssl.enabledAlgorithms": "TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256,"
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "spark.cassandra.connection.ssl.trustStore.type": "PKCS12",
        "spark.cassandra.connection.ssl.trustStore.path": str(store),
        "spark.cassandra.connection.ssl.trustStore.password": "store-secret",
    }
    password.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        clients.cassandra_spark_conf(settings, login)


def test_cassandra_tls_without_the_spark_trust_store_is_refused_naming_file_and_keys(tmp_path, ca_file):
    path = write(
        tmp_path,
        f'[cassandra]\nhosts = ["h"]\ncredentials_file = "c.toml"\ntls = true\nca_file = "{ca_file}"\n',
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert str(path) in str(error.value)
    assert "cassandra: Value error, tls = true needs truststore_file and truststore_password_file" in str(
        error.value
    )


# --- MongoDB --------------------------------------------------------------------------------


def test_mongo_clear_text_client_logs_in_to_its_auth_source(login):
    client = clients.mongo_client(
        MongoConnection(hosts=["m1:27017"], auth_source="user_profiles"), login, connect=False
    )
    options = client.options
    assert options.pool_options._credentials.username == login.username
    assert options.pool_options._credentials.source == "user_profiles"
    assert client.topology_description.server_descriptions().keys() == {("m1", 27017)}
    assert options._options["tls"] is False
    client.close()


def test_mongo_tls_client_verifies_the_server_against_the_ca(login, ca_file):
    assert clients.mongo_tls_options(MongoConnection(hosts=["m1:27017"], tls=True, ca_file=ca_file)) == {
        "tls": True,
        "tlsCAFile": str(ca_file),
    }
    client = clients.mongo_client(
        MongoConnection(hosts=["m1:27017"], tls=True, ca_file=ca_file), login, connect=False
    )
    assert client.options._options["tlsCAFile"] == str(ca_file)
    assert client.options._options.get("tlsAllowInvalidHostnames", False) is False
    client.close()


def test_mongo_tls_without_a_ca_file_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"ca_file\n.*required with tls = true"):
        MongoConnection(hosts=["m1:27017"], tls=True)
