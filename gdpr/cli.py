"""``bdf-gdpr``: the register of processing and the data-subject rights.

    bdf-gdpr register render [--format md|html] [--output PATH]
    bdf-gdpr register check [--inventory DIR] [--strict]
    bdf-gdpr subject access --email EMAIL [--config PATH]
    bdf-gdpr subject erase --email EMAIL [--yes] [--purge] [--config PATH]
    bdf-gdpr subject verify-erasures [--config PATH]

The subject commands run on an admin host with the pipeline's configuration
(``--config``/``BDF_CONFIG``: ``[cassandra]``, ``[keys]``, optionally ``[mongodb]``).
They log counts only: never the email, the pseudonym or a profile value. Give the
email at the prompt rather than with ``--email`` to keep it out of the shell history.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bdf.audit import AuditError, open_audit_log
from bdf.config import ConfigError, Settings, load_settings
from bdf.keyring import KeyRing, load_keyring
from bdf.logs import setup_logging
from gdpr.drift import REPO_ROOT, check, code_facts
from gdpr.model import DEFAULT_REGISTER, Register, RegisterError, load_register
from gdpr.purge import DEFAULT_NODETOOL, PurgeError, purge_table
from gdpr.render import render as render_register
from gdpr.render import time_limit
from gdpr.stores import StoreError, cassandra_profiles, mongo_database
from gdpr.subjects import access_export, check_aggregates, email_domain, erase_rows, find_rows
from jobs.aggregates import BATCHES_COLLECTION
from jobs.cli_options import config_option, verbose_option

log = logging.getLogger("bdf.gdpr")

AUDIT_LOG_ENV = "BDF_GDPR_AUDIT_LOG"
DEFAULT_AUDIT_LOG = Path("/var/log/bigdataflow/gdpr-erasures.jsonl")

register_option = click.option(
    "--register",
    "register_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_REGISTER,
    show_default=True,
    help="The register source (YAML).",
)
email_option = click.option(
    "--email",
    prompt="Email of the data subject",
    help="The person's email (asked when omitted, which keeps it out of the shell history).",
)
user_id_option = click.option(
    "--user-id",
    "user_ids",
    multiple=True,
    type=click.UUID,
    help="Also the row of this user id (login.uuid); repeatable.",
)
audit_log_option = click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=AUDIT_LOG_ENV,
    default=DEFAULT_AUDIT_LOG,
    show_default=True,
    help=f"Erasure log (JSON lines: pseudonym and counts, never the email) [env: {AUDIT_LOG_ENV}].",
)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can cause end in one message naming the thing, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, RegisterError, StoreError, PurgeError, AuditError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _emit(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
def main(verbose: bool) -> None:
    """GDPR tooling of BigDataFlow: the Art. 30 register and the data-subject rights."""
    setup_logging(verbose)


# --- register -----------------------------------------------------------------------------------


@main.group()
def register() -> None:
    """Render the register of processing and check it against the code.

    The register is the record of processing activities of GDPR Art. 30(1).
    """


@register.command()
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@register_option
@reports_errors
def render(fmt: str, output: Path | None, register_path: Path) -> None:
    """Render the register for the DPO as Markdown or HTML."""
    text = render_register(load_register(register_path), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


@register.command(name="check")
@register_option
@click.option(
    "--inventory",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also compare the retention values with this inventory's overrides (group_vars, host_vars).",
)
@click.option("--strict", is_flag=True, help="Fail while values marked <FILL IN: ...> remain.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=REPO_ROOT,
    show_default=True,
    help="Checkout of the repository (jobs/, roles/) to check against.",
)
@reports_errors
def check_command(register_path: Path, inventory: Path | None, strict: bool, root: Path) -> None:
    """Fail when the register and the code or the role defaults disagree (no drift).

    Compares every field's treatment and columns with jobs/transform.py FIELD_TREATMENT,
    the stored columns with bdf/schema.py STORED_SCHEMA and the Cassandra table, the
    aggregate collections with jobs/aggregates.py, the time limits with the Ansible
    defaults, and the evidence of each security measure with the files it names.
    """
    if not (root / "roles").is_dir():
        raise click.ClickException(f"{root} is not a checkout of the repository (no roles/): pass --root")
    reg = load_register(register_path)
    problems = check(reg, code_facts(root, inventory, reg))
    missing = reg.placeholders()
    if missing:
        click.echo(f"note: {len(missing)} value(s) still to fill in: {', '.join(missing)}", err=True)
    for problem in problems:
        click.echo(f"drift: {problem}", err=True)
    if problems:
        raise click.ClickException(f"the register disagrees with the code in {len(problems)} place(s)")
    if strict and missing:
        raise click.ClickException(f"{len(missing)} value(s) still to fill in (--strict)")
    click.echo(
        f"register agrees with the code: {len(reg.field_entries())} fields, "
        f"{len(reg.retention)} time limits, {len(reg.security_measures)} security measures"
    )


# --- subject ------------------------------------------------------------------------------------


@main.group()
def subject() -> None:
    """Data-subject rights: access, erasure, and checking past erasures.

    Access is GDPR Art. 15 (and 20), erasure Art. 17.
    """


def _settings(config_path: Path | None) -> tuple[Settings, KeyRing]:
    settings = load_settings(config_path)
    settings.require("cassandra", "keys")
    return settings, load_keyring(settings.keys.key_file)


@subject.command()
@email_option
@user_id_option
@config_option
@register_option
@reports_errors
def access(
    email: str, user_ids: tuple[uuid.UUID, ...], config_path: Path | None, register_path: Path
) -> None:
    """Print everything stored about a person, decrypted, as JSON (right of access).

    The person is found by the keyed pseudonym of EMAIL; the export adds the purposes,
    recipients and time limits of the register. An empty "profiles" list: nothing stored.
    """
    reg = load_register(register_path)
    settings, keys = _settings(config_path)
    pseudonym = keys.pseudonym(email)
    with cassandra_profiles(settings.cassandra) as table:
        rows = find_rows(table, pseudonym, user_ids)
    log.info("access request answered", extra={"fields": {"rows": len(rows)}})
    _emit(access_export(rows, keys, pseudonym, reg))


def _remaining_copies(reg: Register) -> list[dict[str, str]]:
    retention = reg.retention_by_id()
    return [
        {"copy": c.copy_, "readable": c.readable, "until": time_limit(retention[c.until], exact=False)}
        for c in reg.after_erasure
    ]


def _check_aggregates(settings: Settings, needles: list[str], domain: str | None) -> dict[str, Any]:
    if settings.mongodb is None:
        return {"checked": False, "reason": "no [mongodb] section in the configuration"}
    with mongo_database(settings.mongodb) as db:
        # stream_batches holds per-batch counters only and grows with time: not scanned.
        result = check_aggregates(db, needles, domain, skip=(BATCHES_COLLECTION,))
    return result.as_dict()


@subject.command()
@email_option
@user_id_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--purge",
    is_flag=True,
    help="On a Cassandra node: also flush and garbage-collect the table so the deleted values "
    "leave the data files (run it on every node).",
)
@click.option(
    "--nodetool",
    default=DEFAULT_NODETOOL,
    show_default=True,
    help="nodetool command for --purge (CASSANDRA_CONF defaults to /etc/cassandra).",
)
@audit_log_option
@config_option
@register_option
@reports_errors
def erase(
    email: str,
    user_ids: tuple[uuid.UUID, ...],
    yes: bool,
    purge: bool,
    nodetool: str,
    audit_log: Path,
    config_path: Path | None,
    register_path: Path,
) -> None:
    """Erase a person: delete their profile rows and log the erasure (right to erasure).

    Rows are found by the keyed pseudonym of EMAIL (plus --user-id rows) and deleted at
    consistency ALL, then looked up again. MongoDB is scanned to show that the
    aggregates hold nothing about the person. The erasure log gets the pseudonym and
    the counts, never the email. Prints counts and the copies that remain until their
    time limit (see the register, "After an erasure").
    """
    reg = load_register(register_path)
    settings, keys = _settings(config_path)
    pseudonym = keys.pseudonym(email)
    with cassandra_profiles(settings.cassandra) as table:
        rows = find_rows(table, pseudonym, user_ids)
        click.echo(f"{len(rows)} profile row(s) of this person in {table.name}.", err=True)
        if rows and not yes:
            click.confirm("Erase them?", abort=True, err=True)
        with open_audit_log(audit_log, command="bdf-gdpr subject erase") as audit:
            erasure = erase_rows(table, rows, pseudonym, user_ids)
            failures = _after_delete(erasure.details, settings, table.name, nodetool if purge else None)
            needles = [email.strip(), pseudonym, *(str(row["user_id"]) for row in rows)]
            try:
                erasure.details["aggregates"] = _check_aggregates(settings, needles, email_domain(email))
            except StoreError as exc:
                erasure.details["aggregates"] = {"checked": False, "error": str(exc)}
                failures.append(str(exc))
            audit.record("erasure", email_pseudonym=pseudonym, table=table.name, **_counts(erasure.as_dict()))
    log.info("erasure done", extra={"fields": _counts(erasure.as_dict())})
    _emit(
        {
            "table": table.name,
            **erasure.as_dict(),
            "remaining_copies": _remaining_copies(reg),
            "audit_log": str(audit_log),
        }
    )
    if erasure.rows_remaining:
        raise click.ClickException(f"{erasure.rows_remaining} row(s) still found after the delete")
    if failures:
        raise click.ClickException("; ".join(failures))


def _after_delete(details: dict[str, Any], settings: Settings, table: str, nodetool: str | None) -> list[str]:
    """Run the purge when asked; return the failures (the erasure is logged regardless)."""
    if nodetool is None:
        details["purge"] = "not requested: deleted values stay in the data files until compaction"
        return []
    try:
        result = purge_table(nodetool, settings.cassandra.keyspace, settings.cassandra.table)
    except PurgeError as exc:
        details["purge"] = {"error": str(exc)}
        return [f"rows deleted, but the purge failed: {exc}"]
    details["purge"] = result.as_dict()
    if result.snapshots:
        return [
            f"snapshots still hold {table}: {', '.join(result.snapshots)} "
            "(clear them with nodetool clearsnapshot -t NAME)"
        ]
    return []


def _counts(details: dict[str, Any]) -> dict[str, Any]:
    """What may be logged: counts and flags, never an identifier."""
    purge = details.get("purge")
    aggregates = details.get("aggregates", {})
    return {
        "rows_found": details["rows_found"],
        "rows_deleted": details["rows_deleted"],
        "rows_remaining": details["rows_remaining"],
        "purged": isinstance(purge, dict) and purge.get("garbage_collected", False),
        "aggregates_naming_subject": aggregates.get("documents_naming_the_subject"),
    }


@subject.command(name="verify-erasures")
@audit_log_option
@config_option
@reports_errors
def verify_erasures(audit_log: Path, config_path: Path | None) -> None:
    """Check that no person in the erasure log is stored again (e.g. after a restore or replay)."""
    settings, _ = _settings(config_path)
    pseudonyms = _erased_pseudonyms(audit_log)
    found_again = []
    with cassandra_profiles(settings.cassandra) as table:
        for pseudonym in pseudonyms:
            if table.by_pseudonym(pseudonym):
                found_again.append(pseudonym)
    _emit({"erasures_checked": len(pseudonyms), "found_again": found_again})
    if found_again:
        raise click.ClickException(
            f"{len(found_again)} erased person(s) are stored again: erase them again (subject erase)"
        )


def _erased_pseudonyms(audit_log: Path) -> list[str]:
    try:
        lines = audit_log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise click.ClickException(f"cannot read the erasure log {audit_log}: {exc.strerror}") from None
    pseudonyms: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise click.ClickException(f"{audit_log}:{number}: not a JSON line") from None
        if entry.get("action") == "erasure" and entry.get("email_pseudonym"):
            pseudonyms[entry["email_pseudonym"]] = None
    return list(pseudonyms)


if __name__ == "__main__":
    sys.exit(main())
