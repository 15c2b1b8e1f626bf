"""Cassandra over TLS: a real Cassandra 5.0 node on 127.0.0.1 started on the cassandra.yaml
that roles/cassandra renders with ``bdf_tls_enabled`` (tests/cassandra_node.py: a throwaway
deployment CA from roles/tls, the node's PEM copies, client encryption required).

The role's setup script secures the node through TLS; the stream job's rendered
configuration gives bdf.clients a driver that writes and reads; a clear-text client and a
client trusting another CA are refused;
cqlsh with root's cqlshrc reads; the Spark Cassandra Connector reads through TLS with the
PKCS12 trust store the Spark hosts get. One node start for the module.

The driver checks a node's certificate against the address it dials, resolved from the
configured name (the factory's host name check itself: tests/unit/test_clients.py).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("cassandra")

from cassandra.cluster import NoHostAvailable

from bdf import clients
from bdf.config import CassandraSettings, Credentials, load_settings
from dashboard import demo
from tests.cassandra_node import NEEDS_NODE, REPO, Node, render, running_node
from tests.tls import certificate_authority, write_pem

pytestmark = NEEDS_NODE

ADMIN = Credentials(username="bdf_admin", password="admin-" + uuid.uuid4().hex)
APP = Credentials(username="bigdataflow", password="app-" + uuid.uuid4().hex)
CONNECTORS = REPO / ".artifacts" / "spark-connectors" / "spark-3.5.7_2.12"
# cqlsh is not a project dependency (the wheelhouse ships it to the hosts): a command to run it.
CQLSH = os.environ.get("BDF_CQLSH") or shutil.which("cqlsh")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("cassandra-tls")
    port = demo.free_port()
    rendered = render(root, tls=True, cql_port=port, storage_port=demo.free_port())
    (root / "run").mkdir()
    with running_node(root / "run", rendered, port) as started:
        yield started


@pytest.fixture(scope="module")
def settings(node: Node) -> CassandraSettings:
    """The stream job's [cassandra] section as the role renders it (TLS, CA, trust store)."""
    return load_settings(node.rendered.stream_toml, environ={}).cassandra


