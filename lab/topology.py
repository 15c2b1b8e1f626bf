#!/usr/bin/env python3
"""Read the lab topology (inventory/lab, or the folder LAB_INVENTORY names) for lab/lab.sh.

The Ansible inventory's hosts.yml is the one description of the lab: every host
under `all.hosts` becomes a machine at its `ansible_host`; the lab_* settings live
in its group_vars/all.yml. This helper validates both and prints what the shell
script needs.

  topology.py shell        bash assignments (settings, machine names and addresses)
  topology.py hosts        the /etc/hosts file for the machines
  topology.py check-net    fail if the lab range or bridge clashes with the host's network
  topology.py group GROUP  the addresses of GROUP's machines, one a line, in hosts.yml order

Only the standard library and PyYAML (a dependency of ansible-core).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the host
    sys.exit("lab: PyYAML is missing; run with the project's .venv (make deps, or PYTHON=.venv/bin/python)")

INVENTORY_DIR = Path(
    os.environ.get("LAB_INVENTORY", Path(__file__).resolve().parent.parent / "inventory/lab")
)
# The inventory as messages name it.
INVENTORY_NAME = os.environ.get("LAB_INVENTORY", "inventory/lab").rstrip("/")
REQUIRED_GROUPS = (
    "kafka",
    "spark_master",
    "spark_workers",
    "cassandra",
    "mongodb",
    "stream_job",
    "producer",
    "dashboard",
)
HOSTNAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9_-]{1,15}$")


class TopologyError(Exception):
    """The inventory is wrong; the message names the file and the key."""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise TopologyError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: expected a mapping at the top")
    return data


def _group_hosts(group: dict[str, Any] | None) -> set[str]:
    """All host names in a group and its children."""
    group = group or {}
    names = set((group.get("hosts") or {}).keys())
    for child in (group.get("children") or {}).values():
        names |= _group_hosts(child)
    return names


def inventory_groups(
    group: dict[str, Any] | None, out: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """Every group below ``group`` (an inventory's ``all``) with its hosts, children's included."""
    out = {} if out is None else out
    for name, child in ((group or {}).get("children") or {}).items():
        out[name] = out.get(name, set()) | _group_hosts(child)
        inventory_groups(child, out)
    return out


def _host_mirrors() -> tuple[str, str]:
    """Debian and Debian-security URIs from the host's apt sources, as plain HTTP."""
    main, security = "", ""
    files = [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
    ]
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    entries += [
                        (uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()
                    ]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    entries.append((parts[1], [parts[2]]))
    for uri, suites in entries:
        uri = re.sub(r"^https://", "http://", uri.rstrip("/"))
        if not uri.startswith("http://"):
            continue
        if any(s.endswith("-security") for s in suites) and not security:
            security = uri
        elif (
            uri.endswith("/debian")
            and not main
            and any(s.split("-")[0] in {"bookworm", "stable"} for s in suites)
        ):
            main = uri
    main = main or "http://deb.debian.org/debian"
    return main, security or re.sub(r"/debian$", "/debian-security", main)


def _host_dns() -> list[str]:
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                addr = ipaddress.ip_address(parts[1].split("%")[0])
                if addr.version == 4 and not addr.is_loopback:
                    servers.append(str(addr))
    except (OSError, ValueError):
        pass
    return servers


def load_topology() -> dict[str, Any]:
    hosts_file = INVENTORY_DIR / "hosts.yml"
    vars_file = INVENTORY_DIR / "group_vars/all.yml"
    inv, settings = _load(hosts_file), _load(vars_file)
    root = inv.get("all") or {}

    def setting(key: str) -> Any:
        if key not in settings:
            raise TopologyError(f"{vars_file}: `{key}` is missing")
        return settings[key]

    try:
        subnet = ipaddress.IPv4Network(str(setting("lab_subnet")))
        gateway = ipaddress.IPv4Address(str(setting("lab_gateway")))
    except ValueError as exc:
        raise TopologyError(f"{vars_file}: lab_subnet / lab_gateway: {exc}") from exc
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise TopologyError(
            f"{vars_file}: lab_gateway {gateway} is not a host address of lab_subnet {subnet}"
        )
    if not subnet.is_private:
        raise TopologyError(f"{vars_file}: lab_subnet {subnet} is not a private range")
    bridge = str(setting("lab_bridge"))
    if not BRIDGE_RE.match(bridge):
        raise TopologyError(
            f"{vars_file}: lab_bridge {bridge!r} is not a valid interface name (max 15 chars)"
        )
    table = str(setting("lab_nft_table"))
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", table):
        raise TopologyError(f"{vars_file}: lab_nft_table {table!r} is not a valid nftables name")

    machines: list[tuple[str, str]] = []
    seen = {str(gateway)}
    for name, hostvars in (root.get("hosts") or {}).items():
        if not HOSTNAME_RE.match(str(name)):
            raise TopologyError(f"{hosts_file}: host name {name!r}: use lower-case letters, digits and '-'")
        addr_text = (hostvars or {}).get("ansible_host")
        try:
            addr = ipaddress.IPv4Address(str(addr_text))
        except ValueError as exc:
            raise TopologyError(
                f"{hosts_file}: all.hosts.{name}.ansible_host: {addr_text!r} is not IPv4"
            ) from exc
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise TopologyError(f"{hosts_file}: {name}: {addr} is not a host address of lab_subnet {subnet}")
        if str(addr) in seen:
            raise TopologyError(f"{hosts_file}: {name}: address {addr} is used twice (or is the gateway)")
        seen.add(str(addr))
        machines.append((str(name), str(addr)))
    if not machines:
        raise TopologyError(f"{hosts_file}: no machine under all.hosts")

    groups = inventory_groups(root)
    known = {name for name, _ in machines}
    for group, members in groups.items():
        if members - known:
            raise TopologyError(
                f"{hosts_file}: group {group} names {sorted(members - known)}, which are not under all.hosts"
            )
    for group in REQUIRED_GROUPS:
        if not groups.get(group):
            raise TopologyError(f"{hosts_file}: group `{group}` is missing or empty")

    main, security = _host_mirrors()
    dns = [str(s) for s in (settings.get("lab_dns") or [])] or _host_dns()
    if not dns:
        raise TopologyError(
            f"/etc/resolv.conf has no non-loopback IPv4 name server; set lab_dns in {vars_file}"
        )
    return {
        "bridge": bridge,
        "subnet": str(subnet),
        "prefix": subnet.prefixlen,
        "gateway": str(gateway),
        "nft_table": table,
        "state_dir": str(setting("lab_state_dir")),
        "suite": str(setting("lab_suite")),
        "mirror": re.sub(r"^https://", "http://", str(settings.get("lab_apt_mirror") or main)),
        "security_mirror": re.sub(
            r"^https://", "http://", str(settings.get("lab_apt_security_mirror") or security)
        ),
        "dns": dns,
        "boot_timeout": int(settings.get("lab_boot_timeout") or 120),
        "machines": machines,
        "groups": {g: sorted(m) for g, m in sorted(groups.items())},
    }


def cmd_shell(topo: dict[str, Any]) -> None:
    q = shlex.quote
    for key in (
        "bridge",
        "subnet",
        "prefix",
        "gateway",
        "nft_table",
        "state_dir",
        "suite",
        "mirror",
        "security_mirror",
        "boot_timeout",
    ):
        print(f"LAB_{key.upper()}={q(str(topo[key]))}")
    print(f"LAB_DNS=({' '.join(q(s) for s in topo['dns'])})")
    print(f"LAB_MACHINES=({' '.join(q(n) for n, _ in topo['machines'])})")
    print("declare -gA LAB_ADDR=(" + " ".join(f"[{q(n)}]={q(a)}" for n, a in topo["machines"]) + ")")


def cmd_hosts(topo: dict[str, Any]) -> None:
    print("127.0.0.1\tlocalhost")
    print("::1\t\tlocalhost ip6-localhost ip6-loopback")
    print("ff02::1\t\tip6-allnodes")
    print("ff02::2\t\tip6-allrouters")
    print(f"# BigDataFlow lab machines (lab/lab.sh, from {INVENTORY_NAME}/hosts.yml)")
    for name, addr in topo["machines"]:
        print(f"{addr}\t{name}")


def _ip_json(*args: str) -> list[dict[str, Any]]:
    """`ip -j ARGS` parsed."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    out = subprocess.run([ip, "-j", *args], check=True, capture_output=True, text=True).stdout  # noqa: S603
    return json.loads(out or "[]")


def cmd_check_net(topo: dict[str, Any]) -> None:
    """Exit 1 with a message if another interface or route already uses the lab range."""
    subnet = ipaddress.IPv4Network(topo["subnet"])
    bridge = topo["bridge"]
    links = _ip_json("-4", "addr")
    problems = []
    for link in links:
        for info in link.get("addr_info", []):
            net = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}").network
            if link["ifname"] == bridge:
                if info["local"] != topo["gateway"] or net != subnet:
                    problems.append(
                        f"bridge {bridge} already has {info['local']}/{info['prefixlen']}, "
                        f"not {topo['gateway']}/{topo['prefix']}"
                    )
            elif net.overlaps(subnet):
                problems.append(
                    f"interface {link['ifname']} has {info['local']}/{info['prefixlen']}, "
                    f"which overlaps lab_subnet {subnet}"
                )
    routes = _ip_json("-4", "route", "show", "table", "all")
    for route in routes:
        dst = route.get("dst", "")
        if (
            dst in ("default", "")
            or route.get("dev") == bridge
            or route.get("type") in ("local", "broadcast")
        ):
            continue
        try:
            if ipaddress.IPv4Network(dst, strict=False).overlaps(subnet):
                problems.append(f"route {dst} dev {route.get('dev')} overlaps lab_subnet {subnet}")
        except ValueError:
            continue
    if Path(f"/sys/class/net/{bridge}").exists() and not Path(f"/sys/class/net/{bridge}/bridge").exists():
        problems.append(f"interface {bridge} exists and is not a bridge")
    if problems:
        sys.exit(
            "lab: network conflict:\n  "
            + "\n  ".join(problems)
            + f"\n  -> pick another lab_bridge / lab_subnet in {INVENTORY_NAME}/group_vars/all.yml "
            f"(and the ansible_host addresses in {INVENTORY_NAME}/hosts.yml)"
        )


def cmd_group(topo: dict[str, Any], group: str) -> None:
    if group not in topo["groups"]:
        sys.exit(f"lab: no group `{group}` in {INVENTORY_NAME}/hosts.yml (have: {' '.join(topo['groups'])})")
    for name, addr in topo["machines"]:
        if name in topo["groups"][group]:
            print(addr)


def main(argv: list[str]) -> None:
    commands = {"shell": cmd_shell, "hosts": cmd_hosts, "check-net": cmd_check_net}
    usage = f"usage: {argv[0]} {{{'|'.join(commands)}}} | {argv[0]} group GROUP"
    if not ((len(argv) == 2 and argv[1] in commands) or (len(argv) == 3 and argv[1] == "group")):
        sys.exit(usage)
    try:
        topo = load_topology()
    except TopologyError as exc:
        sys.exit(f"lab: {exc}")
    if argv[1] == "group":
        cmd_group(topo, argv[2])
    else:
        commands[argv[1]](topo)


if __name__ == "__main__":
    main(sys.argv)
