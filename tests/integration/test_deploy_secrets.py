"""A deploy never replaces the secrets and keys the hosts use (LAB=1, after the e2e deploy).

From a control node without the deployment's secrets (a fresh clone), its CA, or with the
CA certificate but not its key (what `make fetch-secrets` brings back), the deploy stops
in its guard plays, before any role runs, and the hosts keep their key file and
passwords; a key rotated on the Spark host survives the next deploy; message keys on the
producer's host that the control node lacks stop it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time

import pytest

from tests.lab import (
    INVENTORY_DIR,
    KAFKA_HOSTS,
    KEYSPACE,
    LAB_ONLY,
    MONGODB_HOST,
    PRODUCER_HOST,
    REPO,
    SECRETS,
    STREAM_HOST,
    by_host,
    cassandra_cluster,
    kafka_conf,
    ssh,
)

pytestmark = LAB_ONLY

PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
KEY_FILE = "/etc/bigdataflow/secrets/profile-keys.json"
MESSAGE_KEY_FILE = "/etc/bigdataflow/secrets/message-keys.json"  # the producer's: the message part
JOB = "user-profiles-stream"


# What a replaced secret would rewrite on the hosts: the stream job's driver, the first
# broker, the producer's host and FerretDB's.
SECRET_FILES = by_host(
    (
        STREAM_HOST,
        [
            KEY_FILE,
            "/etc/bigdataflow/secrets/kafka-stream.toml",
            "/etc/bigdataflow/secrets/cassandra-bigdataflow.toml",
            "/etc/spark/spark-defaults.conf",
            "/etc/bigdataflow/deployment-secrets.json",
        ],
    ),
    (
        KAFKA_HOSTS[0],
        [
            "/etc/kafka/server.properties",
            "/etc/kafka/admin-client.properties",
            "/etc/bigdataflow/tls/ca.crt",
            "/etc/bigdataflow/tls/host.crt",
        ],
    ),
    (PRODUCER_HOST, [MESSAGE_KEY_FILE]),
    (MONGODB_HOST, ["/var/lib/ferretdb/setup.env", "/etc/bigdataflow/deployment-secrets.json"]),
)


def _deploy(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - fixed command
        [str(PLAYBOOK), "-i", str(INVENTORY_DIR), "playbooks/site.yml", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return result, time.monotonic() - started


def _host_state() -> dict[str, str]:
    """sha256 of every secret-bearing file, and the job's process (a restart changes it)."""
    state = {}
    for host, paths in SECRET_FILES.items():
        listing = ssh(host, "sha256sum " + " ".join(paths))
        assert listing.returncode == 0, listing.stderr
        state |= {f"{host}:{path}": digest for digest, path in map(str.split, listing.stdout.splitlines())}
    state["job"] = ssh(STREAM_HOST, f"systemctl show -p MainPID -p NRestarts {JOB}").stdout
    return state


def _logins_with_the_deployments_passwords_succeed() -> None:
    from confluent_kafka.admin import AdminClient

    assert "user_profiles" in AdminClient(kafka_conf("stream")).list_topics(timeout=20).topics
    cluster = cassandra_cluster("bigdataflow", "cassandra-app")
    try:
        cluster.connect(KEYSPACE).execute("SELECT user_id FROM profiles LIMIT 1")
    finally:
        cluster.shutdown()


def _secrets_without(tmp_path, *names: str):
    copy = tmp_path / "secrets"
    shutil.copytree(SECRETS, copy, ignore=shutil.ignore_patterns(*names) if names else None)
    return copy


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (None, "is missing on this control node and kafka_admin_password is not set"),
        ("profile-keys.json", "no stored row could be decrypted or found by email again"),
        ("tls", "this deploy would create another CA, and every client would refuse every server"),
        ("ca.key", "the CA's private key, is missing on this control node"),
    ],
    ids=["no-secrets-at-all", "no-key-file", "no-ca", "ca-certificate-without-its-key"],
)
def test_deploy_without_the_control_nodes_secrets_refuses_and_changes_nothing(tmp_path, missing, message):
    secrets_dir = tmp_path / "empty" if missing is None else _secrets_without(tmp_path, missing)
    secrets_dir.mkdir(exist_ok=True)
    files_before = sorted(p.name for p in secrets_dir.iterdir())
    before = _host_state()

    result, seconds = _deploy("-e", f"bdf_secrets_dir={secrets_dir}")

    output = " ".join((result.stdout + result.stderr).split())  # however the callback wraps lines
    assert result.returncode != 0, output[-3000:]
    fetch = f"make fetch-secrets INVENTORY={os.path.relpath(INVENTORY_DIR, REPO)}"
    assert message in output and fetch in output, output[-3000:]
    assert "TASK [common" not in output, "a role ran before the guard stopped the deploy"
    assert seconds < 180
    assert sorted(p.name for p in secrets_dir.iterdir()) == files_before, "the guard generated a secret"
    assert _host_state() == before
    _logins_with_the_deployments_passwords_succeed()
    assert ssh(STREAM_HOST, f"systemctl is-active {JOB}").stdout.strip() == "active"


def test_a_key_rotated_on_the_spark_host_survives_a_deploy():
    rotation = ssh(STREAM_HOST, f"/opt/bigdataflow/venv/bin/bdf-keys rotate {KEY_FILE}")
    assert rotation.returncode == 0, rotation.stderr
    # As the README says: new rows, new key.
    assert ssh(STREAM_HOST, f"systemctl restart {JOB}").returncode == 0
    rotated = _host_state()[f"{STREAM_HOST}:{KEY_FILE}"]

    result, _ = _deploy("--tags", "stream_job")

    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert _host_state()[f"{STREAM_HOST}:{KEY_FILE}"] == rotated
    assert hashlib.sha256((SECRETS / "profile-keys.json").read_bytes()).hexdigest() == rotated
    assert ssh(STREAM_HOST, f"stat -c %U:%a {KEY_FILE}").stdout.strip() == "spark:600"
    assert ssh(STREAM_HOST, f"systemctl is-active {JOB}").stdout.strip() == "active"


def test_a_producer_host_with_message_keys_the_control_node_lacks_stops_the_deploy():
    """Its messages would be undecryptable: the guard stops before any role runs."""
    backup = f"{MESSAGE_KEY_FILE}.test-backup"
    extra_key = (  # a message key id 999 only this host has (key material stays on the host)
        "import base64,json,os,sys;p=sys.argv[1];d=json.load(open(p));"
        "d['message_keys']['999']=base64.b64encode(os.urandom(32)).decode();"
        "d['active_message_key_id']=999;open(p,'w').write(json.dumps(d))"
    )
    assert ssh(PRODUCER_HOST, f"cp -p {MESSAGE_KEY_FILE} {backup}").returncode == 0
    try:
        assert ssh(PRODUCER_HOST, f'python3 -c "{extra_key}" {MESSAGE_KEY_FILE}').returncode == 0
        before = _host_state()
        result, _ = _deploy()
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, output[-3000:]
        assert "holds message keys that" in output and "TASK [common" not in output, output[-3000:]
        assert _host_state() == before
    finally:
        assert ssh(PRODUCER_HOST, f"mv {backup} {MESSAGE_KEY_FILE}").returncode == 0
    assert ssh(PRODUCER_HOST, "systemctl restart bdf-producer").returncode == 0