@pytest.fixture(scope="module")
def setup_outcome(node: Node, settings: CassandraSettings) -> dict:
    """roles/cassandra's setup script, given what security_and_schema.yml passes it."""
    request = {
        "hosts": ["127.0.0.1"],
        "port": node.port,
        "tls": True,
        "ca_file": str(settings.ca_file),
        "admin_user": ADMIN.username,
        "admin_password": ADMIN.password,
        "app_user": APP.username,
        "app_password": APP.password,
        "keyspace": settings.keyspace,
        "keyspace_rf": 1,
        "table": settings.table,
        "profile_ttl_seconds": 0,
        "datacenter": settings.local_datacenter,
        "system_auth_rf": 1,
        "schema_cql": (node.rendered.conf / "schema.cql").read_text(),
    }
    result = subprocess.run(  # noqa: S603 - the role's own script; the request (passwords) on stdin
        [sys.executable, str(REPO / "roles" / "cassandra" / "files" / "cassandra_setup.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def refusal(settings: CassandraSettings, **update) -> str:
    """The driver's error when it tries ``settings`` with ``update``; fails if it connects."""
    cluster = clients.cassandra_cluster(settings.model_copy(update=update), APP, connect_timeout=10)
    try:
        with pytest.raises(NoHostAvailable) as refused:
            cluster.connect()
    finally:
        cluster.shutdown()
    return str(refused.value)


def test_the_role_setup_script_secures_the_node_through_tls(setup_outcome):
    assert setup_outcome["changed"]
    assert f"created admin role {ADMIN.username}" in setup_outcome["actions"]
    assert "disabled the default cassandra superuser" in setup_outcome["actions"]
    assert f"created role {APP.username}" in setup_outcome["actions"]


def test_the_factory_client_of_the_rendered_configuration_writes_and_reads_over_tls(settings, setup_outcome):
    cluster = clients.cassandra_cluster(settings, APP, connect_timeout=10)
    try:
        session = cluster.connect(settings.keyspace)
        user_id = uuid.uuid4()
        session.execute(
            f"INSERT INTO {settings.table} (user_id, nationality) VALUES (%s, %s)",  # noqa: S608 - constants
            (user_id, "FR"),
        )
        row = session.execute(
            f"SELECT nationality FROM {settings.table} WHERE user_id = %s",  # noqa: S608 - constants
            (user_id,),
        ).one()
        assert row.nationality == "FR"
        [connection] = [host for host in cluster.metadata.all_hosts() if host.is_up]
        assert connection.address == "127.0.0.1"
    finally:
        cluster.shutdown()


def test_the_node_serves_clients_and_peers_over_tls_13_or_12_only(node, setup_outcome):
    log = node.log.read_text()
    assert "Native transport enabled TLS protocols: TLSv1.3, TLSv1.2" in log
    assert "Internode messaging enabled TLS protocols: TLSv1.3, TLSv1.2" in log


def test_a_clear_text_client_is_refused(settings, setup_outcome):
    # The node drops the connection before any CQL frame: no clear-text login is read.
    assert "ConnectionResetError(104, 'Connection reset by peer')" in refusal(settings, tls=False)


def test_a_client_trusting_another_ca_fails_the_handshake(settings, setup_outcome, tmp_path):
    other_ca, _ = write_pem(tmp_path, "other-ca", certificate_authority("another CA"))
    assert "CERTIFICATE_VERIFY_FAILED" in refusal(settings, ca_file=other_ca)


@pytest.mark.skipif(CQLSH is None, reason="no cqlsh on PATH (set BDF_CQLSH to a command that runs it)")
def test_cqlsh_with_the_roles_cqlshrc_reads_over_tls(node, settings, setup_outcome, tmp_path):
    credentials = tmp_path / "credentials"  # cqlsh's own credentials file: no password in argv
    credentials.write_text(f"[plain_text_auth]\nusername = {APP.username}\npassword = {APP.password}\n")
    credentials.chmod(0o600)
    query = f"SELECT count(*) FROM {settings.keyspace}.{settings.table}"  # noqa: S608 - constants
    result = subprocess.run(  # noqa: S603 - cqlsh with fixed arguments
        [
            *shlex.split(CQLSH),
            *("--cqlshrc", str(node.rendered.cqlshrc), "--credentials", str(credentials)),
            *("-e", query),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "count" in result.stdout and "(1 rows)" in result.stdout


SPARK_READ = """\
import json, sys
from pyspark.sql import SparkSession

request = json.load(sys.stdin)
builder = (
    SparkSession.builder.master("local[1]")
    .appName("bdf-cassandra-tls")
    .config("spark.jars", request["jars"])
    .config("spark.ui.enabled", "false")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.host", "127.0.0.1")
)
for key, value in request["conf"].items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
rows = (
    spark.read.format("org.apache.spark.sql.cassandra")
    .options(keyspace=request["keyspace"], table=request["table"])
    .load()
    .select("nationality")
    .collect()
)
print(json.dumps(sorted(row.nationality for row in rows)))
spark.stop()
"""


@pytest.mark.skipif(
    not CONNECTORS.is_dir(), reason=f"no Spark connector jars in {CONNECTORS} (make artifacts)"
)
def test_the_spark_cassandra_connector_reads_through_tls_with_the_pkcs12_trust_store(settings, setup_outcome):
    cluster = clients.cassandra_cluster(settings, APP, connect_timeout=10)
    try:
        session = cluster.connect(settings.keyspace)
        session.execute(
            f"INSERT INTO {settings.table} (user_id, nationality) VALUES (%s, 'DE')",  # noqa: S608 - constants
            (uuid.uuid4(),),
        )
    finally:
        cluster.shutdown()
    conf = clients.cassandra_spark_conf(settings, APP)
    assert conf["spark.cassandra.connection.ssl.trustStore.path"].endswith("truststore.p12")
    request = {
        "jars": ",".join(sorted(str(jar) for jar in CONNECTORS.glob("*.jar"))),
        "conf": conf,
        "keyspace": settings.keyspace,
        "table": settings.table,
    }
    result = subprocess.run(  # noqa: S603 - our own script; the conf (passwords) on stdin
        [sys.executable, "-c", SPARK_READ],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ
        | {"PYSPARK_SUBMIT_ARGS": "--driver-memory 512m pyspark-shell", "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "DE" in json.loads(result.stdout.strip().splitlines()[-1])
