"""The certificates the deploy installs (LAB=1, after the e2e deploy): the deployment CA and
each host's certificate in /etc/bigdataflow/tls with safe owners and modes, and a real TLS
handshake against each host's own key, by its inventory name and by its address, that
the deployment CA accepts and another CA refuses.

The handshake's server is `openssl s_server` on the host itself: the key never leaves it.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest

from bdf.certs import ca_files, ensure_ca
from tests.lab import HOSTS, LAB_ONLY, REPO, SECRETS, ssh
from tests.polling import eventually

pytestmark = LAB_ONLY

TLS = "/etc/bigdataflow/tls"
CA = SECRETS / "tls" / "ca.crt"
PORT = 18443  # on the lab bridge, for the duration of one test


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_host_has_the_deployment_ca_and_its_own_certificate_and_root_only_key(host):
    listing = ssh(host, f"stat -c '%n %U:%G %a' {TLS} {TLS}/ca.crt {TLS}/host.crt {TLS}/host.key")
    assert listing.returncode == 0, listing.stderr
    assert dict(line.split(" ", 1) for line in listing.stdout.splitlines()) == {
        TLS: "root:root 755",
        f"{TLS}/ca.crt": "root:root 644",
        f"{TLS}/host.crt": "root:root 644",
        f"{TLS}/host.key": "root:root 600",
    }
    assert ssh(host, f"cat {TLS}/ca.crt").stdout.strip() == CA.read_text().strip()
    shown = subprocess.run(  # noqa: S603 - fixed command
        [str(REPO / ".venv/bin/bdf-certs"), "show", "--json", "-"],
        input=ssh(host, f"cat {TLS}/host.crt").stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    [certificate] = json.loads(shown.stdout)
    assert certificate["subject"] == f"CN={host}"
    assert certificate["days_left"] > 30, "inside the renewal window right after a deploy"


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_host_key_and_certificate_pass_a_tls_handshake_by_name_and_address_with_the_deployment_ca_only(
    host, tmp_path
):
    address = HOSTS[host]
    ensure_ca(tmp_path / "other", "other")
    # Three connections, then it exits; `timeout` ends it on the host whatever happens here.
    server = subprocess.Popen(  # noqa: S603 - fixed command
        [  # noqa: S607 - as tests/lab.py's ssh
            "bash",
            str(REPO / "lab" / "lab.sh"),
            "ssh",
            host,
            f"timeout 120 openssl s_server -www -naccept 3 -cert {TLS}/host.crt -key {TLS}/host.key"
            f" -accept {address}:{PORT}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for server_hostname in (host, address):
            version = eventually(
                lambda name=server_hostname: _handshake(address, name, CA), 60, f"TLS on {address}:{PORT}", 1
            )
            assert version in {"TLSv1.2", "TLSv1.3"}
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
            _handshake(address, host, ca_files(tmp_path / "other")[1])
    finally:
        server.terminate()
        server.wait(timeout=30)


def _handshake(address: str, server_hostname: str, cafile) -> str | None:
    """The TLS version after a verified handshake (chain and name); None while nothing listens."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection((address, PORT), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=server_hostname) as tls,
        ):
            return tls.version()
    except ConnectionRefusedError:
        return None
