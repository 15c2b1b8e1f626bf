"""One client factory per service: where credentials and TLS are configured, once.

Every Kafka, Cassandra and MongoDB client of the toolkit (the producer, the stream job,
``bdf-dlq``, ``bdf-acl``, ``bdf-gdpr``, the dashboard, the health report, the role setup
scripts, the tests) is built here from a ``*Connection`` section of ``bdf.config`` and a
login. With TLS every client verifies the server's certificate and host name against
the deployment's CA; the defaults stay clear text until the roles enable TLS.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from bdf.config import (
    CassandraConnection,
    CassandraSettings,
    ConfigError,
    Credentials,
    KafkaConnection,
    MongoConnection,
    check_private,
)

SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
CQL_PROTOCOL_VERSION = 5  # Cassandra 4.0 and later; saves the driver's downgrade warnings
# The Spark Cassandra Connector offers only TLS_RSA_WITH_AES_*_CBC_SHA by default: no
# handshake with the deployment's EC (P-256) certificates. TLS 1.3, then ECDHE-ECDSA AEAD.
CASSANDRA_SPARK_CIPHER_SUITES = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
)


def _existing(path: Path, key: str) -> str:
    """A CA or trust store must exist before a client starts: a clear error, not a TLS one."""
    if not path.is_file():
        raise ConfigError(f"{key}: {path} not found")
    return str(path)


# --- Kafka ----------------------------------------------------------------------------------


def kafka_uses_tls(kafka: KafkaConnection) -> bool:
    return kafka.security_protocol == "SASL_SSL"


def kafka_config(kafka: KafkaConnection, credentials: Credentials) -> dict[str, Any]:
    """librdkafka (confluent_kafka Producer, Consumer, AdminClient): brokers, SCRAM, TLS."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "security.protocol": kafka.security_protocol,
        "sasl.mechanisms": kafka.sasl_mechanism,
        "sasl.username": credentials.username,
        "sasl.password": credentials.password,
    }
    if kafka_uses_tls(kafka):
        config["ssl.ca.location"] = _existing(kafka.ca_file, "kafka.ca_file")
        config["ssl.endpoint.identification.algorithm"] = "https"
    return config


def kafka_java_config(kafka: KafkaConnection, credentials: Credentials) -> dict[str, str]:
    """The Java client's settings without the brokers (Spark's Kafka source/sink, kafka-*.sh)."""
    if any(char in credentials.username + credentials.password for char in "\r\n\0"):
        raise ConfigError("Kafka credentials must not contain line breaks or NUL characters")
    jaas = (
        f'{SCRAM_LOGIN_MODULE} required username="{_jaas_quote(credentials.username)}"'
        f' password="{_jaas_quote(credentials.password)}";'
    )
    config = {
        "security.protocol": kafka.security_protocol,
        "sasl.mechanism": kafka.sasl_mechanism,
        "sasl.jaas.config": jaas,
    }
    if kafka_uses_tls(kafka):
        # Kafka 2.7+ reads PEM trust stores: the CA file itself, no keytool step.
        config["ssl.truststore.type"] = "PEM"
        config["ssl.truststore.location"] = _existing(kafka.ca_file, "kafka.ca_file")
        config["ssl.endpoint.identification.algorithm"] = "https"
    return config


def kafka_spark_options(kafka: KafkaConnection, credentials: Credentials) -> dict[str, str]:
    """Spark Kafka source/sink options (``kafka.``-prefixed Java client settings).

    The JAAS option holds the password: Spark's spark.redaction.regex (set in the job's
    build_spark) hides "jaas" options in the UI.
    """
    java = kafka_java_config(kafka, credentials)
    return {"kafka.bootstrap.servers": ",".join(kafka.bootstrap_servers)} | {
        f"kafka.{key}": value for key, value in java.items()
    }


def kafka_properties(kafka: KafkaConnection, credentials: Credentials) -> str:
    """A Java properties file for the Kafka tools (``--command-config``); write it mode 0600."""
    return "".join(
        f"{key}={_properties_value(value)}\n" for key, value in kafka_java_config(kafka, credentials).items()
    )


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _properties_value(value: str) -> str:
    """Escape for java.util.Properties.load (ISO-8859-1; backslash escapes)."""
    escaped = []
    for char in value:
        if char == "\\":
            escaped.append("\\\\")
        elif ord(char) > 0xFFFF:  # outside the BMP: a UTF-16 surrogate pair
            code = ord(char) - 0x10000
            escaped.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        elif ord(char) > 0x7E or ord(char) < 0x20:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    text = "".join(escaped)
    # A leading space would be dropped by the loader.
    return "\\" + text if text.startswith(" ") else text


