"""Idempotent MongoDB users and aggregate collections, run by the mongodb role.

Reads a JSON request on stdin (passwords never on the command line) and prints one
JSON line: {"changed": bool, "actions": [...]}. FerretDB creates the admin user at
its first start; for mongod the admin is created through the localhost exception.
With ``"check": true`` it only waits until the admin logs in (the role's health check).
The connection is the clients' one: ``tls`` and ``ca_file`` as in the [mongodb] section.
"""

from __future__ import annotations

import json
import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

# The project's venv (bdf_python, on every host) runs this script: the one client factory.
from bdf.clients import mongo_client
from bdf.config import Credentials, MongoConnection
from jobs.aggregates import AGGREGATE_COLLECTIONS, BATCHES_COLLECTION


def client(request: dict, host: str, credentials: Credentials | None) -> MongoClient:
    connection = MongoConnection(
        hosts=[f"{host}:{request['port']}"],
        auth_source="admin",
        tls=request.get("tls", False),
        ca_file=request.get("ca_file"),
    )
    options = {"authMechanism": "SCRAM-SHA-256"} if credentials else {}
    return mongo_client(connection, credentials, serverSelectionTimeoutMS=5000, **options)


def admin_client(request: dict, actions: list[str]) -> MongoClient:
    credentials = Credentials(username=request["admin_user"], password=request["admin_password"])
    deadline = time.monotonic() + request.get("timeout_seconds", 120)
    while True:
        admin = client(request, request["host"], credentials)
        try:
            admin.admin.command("ping")
            admin.admin.command("listDatabases", nameOnly=True)
            return admin
        except OperationFailure:
            if not request["with_roles"]:
                raise
            # mongod, first run: the localhost exception allows creating the first user.
            local = client(request, "127.0.0.1", None)
            local.admin.command(
                "createUser", request["admin_user"], pwd=request["admin_password"], roles=["root"]
            )
            actions.append("created the admin user")
        except PyMongoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def ensure_users(admin: MongoClient, request: dict, actions: list[str]) -> None:
    database = admin[request["database"]]
    existing = {user["user"] for user in database.command("usersInfo")["users"]}
    for user in request["users"]:
        if user["name"] in existing:
            continue
        roles = [{"role": user["role"], "db": request["database"]}] if request["with_roles"] else []
        database.command(
            "createUser", user["name"], pwd=user["password"], roles=roles, mechanisms=["SCRAM-SHA-256"]
        )
        actions.append(f"created user {user['name']}")


def ensure_collections(admin: MongoClient, request: dict, actions: list[str]) -> None:
    database = admin[request["database"]]
    existing = set(database.list_collection_names())
    for name in (*AGGREGATE_COLLECTIONS, BATCHES_COLLECTION):
        if name not in existing:
            database.create_collection(name)
            actions.append(f"created collection {name}")


def main() -> None:
    request = json.load(sys.stdin)
    actions: list[str] = []
    admin = admin_client(request, actions)
    if request.get("check"):
        print(json.dumps({"changed": bool(actions), "actions": actions}))
        return
    ensure_users(admin, request, actions)
    ensure_collections(admin, request, actions)
    print(json.dumps({"changed": bool(actions), "actions": actions}))


if __name__ == "__main__":
    main()
