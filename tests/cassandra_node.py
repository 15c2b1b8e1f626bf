"""The cassandra role's files rendered on this machine, and a real Cassandra 5.0 node from them.

``render`` runs a local playbook (connection local, every path in one directory) with the
role's own defaults and templates: roles/tls makes a throwaway deployment CA and the
host's certificate (names ``node1`` and ``127.0.0.1``), roles/tls service.yml the node's
copies, then cassandra.yaml, the rack file, the schema, root's cqlshrc, the stream job's
bigdataflow.toml and, with TLS, the Spark hosts' PKCS12 trust store (roles/tls
truststore.yml). ``running_node`` starts Cassandra on that cassandra.yaml
(tests/integration/test_tls_cassandra.py); the unit tests read the rendered files
(tests/unit/test_cassandra_tls_role.py).

Needs .venv (ansible-playbook, bdf-certs); the node needs Java 17 and the Cassandra
distribution: .artifacts/apache-cassandra-5.0.9-bin.tgz (`make artifacts`) or
BDF_CASSANDRA_DIST pointing at a .tgz or an unpacked distribution.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from dashboard import demo

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIST = REPO / ".artifacts" / "apache-cassandra-5.0.9-bin.tgz"
DIST = Path(os.environ.get("BDF_CASSANDRA_DIST", DEFAULT_DIST))
# Heap of the test node (bin/cassandra's MAX_HEAP_SIZE / MIN_HEAP_SIZE): small, one node.
HEAP = os.environ.get("BDF_CASSANDRA_TEST_HEAP", "768M")

# pytestmark of a test module that starts a node.
NEEDS_NODE = [
    pytest.mark.integration,
    pytest.mark.skipif(not DIST.exists(), reason=f"no Cassandra distribution at {DIST} (make artifacts)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Cassandra needs Java (java not on PATH)"),
]

ROLE_DEFAULTS = [
    "roles/bdf_secrets/defaults/main.yml",
    "roles/bdf_defaults/defaults/main.yml",
    "roles/tls/defaults/main.yml",
    "roles/cassandra/defaults/main.yml",
]

PLAYBOOK = """\
- name: The cassandra role's files, rendered here
  hosts: node1
  gather_facts: false
  vars_files: {defaults}
  tasks:
    - name: The deployment CA and the host's certificate (roles/tls)
      ansible.builtin.include_role:
        name: tls
      when: bdf_tls_enabled | bool
    - name: The node's copies (what roles/cassandra includes)
      ansible.builtin.include_role:
        name: tls
        tasks_from: service.yml
      vars:
        tls_service: cassandra
        tls_service_user: "{{{{ cassandra_user }}}}"
        tls_service_dir: "{{{{ cassandra_tls_dir }}}}"
        tls_service_role: cassandra
        tls_service_restart_tasks: restart_and_wait.yml
      when: bdf_tls_enabled | bool
    - name: The trust store of the Spark hosts (what roles/spark client_config includes)
      ansible.builtin.include_role:
        name: tls
        tasks_from: truststore.yml
      vars:
        tls_truststore_file: "{{{{ bdf_cassandra_truststore_file }}}}"
        tls_truststore_password_file: "{{{{ bdf_cassandra_truststore_password_file }}}}"
        tls_truststore_user: "{{{{ spark_user }}}}"
      when: bdf_tls_enabled | bool
    - name: The roles' templates (role, template, destination)
      ansible.builtin.template:
        src: "{{{{ bdf_project_dir }}}}/roles/{{{{ item[0] }}}}/templates/{{{{ item[1] }}}}.j2"
        dest: "{{{{ item[2] }}}}"
        mode: "0600"
      loop:
        - [cassandra, cassandra.yaml, "{{{{ conf }}}}/cassandra.yaml"]
        - [cassandra, cassandra-rackdc.properties, "{{{{ conf }}}}/cassandra-rackdc.properties"]
        - [cassandra, schema.cql, "{{{{ conf }}}}/schema.cql"]
        - [cassandra, cqlshrc, "{{{{ cassandra_cqlshrc }}}}"]
        - [bdf_python, bigdataflow.toml, "{{{{ common_config_dir }}}}/stream.toml"]
      vars:
        conf: "{{{{ cassandra_config_dir }}}}"
        app_name: the stream job
        app_cassandra_user: "{{{{ bdf_cassandra_app_user }}}}"
