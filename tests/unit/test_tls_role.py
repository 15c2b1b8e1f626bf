"""roles/tls on this machine (connection local, every path in a temporary directory): a
service's copies, and the rotation that renews the certificate and restarts exactly the
services recorded for it, through their role's own restart tasks.

playbooks/rotate_certs.yml is this rotation behind the deployment's guard plays; the
lab test (tests/integration/test_tls_certs.py) checks what a real deploy installs."""

from __future__ import annotations

import getpass
import json
import re
import stat
import textwrap

import pytest
from cryptography import x509

from tests.lab import REPO
from tests.roles import ansible_playbook

PLAYBOOK = """\
- name: Deploy the certificate, give it to the probe service, rotate when asked
  hosts: all
  gather_facts: false
  vars:
    bdf_project_dir: {repo}
    bdf_tls_dir: {tmp}/control/tls
    bdf_tls_host_dir: {tmp}/host/tls
    bdf_deployment: unit
  tasks:
    - name: The certificate (roles/tls)
      ansible.builtin.include_role:
        name: tls
    - name: The probe service's copies (what a service role includes)
      ansible.builtin.include_role:
        name: tls
        tasks_from: service.yml
      vars:
        tls_service: probe
        tls_service_user: {user}
        tls_service_dir: {tmp}/host/probe
        tls_service_role: tls_probe
        tls_service_restart_tasks: restart.yml
      when: not rotate | bool
    - name: The rotation (playbooks/rotate_certs.yml)
      ansible.builtin.include_role:
        name: tls
        tasks_from: rotate
      when: rotate | bool
"""


@pytest.fixture
def lab(tmp_path):
    probe = tmp_path / "roles" / "tls_probe" / "tasks"
    probe.mkdir(parents=True)
    # Stands for a service role's restart_and_wait.yml: each restart leaves one line.
    (probe / "restart.yml").write_text(
        textwrap.dedent(f"""\
        - name: Probe | Restart
          ansible.builtin.shell: echo restarted >> {tmp_path}/restarts
          changed_when: true
        """)
    )
    (tmp_path / "inventory.yml").write_text(
        "all:\n  hosts:\n    node1:\n      ansible_connection: local\n      ansible_host: 127.0.0.1\n"
        "      ansible_python_interpreter: " + str(REPO / ".venv" / "bin" / "python") + "\n"
    )
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(repo=REPO, tmp=tmp_path, user=getpass.getuser()))
    return tmp_path


def _play(lab, **extra) -> dict[str, int]:
    output = ansible_playbook(
        lab / "inventory.yml", lab / "play.yml", {"rotate": False} | extra, roles_path=[lab / "roles"]
    )
    recap = re.search(r"node1\s+: ok=(\d+)\s+changed=(\d+)", output)
    return {"ok": int(recap[1]), "changed": int(recap[2])}


def _restarts(lab) -> int:
    marker = lab / "restarts"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _serial(path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_service_copies_then_rotation_restarts_only_when_the_certificate_changed(lab):
    assert _play(lab)["changed"] > 0
    probe, host = lab / "host" / "probe", lab / "host" / "tls"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in probe.iterdir()} == {
        "ca.crt": 0o644,
        "host.crt": 0o644,
        "host.key": 0o600,
        "keystore.pem": 0o600,
    }
    assert stat.S_IMODE((host / "host.key").stat().st_mode) == 0o600
    keystore = (probe / "keystore.pem").read_text()
    assert keystore.index("PRIVATE KEY") < keystore.index("CERTIFICATE")  # key, then the chain
    assert len(x509.load_pem_x509_certificates(keystore.encode())) == 2
    registered = json.loads((host / "services" / "probe.json").read_text())
    assert registered["role"] == "tls_probe" and registered["restart_tasks"] == "restart.yml"
    assert _restarts(lab) == 0

    first_serial = _serial(probe / "host.crt")
    _play(lab, rotate=True, bdf_tls_renew=True)
    assert _restarts(lab) == 1
    assert _serial(probe / "host.crt") == _serial(host / "host.crt") != first_serial
    assert (probe / "keystore.pem").read_text() != keystore

    # Nothing due: the certificate and every copy stay (changed=0), nothing restarts.
    assert _play(lab, rotate=True, bdf_tls_renew=False)["changed"] == 0
    assert _restarts(lab) == 1, "restarted although nothing was due for renewal"
