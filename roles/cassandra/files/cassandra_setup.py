"""Idempotent Cassandra security and schema setup, run by the cassandra role.

Reads a JSON request on stdin (passwords never on the command line) and prints one
JSON line: {"changed": bool, "actions": [...]}. Steps:
1. log in as the deployment's admin role, or, on a fresh cluster, as the default
   ``cassandra`` superuser to create that admin role, then disable ``cassandra``;
2. replicate ``system_auth`` with NetworkTopologyStrategy;
3. apply the schema (CREATE ... IF NOT EXISTS statements), then bring what CREATE
   leaves alone on an existing schema in line: the keyspace's replication and the
   table's default TTL (the profiles' retention; it applies to rows written after);
4. create the application role with rights on its keyspace only.
"""

from __future__ import annotations

import json
import re
import sys
import time

from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable, Session

# The project's venv (bdf_python, on every host) runs this script: the one client factory.
from bdf.clients import cassandra_cluster
from bdf.config import CassandraConnection, Credentials

DEFAULT_SUPERUSER = ("cassandra", "cassandra")


def connect(request: dict, username: str, password: str) -> Session:
    connection = CassandraConnection(
        hosts=request["hosts"],
        port=request["port"],
        local_datacenter=request["datacenter"],
        tls=request.get("tls", False),
        ca_file=request.get("ca_file"),
    )
    credentials = Credentials(username=username, password=password)
    return cassandra_cluster(connection, credentials, connect_timeout=10).connect()


def is_auth_failure(error: Exception) -> bool:
    if isinstance(error, AuthenticationFailed):
        return True
    errors = getattr(error, "errors", {}) or {}
    return any(isinstance(e, AuthenticationFailed) or "Bad credentials" in str(e) for e in errors.values())


def admin_session(request: dict, actions: list[str]) -> Session:
    """Log in as the admin role, creating it from the default superuser on first run."""
    deadline = time.monotonic() + request.get("timeout", 180)
    while True:
        try:
            return connect(request, request["admin_user"], request["admin_password"])
        except NoHostAvailable as exc:
            if not is_auth_failure(exc):
                if time.monotonic() > deadline:
                    raise
                time.sleep(5)  # the node is still starting
                continue
        try:
            default = connect(request, *DEFAULT_SUPERUSER)
        except NoHostAvailable as exc:
            if time.monotonic() > deadline:
                user = request["admin_user"]
                raise SystemExit(f"cannot log in as {user} nor as the default superuser: {exc}") from None
            time.sleep(5)  # the default superuser is created a few seconds after start
            continue
        admin = request["admin_user"]
        default.execute(
            f"CREATE ROLE IF NOT EXISTS {admin} WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = %s",
            (request["admin_password"],),
        )
        default.cluster.shutdown()
        actions.append(f"created admin role {request['admin_user']}")
        time.sleep(3)  # credentials_validity is 2 s


def ensure_default_superuser_disabled(session: Session, actions: list[str]) -> None:
    row = session.execute(
        "SELECT can_login, is_superuser FROM system_auth.roles WHERE role = 'cassandra'"
    ).one()
    if row and (row.can_login or row.is_superuser):
        session.execute("ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false")
        actions.append("disabled the default cassandra superuser")


def ensure_replication(
    session: Session, keyspace: str, datacenter: str, factor: int, actions: list[str]
) -> None:
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    wanted = {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", datacenter: str(factor)}
    if row is not None and dict(row.replication) != wanted:
        session.execute(
            f"ALTER KEYSPACE {keyspace} WITH replication = "
            f"{{'class': 'NetworkTopologyStrategy', '{datacenter}': {factor}}}"
        )
        actions.append(f"set replication of {keyspace} to {datacenter}:{factor}")


def ensure_default_ttl(session: Session, keyspace: str, table: str, ttl: int, actions: list[str]) -> None:
    row = session.execute(
        "SELECT default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
        (keyspace, table),
    ).one()
    if row is not None and row.default_time_to_live != ttl:
        session.execute(f"ALTER TABLE {keyspace}.{table} WITH default_time_to_live = {ttl}")
        actions.append(f"set default_time_to_live of {keyspace}.{table} to {ttl} s (new writes)")


def _names(session: Session, table: str, column: str | None) -> set[str]:
    rows = session.execute(
        f"SELECT keyspace_name{', ' + column if column else ''} FROM system_schema.{table}"  # noqa: S608 constants
    )
    return {f"{row[0]}.{row[1]}" if column else row[0] for row in rows}


def schema_objects(session: Session) -> set[str]:
    return (
        _names(session, "tables", "table_name")
        | _names(session, "indexes", "index_name")
        | _names(session, "keyspaces", None)
    )


def apply_schema(session: Session, cql: str, actions: list[str]) -> None:
    before = schema_objects(session)
    # Statements end with ";" at the end of a line (a ";" inside a string stays).
    for statement in filter(None, (s.strip() for s in re.split(r";\s*$", strip_comments(cql), flags=re.M))):
        session.execute(statement, timeout=60)
    created = schema_objects(session) - before
    actions.extend(f"created {name}" for name in sorted(created))


def strip_comments(cql: str) -> str:
    return "\n".join(line for line in cql.splitlines() if not line.lstrip().startswith("--"))


def ensure_app_role(session: Session, request: dict, actions: list[str]) -> None:
    user, keyspace = request["app_user"], request["keyspace"]
    exists = session.execute("SELECT role FROM system_auth.roles WHERE role = %s", (user,)).one()
    if exists is None:
        session.execute(
            f"CREATE ROLE {user} WITH LOGIN = true AND SUPERUSER = false AND PASSWORD = %s",
            (request["app_password"],),
        )
        actions.append(f"created role {user}")
    granted = {
        row.permission
        for row in session.execute(f"LIST ALL PERMISSIONS ON KEYSPACE {keyspace} OF {user} NORECURSIVE")
    }
    for permission in ("SELECT", "MODIFY"):
        if permission not in granted:
            session.execute(f"GRANT {permission} ON KEYSPACE {keyspace} TO {user}")
            actions.append(f"granted {permission} on {keyspace} to {user}")


def main() -> None:
    request = json.load(sys.stdin)
    actions: list[str] = []
    session = admin_session(request, actions)
    ensure_default_superuser_disabled(session, actions)
    ensure_replication(session, "system_auth", request["datacenter"], request["system_auth_rf"], actions)
    apply_schema(session, request["schema_cql"], actions)
    keyspace = request["keyspace"]
    ensure_replication(session, keyspace, request["datacenter"], request["keyspace_rf"], actions)
    ensure_default_ttl(session, keyspace, request["table"], request["profile_ttl_seconds"], actions)
    ensure_app_role(session, request, actions)
    session.cluster.shutdown()
    print(json.dumps({"changed": bool(actions), "actions": actions}))


if __name__ == "__main__":
    main()
