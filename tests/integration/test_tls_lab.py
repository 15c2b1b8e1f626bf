"""TLS on every service port of the lab (LAB=1, deployed with bdf_tls_enabled), from the
control node: a client that does not speak TLS gets no answer in its protocol, a TLS
client trusting another CA fails the certificate check, and one trusting the deployment
CA completes the handshake (chain and address verified), so the checks can fail.

The clear-text clients send their protocol's first request as raw bytes: Kafka's
ApiVersions, CQL's OPTIONS, a MongoDB hello, Cassandra's internode Initiate, an HTTP GET.
Each answers a clear-text server with a well-formed reply (checked against the lab
deployed without TLS, and `test_each_probe_is_answered_by_a_clear_text_server` keeps it
checked there). What a TLS server does with them is asserted per server: Kafka (Java's
TLS engine) answers one fatal TLS alert record, then closes; the others close without
a byte back. About 20 s.

The Spark UIs (8080, 8081, 4040) answer only on their own hosts:
tests/integration/test_pipeline.py::test_spark_web_ui_answers_only_its_own_host covers
them, with TLS and without.
"""

from __future__ import annotations

import socket
import ssl
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.lab import CA_FILE, DASHBOARD_HOST, HOSTS, LAB_ONLY, TLS, TLS_PORTS, tls_handshake
from tests.tls import certificate_authority, write_pem

pytestmark = LAB_ONLY
NEEDS_TLS = pytest.mark.skipif(not TLS, reason="the lab runs without TLS (bdf_tls_enabled, LAB_TLS=1)")
CORRELATION_ID = 0x0BDF7E57


def _kafka_api_versions() -> bytes:
    """ApiVersions v0 (header v1: api key 18, version 0, correlation id, client id)."""
    client = b"bdf-tls-probe"
    request = struct.pack(">hhih", 18, 0, CORRELATION_ID, len(client)) + client
    return struct.pack(">i", len(request)) + request


def _kafka_answered(reply: bytes) -> bool:
    return len(reply) >= 10 and struct.unpack(">i", reply[4:8])[0] == CORRELATION_ID


# CQL v4 OPTIONS: version 4 (request), no flags, stream 1, opcode 5, empty body.
CQL_OPTIONS = struct.pack(">BBhBi", 0x04, 0, 1, 0x05, 0)


def _cql_answered(reply: bytes) -> bool:
    """A response frame (version byte with the response bit) on stream 1: SUPPORTED or ERROR."""
    return len(reply) >= 9 and reply[0] & 0x80 != 0 and reply[2:4] == b"\x00\x01" and reply[4] in (0x06, 0x00)


def _mongodb_hello() -> bytes:
    """OP_MSG {hello: 1, $db: "admin"}: 52 bytes, so its first byte is no TLS record type."""
    document = b"\x10hello\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00"
    bson = struct.pack("<i", len(document) + 5) + document + b"\x00"
    body = struct.pack("<I", 0) + b"\x00" + bson
    return struct.pack("<iiii", 16 + len(body), CORRELATION_ID, 0, 2013) + body


def _mongodb_answered(reply: bytes) -> bool:
    """A reply (OP_MSG or OP_REPLY) to our request id."""
    if len(reply) < 16:
        return False
    _, _, response_to, opcode = struct.unpack("<iiii", reply[:16])
    return response_to == CORRELATION_ID and opcode in (1, 2013)


def _cassandra_crc(data: bytes) -> int:
    """Cassandra's internode handshake CRC (net/Crc.java): CRC32 seeded with 4 fixed bytes."""
    return zlib.crc32(data, zlib.crc32(b"\xfa\x2d\x55\xca"))


def _internode_initiate() -> bytes:
    """HandshakeProtocol.Initiate (4.0+) asking for messaging version 255 only: a clear-text
    node answers Accept with its own version, then closes (no version in common), so the
    probe leaves no connection or peer state behind."""
    version = 255
    flags = 1 | (1 << 2) | (version << 8) | (version << 16) | (version << 24)  # small messages, CRC framing
    sender = bytes([6]) + socket.inet_aton("127.0.0.1") + struct.pack(">H", 7000)  # address and port
    message = struct.pack(">II", 0xCA552DFA, flags) + sender
    return message + struct.pack(">I", _cassandra_crc(message))


def _internode_answered(reply: bytes) -> bool:
    """HandshakeProtocol.Accept: max and used messaging versions, then their CRC."""
    return len(reply) >= 12 and struct.unpack(">I", reply[8:12])[0] == _cassandra_crc(reply[:8])


def _http_answered(reply: bytes) -> bool:
    return reply.startswith(b"HTTP/")