"""


@dataclass(frozen=True)
class Rendered:
    """Where the local play put the role's files (the same layout as on a host)."""

    root: Path
    tls: bool
    recap: dict[str, int]

    @property
    def conf(self) -> Path:
        return self.root / "node" / "conf"

    @property
    def cassandra_yaml(self) -> Path:
        return self.conf / "cassandra.yaml"

    @property
    def tls_dir(self) -> Path:
        return self.conf / "tls"

    @property
    def cqlshrc(self) -> Path:
        return self.root / "node" / "cqlshrc"

    @property
    def stream_toml(self) -> Path:
        return self.root / "host" / "config" / "stream.toml"

    @property
    def ca_file(self) -> Path:
        return self.root / "host" / "tls" / "ca.crt"

    @property
    def truststore(self) -> Path:
        return self.root / "host" / "tls" / "truststore.p12"

    @property
    def truststore_password_file(self) -> Path:
        return self.root / "host" / "secrets" / "cassandra-truststore-password"


def render(root: Path, *, tls: bool, cql_port: int = 9042, storage_port: int = 7000) -> Rendered:
    """Run the local play into ``root`` (again: the recap of a second, idempotent run)."""
    user = getpass.getuser()
    (root / "inventory.yml").write_text(
        "all:\n  hosts:\n    node1:\n      ansible_connection: local\n      ansible_host: 127.0.0.1\n"
        f"      ansible_python_interpreter: {REPO / '.venv' / 'bin' / 'python'}\n"
        "  children:\n    cassandra: {hosts: {node1: {}}}\n    kafka: {hosts: {node1: {}}}\n"
    )
    defaults = json.dumps([str(REPO / path) for path in ROLE_DEFAULTS])
    (root / "play.yml").write_text(PLAYBOOK.format(defaults=defaults))
    settings = {
        "bdf_tls_enabled": tls,
        "bdf_deployment": "unit",
        "bdf_project_dir": str(REPO),
        "bdf_secrets_dir": str(root / "control"),
        "bdf_tls_dir": str(root / "control" / "tls"),
        "bdf_tls_host_dir": str(root / "host" / "tls"),
        "common_config_dir": str(root / "host" / "config"),
        "common_secrets_dir": str(root / "host" / "secrets"),
        "cassandra_config_dir": str(root / "node" / "conf"),
        "cassandra_data_root": str(root / "node" / "data"),
        "cassandra_cqlshrc": str(root / "node" / "cqlshrc"),
        "cassandra_user": user,
        "spark_user": user,
        "bdf_cassandra_port": cql_port,
        "cassandra_storage_port": storage_port,
    }
    for directory in ("control", "host/config", "host/secrets", "node/conf", "node/data"):
        (root / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
    result = subprocess.run(  # noqa: S603 - fixed command
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(root / "inventory.yml"), str(root / "play.yml")),
            *("-e", json.dumps(settings)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # bdf-certs from this tree, also when .venv is another checkout's (an editable install).
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = re.search(r"node1\s+: ok=(\d+)\s+changed=(\d+)", result.stdout)
    return Rendered(root, tls, {"ok": int(recap[1]), "changed": int(recap[2])})


@dataclass
class Node:
    rendered: Rendered
    port: int
    pid: int
    log: Path


def _distribution(work: Path) -> Path:
    if DIST.is_dir():
        return DIST
    with tarfile.open(DIST) as archive:
        archive.extractall(work, filter="data")
    (home,) = [path for path in work.iterdir() if (path / "bin" / "cassandra").exists()]
    return home


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Cassandra exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    pytest.fail(f"Cassandra did not listen on {port} within {timeout}s:\n{log.read_text()[-4000:]}")


@contextmanager
def running_node(work: Path, rendered: Rendered, port: int) -> Iterator[Node]:
    """Cassandra on the rendered cassandra.yaml (CQL on ``port``), stopped at the end."""
    home = _distribution(work)
    for name in ("jvm-server.options", "jvm17-server.options", "logback.xml"):
        shutil.copy(home / "conf" / name, rendered.conf / name)
    log = work / "cassandra.out"
    env = os.environ | {
        "CASSANDRA_CONF": str(rendered.conf),
        "CASSANDRA_LOG_DIR": str(work / "logs"),
        "MAX_HEAP_SIZE": HEAP,
        "HEAP_NEWSIZE": "128M",
        "JMX_PORT": str(demo.free_port()),
        # Test-only start-up shortcuts (one node): no ring delay, no wait for gossip to
        # settle, the default superuser at once.
        "JVM_EXTRA_OPTS": "-Dcassandra.ring_delay_ms=1000 -Dcassandra.skip_wait_for_gossip_to_settle=0"
        " -Dcassandra.superuser_setup_delay_ms=0",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the distribution's own launcher
            [str(home / "bin" / "cassandra"), "-f", "-R"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, process, log)
        yield Node(rendered, port, process.pid, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