# --- Cassandra ------------------------------------------------------------------------------


def cassandra_ssl_context(cassandra: CassandraConnection) -> ssl.SSLContext | None:
    """CERT_REQUIRED and host name checks against the CA; None without TLS.

    The driver checks each node under the address it connects to (``hosts``, then the
    peers' rpc addresses), so the certificates must name those addresses.
    """
    if not cassandra.tls:
        return None
    context = ssl.create_default_context(cafile=_existing(cassandra.ca_file, "cassandra.ca_file"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


def cassandra_cluster(
    cassandra: CassandraConnection,
    credentials: Credentials | None,
    *,
    row_factory: Any = None,
    **options: Any,
):
    """A cassandra-driver Cluster (not connected); ``options`` add driver settings.

    Statements run at LOCAL_QUORUM by default (the default execution profile): with a
    replication factor of 3, two replicas in the local DC; with 1, the one replica.
    ``row_factory`` replaces the profile's (the driver refuses ``session.row_factory``
    once execution profiles are used).
    """
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=cassandra.local_datacenter),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
    )
    if row_factory is not None:
        profile.row_factory = row_factory
    settings: dict[str, Any] = {
        "port": cassandra.port,
        "execution_profiles": {EXEC_PROFILE_DEFAULT: profile},
        "protocol_version": CQL_PROTOCOL_VERSION,
        "ssl_context": cassandra_ssl_context(cassandra),
    }
    if credentials is not None:
        settings["auth_provider"] = PlainTextAuthProvider(credentials.username, credentials.password)
    return Cluster(list(cassandra.hosts), **(settings | options))


def cassandra_spark_conf(cassandra: CassandraSettings, credentials: Credentials) -> dict[str, str]:
    """The Spark Cassandra Connector's connection settings (Spark's UI redacts the passwords).

    The connector (3.5.1) loads its trust store with Java's KeyStore (JKS or PKCS12, a
    password required), not PEM, and does not verify host names (it turns the driver's
    hostname validation off): the chain is checked against the CA only.
    """
    conf = {
        "spark.cassandra.connection.host": ",".join(cassandra.hosts),
        "spark.cassandra.connection.port": str(cassandra.port),
        "spark.cassandra.connection.localDC": cassandra.local_datacenter,
        "spark.cassandra.auth.username": credentials.username,
        "spark.cassandra.auth.password": credentials.password,
        # Reads and writes at LOCAL_QUORUM, as the Python clients (cassandra_cluster).
        "spark.cassandra.input.consistency.level": "LOCAL_QUORUM",
        "spark.cassandra.output.consistency.level": "LOCAL_QUORUM",
    }
    if cassandra.tls:
        conf |= {
            "spark.cassandra.connection.ssl.enabled": "true",
            "spark.cassandra.connection.ssl.enabledAlgorithms": ",".join(CASSANDRA_SPARK_CIPHER_SUITES),
            "spark.cassandra.connection.ssl.trustStore.type": "PKCS12",
            "spark.cassandra.connection.ssl.trustStore.path": _existing(
                cassandra.truststore_file, "cassandra.truststore_file"
            ),
            "spark.cassandra.connection.ssl.trustStore.password": _secret_line(
                cassandra.truststore_password_file
            ),
        }
    return conf


def _secret_line(path: Path) -> str:
    check_private(path)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value


# --- MongoDB --------------------------------------------------------------------------------


def mongo_tls_options(mongodb: MongoConnection) -> dict[str, Any]:
    """pymongo's TLS options: the CA, host names checked (pymongo's default, kept)."""
    if not mongodb.tls:
        return {"tls": False}
    return {"tls": True, "tlsCAFile": _existing(mongodb.ca_file, "mongodb.ca_file")}


def mongo_client(mongodb: MongoConnection, credentials: Credentials | None, **options: Any):
    """A pymongo MongoClient; ``options`` add client settings (timeouts, pool, codecs)."""
    from pymongo import MongoClient

    settings: dict[str, Any] = mongo_tls_options(mongodb)
    if credentials is not None:
        settings |= {
            "username": credentials.username,
            "password": credentials.password,
            "authSource": mongodb.auth_source,
        }
    return MongoClient(list(mongodb.hosts), **(settings | options))
