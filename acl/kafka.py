"""Run the Kafka command-line tools: kafka-acls.sh, kafka-configs.sh, kafka-cluster.sh.

Admin credentials come from a client properties file (``--command-config``) or from
the environment (``BDF_ACL_SASL_USERNAME`` / ``BDF_ACL_SASL_PASSWORD``, written to a
private temporary properties file for the duration of the run): never from argv,
where ``ps`` would show them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from acl.listing import parse_acl_listing, parse_scram_users
from acl.model import Acl, operation_arg, principal_user
from acl.plan import Credential
from bdf.clients import kafka_properties
from bdf.config import ConfigError, Credentials, KafkaConnection, describe_validation_error

log = logging.getLogger("bdf.acl.kafka")

ENV_USERNAME = "BDF_ACL_SASL_USERNAME"
ENV_PASSWORD = "BDF_ACL_SASL_PASSWORD"  # noqa: S105 - the name of a variable, not a password
ENV_MECHANISM = "BDF_ACL_SASL_MECHANISM"
ENV_PROTOCOL = "BDF_ACL_SECURITY_PROTOCOL"
ENV_CA_FILE = "BDF_ACL_CA_FILE"
DEFAULT_TIMEOUT_SECONDS = 180.0
# The tools' JVMs live for seconds: little memory, no optimising compiler (a third faster
# to start). KAFKA_HEAP_OPTS / KAFKA_JVM_PERFORMANCE_OPTS in the environment win.
DEFAULT_JVM_ENV = {
    "KAFKA_HEAP_OPTS": "-Xmx256m",
    "KAFKA_JVM_PERFORMANCE_OPTS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true",
}

_RESOURCE_ARGS = {
    "TOPIC": "--topic",
    "GROUP": "--group",
    "TRANSACTIONAL_ID": "--transactional-id",
    "DELEGATION_TOKEN": "--delegation-token",
    "USER": "--user-principal",
}


class KafkaToolError(Exception):
    """A Kafka tool could not be run or failed; the message says which and why."""


@dataclass
class KafkaTools:
    """The Kafka tools of one installation, talking to one cluster as the admin."""

    kafka_bin: Path
    bootstrap_server: str
    command_config: Path
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    # --- reading -------------------------------------------------------------------

    def list_acls(self) -> set[Acl]:
        return parse_acl_listing(self.run("kafka-acls.sh", ["--list"]))

    def scram_users(self) -> dict[str, tuple[str, ...]]:
        return parse_scram_users(self.run("kafka-configs.sh", ["--describe", "--entity-type", "users"]))

    def cluster_id(self) -> str:
        output = self.run("kafka-cluster.sh", ["cluster-id"], config_flag="--command-config", subcommand=True)
        for line in output.splitlines():
            if line.startswith("Cluster ID:"):
                return line.split(":", 1)[1].strip()
        raise KafkaToolError(f"kafka-cluster.sh cluster-id printed no cluster id: {output.strip()[:200]}")

    # --- changing ------------------------------------------------------------------

    def add_acls(self, batch: list[Acl]) -> None:
        """Add one batch (see :func:`acl_batches`) in one kafka-acls.sh call."""
        self.run("kafka-acls.sh", ["--add", *acl_args(batch)])

    def remove_acls(self, batch: list[Acl]) -> None:
        self.run("kafka-acls.sh", ["--remove", "--force", *acl_args(batch)])

    def delete_credential(self, credential: Credential) -> None:
        # One mechanism per request: Kafka refuses to alter a user's credential twice in one.
        self.run(
            "kafka-configs.sh",
            [
                "--alter",
                "--entity-type",
                "users",
                "--entity-name",
                principal_user(credential.principal),
                "--delete-config",
                credential.mechanism,
            ],
        )

    # --- plumbing ------------------------------------------------------------------

    def run(
        self, tool: str, args: list[str], config_flag: str = "--command-config", subcommand: bool = False
    ) -> str:
        """Run a tool against the cluster and return its standard output."""
        executable = self.kafka_bin / tool
        connection = ["--bootstrap-server", self.bootstrap_server, config_flag, str(self.command_config)]
        # kafka-cluster.sh takes its subcommand first, the connection options after it.
        argv = [str(executable), *args, *connection] if subcommand else [str(executable), *connection, *args]
        env = {**DEFAULT_JVM_ENV, **self.env}
        log.debug("running %s", tool, extra={"fields": {"argv": argv}})
        try:
            result = subprocess.run(  # noqa: S603 - argv list, no shell
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=env,
                check=False,
            )
        except FileNotFoundError:
            raise KafkaToolError(
                f"{executable} not found: set --kafka-bin to Kafka's bin directory"
            ) from None
        except PermissionError:
            raise KafkaToolError(f"{executable} is not executable") from None
        except subprocess.TimeoutExpired:
            raise KafkaToolError(
                f"{tool} did not answer within {self.timeout:.0f}s: is {self.bootstrap_server} reachable?"
            ) from None
        if result.returncode != 0:
            raise KafkaToolError(
                f"{tool} {' '.join(args[:2])} failed (exit {result.returncode}):"
                f" {error_summary(result.stdout, result.stderr)}"
            )
        return result.stdout


def acl_batches(acls: Iterable[Acl]) -> list[list[Acl]]:
    """The ACLs grouped so that one kafka-acls.sh call handles each group.

    One call applies every combination of its principals, operations and resources (for
    one pattern type, permission and host), so a group is such a product: the members of
    a team with the same grant, say. Fewer calls, fewer JVM starts (seconds each).
    """
    by_resource: dict[tuple[str, ...], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for acl in acls:
        key = (acl.pattern, acl.permission, acl.host, acl.resource_type, acl.name)
        by_resource[key][acl.principal].add(acl.operation)
    rectangles: dict[tuple[object, ...], list[tuple[str, str]]] = defaultdict(list)
    for (pattern, permission, host, resource_type, name), operations_of in by_resource.items():
        principals_of: dict[frozenset[str], list[str]] = defaultdict(list)
        for principal, operations in operations_of.items():
            principals_of[frozenset(operations)].append(principal)
        for operations, principals in principals_of.items():
            key = (pattern, permission, host, frozenset(principals), operations)
            rectangles[key].append((resource_type, name))
    batches = []
    for (pattern, permission, host, principals, operations), resources in rectangles.items():
        batches.append(
            sorted(
                Acl(principal, resource_type, name, pattern, operation, permission, host)
                for principal in principals
                for operation in operations
                for resource_type, name in resources
            )
        )
    return sorted(batches)


def acl_args(batch: list[Acl]) -> list[str]:
    """kafka-acls.sh arguments for one batch (every principal x operation x resource)."""
    first = batch[0]
    principals = sorted({acl.principal for acl in batch})
    operations = sorted({acl.operation for acl in batch})
    resources = sorted({(acl.resource_type, acl.name) for acl in batch})
    shared = {(acl.pattern, acl.permission, acl.host) for acl in batch}
    if len(shared) != 1 or len(set(batch)) != len(principals) * len(operations) * len(resources):
        raise ValueError("one kafka-acls.sh call applies every principal x operation x resource")
    side = "allow" if first.permission == "ALLOW" else "deny"
    args = []
    for principal in principals:
        args += [f"--{side}-principal", principal]
    args += [f"--{side}-host", first.host]
    for operation in operations:
        args += ["--operation", operation_arg(operation)]
    for resource_type, name in resources:
        args += resource_args(resource_type, name)
    return [*args, "--resource-pattern-type", first.pattern]


def resource_args(resource_type: str, name: str) -> list[str]:
    if resource_type == "CLUSTER":
        return ["--cluster"]
    if resource_type not in _RESOURCE_ARGS:
        raise KafkaToolError(f"kafka-acls.sh has no option for resource type {resource_type}")
    return [_RESOURCE_ARGS[resource_type], name]


def error_summary(stdout: str, stderr: str) -> str:
    """The one line of a tool's output that says what went wrong."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("Caused by: ")]
    if causes:
        return causes[-1].removeprefix("Caused by: ")[:500]
    for line in lines:
        if line.startswith(("Error while executing", "Exception in thread")):
            return line[:500]
    for line in lines:
        # Skip log4j lines ("[2026-01-01 10:00:00,000] WARN ...") and usage text.
        if not line.startswith(("[", "Option", "------", "--")):
            return line[:500]
    return "no error message (run with -v)"