@dataclass(frozen=True)
class Probe:
    hello: bytes
    answered: Callable[[bytes], bool]  # whether bytes are the protocol's well-formed reply
    alert_first: bool  # what the TLS server does with it: one fatal TLS alert (else: nothing) then close


KAFKA = Probe(_kafka_api_versions(), _kafka_answered, alert_first=True)
PROBES = {
    "kafka": KAFKA,
    "kafka-controller": KAFKA,
    "cql": Probe(CQL_OPTIONS, _cql_answered, alert_first=False),
    "cassandra-internode": Probe(_internode_initiate(), _internode_answered, alert_first=False),
    "mongodb": Probe(_mongodb_hello(), _mongodb_answered, alert_first=False),
    "dashboard": Probe(
        f"GET / HTTP/1.1\r\nHost: {HOSTS[DASHBOARD_HOST]}\r\nConnection: close\r\n\r\n".encode(),
        _http_answered,
        alert_first=False,
    ),
}


def exchange(address: str, port: int, probe: Probe, timeout: float = 10) -> tuple[bytes, str]:
    """(what the server sent back to ``probe``, how that ended): "answered" once the bytes
    are its protocol's reply, else "closed", "reset" or "silent" (open after ``timeout``)."""
    reply = b""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        try:
            sock.sendall(probe.hello)
            while chunk := sock.recv(65536):
                reply += chunk
                if probe.answered(reply):
                    return reply, "answered"
        except ConnectionResetError:
            return reply, "reset"
        except TimeoutError:
            return reply, "silent"
    return reply, "closed"


def tls_alerts(data: bytes) -> list[tuple[int, int]] | None:
    """(level, description) of each TLS alert record ``data`` is made of; None if it holds
    anything else (a record of another type, a partial record)."""
    alerts = []
    while data:
        if len(data) < 7 or data[0] != 0x15 or data[1] != 0x03 or data[3:5] != b"\x00\x02":
            return None
        alerts.append((data[5], data[6]))
        data = data[7:]
    return alerts


@NEEDS_TLS
@pytest.mark.parametrize("service", TLS_PORTS)
def test_a_client_without_tls_gets_no_answer_in_its_protocol(service):
    host, port = TLS_PORTS[service]
    reply, ended = exchange(HOSTS[host], port, PROBES[service])
    assert ended in {"closed", "reset"}, f"{service}: {ended} after {reply[:64]!r}: not refused"
    if PROBES[service].alert_first:
        alerts = tls_alerts(reply)
        assert alerts is not None and len(alerts) == 1, f"{service}: {reply[:64]!r} is not one TLS alert"
        assert alerts[0][0] == 2, f"{service}: alert {alerts[0]} is not fatal"
    else:
        assert reply == b"", f"{service}: sent {reply[:64]!r} to a client without TLS"


@pytest.mark.skipif(TLS, reason="the lab runs with TLS: no clear-text server to check the probes against")
@pytest.mark.parametrize("service", TLS_PORTS)
def test_each_probe_is_answered_by_a_clear_text_server(service):
    """Without TLS, the probes get their protocol's reply: their refusal above is TLS's doing."""
    host, port = TLS_PORTS[service]
    reply, ended = exchange(HOSTS[host], port, PROBES[service])
    assert ended == "answered", f"{service}: {ended} after {reply[:64]!r}"


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory):
    path, _ = write_pem(tmp_path_factory.mktemp("other-ca"), "other-ca", certificate_authority("another CA"))
    return path


@NEEDS_TLS
@pytest.mark.parametrize("service", TLS_PORTS)
def test_a_tls_client_trusting_another_ca_fails_the_certificate_check(service, other_ca):
    host, port = TLS_PORTS[service]
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        tls_handshake(host, port, other_ca)
    # 20: the chain ends at a CA we lack; 19: it includes the deployment CA, which we do not trust.
    assert refused.value.verify_code in (19, 20), refused.value.verify_message


@NEEDS_TLS
@pytest.mark.parametrize("service", TLS_PORTS)
def test_a_tls_client_trusting_the_deployment_ca_completes_the_handshake(service):
    host, port = TLS_PORTS[service]
    version, certificate = tls_handshake(host, port)
    assert version in {"TLSv1.3", "TLSv1.2"}
    assert certificate.subject.rfc4514_string() == f"CN={host}"


@NEEDS_TLS
def test_the_internode_port_refuses_a_tls_client_without_a_node_certificate():
    """require_client_auth: in TLS 1.3 the client's side of the handshake ends before the
    node reads its (empty) certificate; the node's refusal is the next record."""
    host, port = TLS_PORTS["cassandra-internode"]
    context = ssl.create_default_context(cafile=str(CA_FILE))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection((HOSTS[host], port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=HOSTS[host]) as tls,
        pytest.raises(ssl.SSLError, match="TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    ):
        tls.recv(1)
