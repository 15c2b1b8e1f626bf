"""Nothing personal readable on the lab's wire (LAB=1, deployed with bdf_tls_enabled).

tcpdump (Debian's, `make deps`: group lab) captures whole packets on the lab bridge while
this test publishes generated profiles as bdf-producer does (sealed, compact UTF-8 JSON),
the stream job stores them in Cassandra and writes their aggregates to FerretDB, and the
dashboard page is fetched over HTTPS. Then the capture is searched, as raw bytes and as
each flow's payloads joined (a needle split over two segments), for the profiles' names,
emails, phones and streets (tests/lab.py personal_needles) and for identifiers that cross
the wire in clear without TLS: each login uuid (Kafka's message key, as text) and
Cassandra's user id (its 16 bytes). The capture must hold Kafka, CQL, MongoDB (the job's
aggregate writes) and dashboard traffic, and a datagram sent in clear with a canary needle:
the scan finds what is there. About 90 s.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.factories import generated_profiles
from tests.lab import (
    BRIDGE,
    CA_FILE,
    CASSANDRA_HOST,
    DASHBOARD_URL,
    HOSTS,
    LAB_ONLY,
    MONGODB_HOST,
    STREAM_HOST,
    TLS,
    TOPIC,
    aggregate_counts,
    eventually,
    kafka_conf,
    needle_pattern,
    personal_needles,
    sealed,
    stored_of,
)

pytestmark = [*LAB_ONLY, pytest.mark.skipif(not TLS, reason="the lab runs without TLS (LAB_TLS=1)")]
PROFILES = 1_000
SERVICE_PORTS = {"kafka": 9092, "cql": 9042, "mongodb": 27017, "dashboard": 8050}
CANARY_PORT = 9  # discard: nothing listens on the lab hosts; the datagram crosses the bridge


def _tcpdump() -> str:
    found = shutil.which("tcpdump")
    if found is None:
        pytest.fail("no tcpdump on this machine: `make deps` installs it (deps/debian-12.txt, group lab)")
    return found


def _start_capture(path: Path) -> subprocess.Popen[str]:
    """tcpdump on the lab bridge: whole packets (-s 0), written per packet (-U), as root
    (-Z root: Debian's tcpdump would drop to its own user, which cannot write here)."""
    capture = subprocess.Popen(  # noqa: S603 - fixed argv
        [_tcpdump(), "-i", BRIDGE, "-n", "-s", "0", "-U", "-Z", "root", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert capture.stderr is not None
    said = []
    while not said or "listening on" not in said[-1]:  # "listening on bdf0, ..." once it captures
        said.append(capture.stderr.readline())
        if not said[-1]:
            pytest.fail(f"tcpdump did not start: {''.join(said)}")
    return capture


def _stop_capture(capture: subprocess.Popen[str]) -> str:
    """tcpdump's own summary ("N packets captured", "... dropped by kernel")."""
    capture.send_signal(signal.SIGINT)
    _, summary = capture.communicate(timeout=30)
    return summary


def _packets(pcap: bytes):
    """(timestamp, frame) of each record of a pcap file (tcpdump -w), whole packets only."""
    magic = pcap[:4]
    order = {
        b"\xd4\xc3\xb2\xa1": "<",
        b"\xa1\xb2\xc3\xd4": ">",
        b"\x4d\x3c\xb2\xa1": "<",
        b"\xa1\xb2\x3c\x4d": ">",
    }
    assert magic in order, f"not a pcap file: {magic!r}"
    assert struct.unpack(order[magic] + "I", pcap[20:24])[0] == 1, "not Ethernet frames"
    offset = 24
    while offset < len(pcap):
        seconds, _, kept, length = struct.unpack(order[magic] + "IIII", pcap[offset : offset + 16])
        assert kept == length, f"a packet cut to {kept} of {length} bytes: the snap length hides data"
        yield seconds, pcap[offset + 16 : offset + 16 + kept]
        offset += 16 + kept


def _flows(pcap: bytes) -> dict[tuple[str, str, int, str, int], bytes]:
    """The TCP and UDP payloads of IPv4 frames, joined per (protocol, source, port,
    destination, port) in capture order (retransmissions repeat, which a search tolerates)."""
    payloads: dict[tuple[str, str, int, str, int], list[bytes]] = collections.defaultdict(list)
    for _, frame in _packets(pcap):
        if frame[12:14] != b"\x08\x00":
            continue  # not IPv4 (ARP, IPv6 neighbour discovery): the lab speaks IPv4
        ip = frame[14:]
        header, total, protocol = (ip[0] & 0x0F) * 4, struct.unpack(">H", ip[2:4])[0], ip[9]
        source, destination = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        segment = ip[header:total]
        if protocol == 6:
            start, name = (segment[12] >> 4) * 4, "tcp"
        elif protocol == 17:
            start, name = 8, "udp"
        else:
            continue
        ports = struct.unpack(">HH", segment[:4])
        if segment[start:]:
            payloads[(name, source, ports[0], destination, ports[1])].append(segment[start:])
    return {flow: b"".join(parts) for flow, parts in payloads.items()}


def _bytes_by_service_port(flows) -> dict[int, int]:
    """Payload bytes seen to or from each port of SERVICE_PORTS on a lab host."""
    addresses, seen = set(HOSTS.values()), collections.Counter()
    for (protocol, source, sport, destination, dport), data in flows.items():
        for address, port in ((source, sport), (destination, dport)):
            if protocol == "tcp" and address in addresses and port in SERVICE_PORTS.values():
                seen[port] += len(data)
    return seen


def _publish(profiles: list[dict]) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka_conf("producer") | {"acks": "all", "enable.idempotence": True})
    for profile in profiles:
        compact = json.dumps(profile, ensure_ascii=False, separators=(",", ":"))  # as orjson writes it
        producer.produce(TOPIC, key=profile["login"]["uuid"].encode(), value=sealed(compact))
        producer.poll(0)
    assert producer.flush(120) == 0


def _fetch_dashboard() -> None:
    context = ssl.create_default_context(cafile=str(CA_FILE))
    with urllib.request.urlopen(DASHBOARD_URL, timeout=30, context=context) as response:  # noqa: S310 - https
        assert response.status == 200 and b"<title>BigDataFlow" in response.read()


def _job_aggregate_bytes(flows) -> int:
    """Payload bytes between the stream job's driver and FerretDB: the job's aggregate writes."""
    pair = {HOSTS[STREAM_HOST], HOSTS[MONGODB_HOST]}
    return sum(
        len(data)
        for (protocol, source, sport, destination, dport), data in flows.items()
        if protocol == "tcp" and {source, destination} == pair and SERVICE_PORTS["mongodb"] in (sport, dport)
    )


def test_no_personal_data_or_identifier_crosses_the_lab_bridge_in_clear(cassandra, mongo, tmp_path):
    assert DASHBOARD_URL.startswith("https://")
    run = uuid.uuid4().hex[:8]
    profiles = generated_profiles(PROFILES, seed=f"wire-{run}")
    ids = [uuid.UUID(profile["login"]["uuid"]) for profile in profiles]
    canary = personal_needles(generated_profiles(1, seed=f"wire-canary-{run}"))
    needles = personal_needles(profiles) | {str(i).encode() for i in ids} | {i.bytes for i in ids}
    pattern = needle_pattern(needles | canary)

    counted_before = aggregate_counts(mongo, "totals").get("all", 0)
    path = tmp_path / "bridge.pcap"  # *.pcap: what Debian's AppArmor profile lets tcpdump write
    capture = _start_capture(path)
    try:
        started = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b" ".join(sorted(canary)), (HOSTS[CASSANDRA_HOST], CANARY_PORT))
        _publish(profiles)
        # Not last: tcpdump, stopped, loses what it has not yet read from the kernel
        # (a fetch just before the stop was missing from the capture).
        _fetch_dashboard()
        eventually(lambda: stored_of(cassandra, ids) == len(ids) or None, 300, "every profile stored")
        # The job writes a batch's aggregates after its rows: stored is not yet counted
        # (CI once stopped the capture before any FerretDB write).
        eventually(
            lambda: aggregate_counts(mongo, "totals").get("all", 0) >= counted_before + len(ids) or None,
            300,
            "every profile counted in the aggregates",
        )
        seconds = time.monotonic() - started
    finally:
        summary = _stop_capture(capture)
    assert re.search(r"^0 packets dropped by kernel$", summary, re.MULTILINE), summary

    pcap = path.read_bytes()
    flows = _flows(pcap)
    seen = _bytes_by_service_port(flows)
    print(f"{len(pcap) / 1e6:.1f} MB in {seconds:.0f} s; payload bytes by port {dict(seen)}")
    assert all(seen[port] > 0 for port in SERVICE_PORTS.values()), f"no traffic on some service port: {seen}"
    assert seen[9092] > PROFILES * 1_000, "the profiles did not cross the bridge to Kafka"
    if STREAM_HOST != MONGODB_HOST:
        assert _job_aggregate_bytes(flows) > 0, "no aggregate write from the job to FerretDB captured"

    found = {match.group() for match in pattern.finditer(pcap)}
    for data in flows.values():
        found |= {match.group() for match in pattern.finditer(data)}
    assert found & canary, "the scan did not find the canary sent in clear: it would miss a leak"
    leaked = sorted(found - canary)
    assert leaked == [], f"{len(leaked)} needles readable on the wire, e.g. {leaked[:5]}"
    path.unlink()  # passed: nothing worth keeping (a failure leaves it in pytest's tmp_path)