# --- credentials --------------------------------------------------------------------


@contextlib.contextmanager
def admin_config(
    command_config: Path, explicit: bool, env: Mapping[str, str], bootstrap_server: str
) -> Iterator[Path]:
    """The admin client properties file to pass to the tools.

    An explicit ``--command-config`` wins; otherwise credentials in the environment
    (``BDF_ACL_SASL_USERNAME``/``BDF_ACL_SASL_PASSWORD``, with ``BDF_ACL_SECURITY_PROTOCOL``
    and ``BDF_ACL_CA_FILE`` for TLS) are written by bdf.clients to a temporary file only
    this user can read, removed afterwards; otherwise the default file is used.
    """
    username, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if not explicit and username and password:
        properties = _environment_properties(
            env, bootstrap_server, Credentials(username=username, password=password)
        )
        with tempfile.TemporaryDirectory(prefix="bdf-acl-") as directory:
            path = Path(directory) / "admin-client.properties"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(properties)
            yield path
        return
    if not command_config.is_file():
        raise KafkaToolError(
            f"admin client config {command_config} not found: set --command-config"
            f" (BDF_ACL_COMMAND_CONFIG), or {ENV_USERNAME} and {ENV_PASSWORD}"
        )
    yield command_config


def _environment_properties(env: Mapping[str, str], bootstrap_server: str, credentials: Credentials) -> str:
    """The admin properties (bdf.clients) for a login and TLS settings from the environment."""
    try:
        connection = KafkaConnection(
            bootstrap_servers=[bootstrap_server],
            security_protocol=env.get(ENV_PROTOCOL, "SASL_PLAINTEXT"),
            sasl_mechanism=env.get(ENV_MECHANISM, "SCRAM-SHA-512"),
            ca_file=env.get(ENV_CA_FILE) or None,
        )
        return kafka_properties(connection, credentials)
    except ValidationError as exc:
        subject = f"Kafka settings from {ENV_PROTOCOL}, {ENV_MECHANISM} and {ENV_CA_FILE}"
        raise KafkaToolError(describe_validation_error(exc, subject)) from None
    except ConfigError as exc:
        raise KafkaToolError(f"{exc} (from {ENV_USERNAME}/{ENV_PASSWORD}, {ENV_CA_FILE})") from None
