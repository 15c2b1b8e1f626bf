"""``bdf-acl``: Kafka access as code. The access description says who may do what;
``plan`` shows how the cluster differs, ``apply`` makes it so, and the org-change
shortcuts edit the description.

Exit codes: 0 success (``plan --detailed-exitcode``: no changes), 1 error (nothing
changed unless the JSON says ``"changed": true``), 2 ``plan --detailed-exitcode`` found
changes, 64 wrong usage. Every option can also be set in the environment as
``BDF_ACL_<OPTION>`` (``BDF_ACL_BOOTSTRAP_SERVER``, ...). Admin credentials come from the
``--command-config`` file or from ``BDF_ACL_SASL_USERNAME``/``BDF_ACL_SASL_PASSWORD``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from acl import edit as edits
from acl.kafka import KafkaToolError, KafkaTools, acl_batches, admin_config
from acl.listing import ListingError
from acl.model import Acl, Description, DescriptionError, load_description
from acl.plan import Plan, compute_plan, plan_to_dict, render_plan
from bdf.audit import AuditError, AuditLog, actor, file_digest, open_audit_log
from bdf.logs import setup_logging

log = logging.getLogger("bdf.acl")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64  # sysexits EX_USAGE: keeps 2 meaning "changes" only

DEFAULT_FILE = Path("/etc/bigdataflow/acl/access.yml")
DEFAULT_COMMAND_CONFIG = Path("/etc/kafka/admin-client.properties")
DEFAULT_KAFKA_BIN = Path("/opt/kafka/bin")
DEFAULT_AUDIT_LOG = Path("/var/log/bigdataflow/acl-audit.jsonl")


class Failure(click.ClickException):
    """An error the user can act on; in JSON mode it is also printed as a JSON object."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


@dataclass
class Settings:
    """What the root command collects; every subcommand receives it."""

    file: Path
    bootstrap_server: str | None
    command_config: Path
    command_config_explicit: bool
    kafka_bin: Path
    audit_log: Path
    output: str
    expect_cluster_id: str | None
    timeout: float
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def json(self) -> bool:
        return self.output == "json"

    def emit(self, text: str, data: dict[str, Any]) -> None:
        """Command output (not diagnostics) on stdout, as text or one JSON object."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False) if self.json else text)

    def description(self) -> Description:
        return load_description(self.file)

    @contextmanager
    def tools(self) -> Iterator[KafkaTools]:
        if not self.bootstrap_server:
            raise Failure("no Kafka cluster given: set --bootstrap-server (BDF_ACL_BOOTSTRAP_SERVER)")
        with admin_config(
            self.command_config, self.command_config_explicit, self.env, self.bootstrap_server
        ) as config:
            yield KafkaTools(self.kafka_bin, self.bootstrap_server, config, self.timeout, self.env)


pass_settings = click.make_pass_decorator(Settings)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause into one clear message (and JSON in JSON mode)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DescriptionError as exc:
            problems = [{"file": str(exc.path), "line": p.line, "reason": p.reason} for p in exc.problems]
            _fail(f"invalid access description, nothing was changed:\n{exc}", {"problems": problems})
        except (KafkaToolError, ListingError, AuditError, edits.EditError) as exc:
            _fail(str(exc))
        except Failure as exc:
            _fail(exc.message, exc.details)

    return wrapper


def _fail(message: str, details: dict[str, Any] | None = None) -> NoReturn:
    details = details or {}
    settings = click.get_current_context().find_object(Settings)
    if settings is not None and settings.json:
        click.echo(json.dumps({"changed": False, **details, "error": message}, indent=2))
    raise Failure(message, details)


class AclGroup(click.Group):
    """Exit 64 on usage errors, so that exit 2 only ever means "the plan has changes"."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted: nothing was changed.", err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def path_option(flag: str, default: Path, help_text: str, folder: bool = False) -> Callable[..., Any]:
    """A file (or, with ``folder``, a directory) option of the group, default and env var shown."""
    return click.option(
        flag,
        type=click.Path(file_okay=not folder, dir_okay=folder, path_type=Path),
        default=default,
        show_default=True,
        show_envvar=True,
        help=help_text,
    )


@click.group(
    cls=AclGroup,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "BDF_ACL"},
    epilog="Exit codes: 0 done (plan: no changes), 1 error, 2 plan --detailed-exitcode found changes,"
    " 64 wrong usage.",
)
@path_option("--file", DEFAULT_FILE, "The access description (YAML).")
@click.option(
    "--bootstrap-server", show_envvar=True, help="Kafka broker HOST:PORT (needed by cluster commands)."
)
@path_option(
    "--command-config",
    DEFAULT_COMMAND_CONFIG,
    "Admin client properties (SASL credentials). Without it: BDF_ACL_SASL_USERNAME/_PASSWORD.",
)
@path_option(
    "--kafka-bin", DEFAULT_KAFKA_BIN, "Directory of kafka-acls.sh and kafka-configs.sh.", folder=True
)
@path_option("--audit-log", DEFAULT_AUDIT_LOG, "JSON lines: who applied what, when.")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    show_envvar=True,
    help="Command output on stdout.",
)
@click.option(
    "--expect-cluster-id",
    show_envvar=True,
    help="Refuse to plan or apply unless the brokers belong to this cluster id.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=180.0,
    show_default=True,
    help="Seconds to wait for each Kafka tool.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logs (JSON, stderr), including tool commands.")
@click.pass_context
def cli(
    ctx: click.Context,
    file: Path,
    bootstrap_server: str | None,
    command_config: Path,
    kafka_bin: Path,
    audit_log: Path,
    output: str,
    expect_cluster_id: str | None,
    timeout: float,
    verbose: bool,
) -> None:
    """Kafka ACLs from a declarative access description (teams, members, applications)."""
    setup_logging(verbose)
    source = ctx.get_parameter_source("command_config")
    ctx.obj = Settings(
        file=file,
        bootstrap_server=bootstrap_server,
        command_config=command_config,
        command_config_explicit=source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT),
        kafka_bin=kafka_bin,
        audit_log=audit_log,
        output=output,
        expect_cluster_id=expect_cluster_id,
        timeout=timeout,
    )


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_object(Settings).output = value


# `bdf-acl --output json apply` and `bdf-acl apply --output json` both work.
output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default=None,
    expose_value=False,
    callback=_set_output,
    help="Command output on stdout (overrides the group option).",
)


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every subcommand: its own --output, the Settings as first argument, errors as one message."""
    return output_option(pass_settings(reports_errors(command)))


def plan_report(plan: Plan, description: Description, applied: bool) -> tuple[str, dict[str, Any]]:
    """The plan as text, and as JSON with the same text in `lines` (for Ansible's output)."""
    text = render_plan(plan, description)
    return text, {**plan_to_dict(plan, applied=applied), "lines": text.splitlines()}


# --- reading -----------------------------------------------------------------------------


@cli.command()
@with_settings
def validate(settings: Settings) -> None:
    """Check the description (offline): every problem with its line."""
    description = settings.description()
    principals = description.managed_principals()
    acls = description.desired_acls()
    settings.emit(
        f"{settings.file}: valid ({len(description.applications)} applications,"
        f" {len(description.teams)} teams, {len(principals)} principals, {len(acls)} ACLs)",
        {
            "valid": True,
            "file": str(settings.file),
            "applications": sorted(description.applications),
            "teams": sorted(description.teams),
            "principals": len(principals),
            "acls": len(acls),
        },
    )


@cli.command()
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when there are changes to apply (0: none, 1: error).",
)
@with_settings
def plan(settings: Settings, detailed_exitcode: bool) -> None:
    """Show what `apply` would change on the cluster, per principal."""
    description = settings.description()
    with settings.tools() as tools:
        current = live_plan(settings, tools, description)
    settings.emit(*plan_report(current, description, applied=False))
    if detailed_exitcode and current.changed:
        click.get_current_context().exit(EXIT_CHANGES)


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing the cluster.")
@click.option(
    "--fingerprint", help="Apply only if the plan is still the one `plan` showed (its fingerprint)."
)
@with_settings
def apply(settings: Settings, yes: bool, fingerprint: str | None) -> None:
    """Make the cluster match the description; only managed principals are touched."""
    description = settings.description()
    with (
        settings.tools() as tools,
        open_audit_log(
            settings.audit_log,
            command="apply",
            file=str(settings.file),
            file_sha256=file_digest(settings.file),
            bootstrap_server=settings.bootstrap_server,
        ) as audit,
    ):
        current = live_plan(settings, tools, description)
        if not current.changed:
            settings.emit(*plan_report(current, description, applied=True))
            return
        if fingerprint and fingerprint != current.fingerprint:
            raise Failure(
                f"the plan changed since it was shown (fingerprint {current.fingerprint},"
                f" expected {fingerprint}): nothing was changed; run plan again"
            )
        if not yes:
            click.echo(render_plan(current, description), err=settings.json)
            click.confirm(f"Apply these changes to {settings.bootstrap_server}?", abort=True, err=True)
        apply_plan(tools, current, audit)
        remaining = live_plan(settings, tools, description)
    if remaining.changed:
        raise Failure(
            "applied, but the cluster still differs from the description (changed concurrently?)",
            {"changed": True, **plan_to_dict(current, applied=True)},
        )
    settings.emit(*plan_report(current, description, applied=True))


@cli.command(name="list")
@click.option("--principal", help="Only this principal (User:name).")
@click.option("--team", help="Only the members of this team.")
@click.option("--desired", is_flag=True, help="Rights from the description, without asking the cluster.")
@with_settings
def list_rights(settings: Settings, principal: str | None, team: str | None, desired: bool) -> None:
    """Current rights per principal (or of a team's members)."""
    description = settings.description()
    if desired:
        acls = description.desired_acls()
    else:
        with settings.tools() as tools:
            acls = tools.list_acls()
    owners = description.owners()
    wanted = _selected_principals(description, acls, principal, team)
    rights = {p: sorted(acl for acl in acls if acl.principal == p) for p in wanted}
    lines = []
    for name, granted in rights.items():
        lines.append(f"{name} ({owners.get(name, 'not in the description')})")
        lines.extend(f"  {acl.describe()}" for acl in granted)
        if not granted:
            lines.append("  (no ACLs)")
    settings.emit(
        "\n".join(lines) or "no ACLs",
        {
            "source": "description" if desired else "cluster",
            "principals": [
                {"principal": name, "owner": owners.get(name), "acls": [acl.to_dict() for acl in granted]}
                for name, granted in rights.items()
            ],
        },
    )


def _selected_principals(
    description: Description, acls: set[Acl], principal: str | None, team: str | None
) -> list[str]:
    if principal:
        return [_principal(principal)]
    if team:
        if team not in description.teams:
            raise Failure(f"no team '{team}' in {description.path}")
        return list(description.teams[team].members)
    return sorted({acl.principal for acl in acls} | description.managed_principals())


# --- org-change shortcuts -------------------------------------------------------------

plan_option = click.option(
    "--plan/--no-plan",
    "show_plan",
    default=None,
    help="Show the plan after the edit (default: when a bootstrap server is set).",
)


def edit_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """An org-change shortcut: --plan/--no-plan, then what every subcommand takes."""
    return plan_option(with_settings(command))


@cli.command("move-member")
@click.argument("principal")
@click.option("--from", "source", required=True, help="The team the member leaves.")
@click.option("--to", "target", required=True, help="The team the member joins.")
@edit_command
def move_member(settings: Settings, principal: str, source: str, target: str, show_plan: bool | None) -> None:
    """Move PRINCIPAL from one team to another (rights follow the team)."""
    _edit(
        settings,
        lambda text, path: edits.move_member(text, path, _principal(principal), source, target),
        show_plan,
    )


@cli.command("add-member")
@click.argument("principal")
@click.option("--team", required=True, help="The team the principal joins.")
@edit_command
def add_member(settings: Settings, principal: str, team: str, show_plan: bool | None) -> None:
    """Add PRINCIPAL to a team (a newcomer, or someone offboarded before)."""
    _edit(settings, lambda text, path: edits.add_member(text, path, _principal(principal), team), show_plan)


@cli.command()
@click.argument("principal")
@click.option("--note", help="Comment written next to the entry (default: date and who).")
@edit_command
def offboard(settings: Settings, principal: str, note: str | None, show_plan: bool | None) -> None:
    """Offboard PRINCIPAL: apply then removes its ACLs and its SCRAM credentials."""
    note = note or f"offboarded {datetime.now(UTC):%Y-%m-%d} by {actor()['actor']}"
    _edit(settings, lambda text, path: edits.offboard(text, path, _principal(principal), note), show_plan)


def grant_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("team"),
        click.option(
            "--type",
            "resource_type",
            required=True,
            type=click.Choice(["topic", "group", "transactional_id", "cluster"]),
            help="Resource type.",
        ),
        click.option("--name", help="Topic, group or transactional id (a prefix with --pattern prefixed)."),
        click.option(
            "--pattern", type=click.Choice(["literal", "prefixed"]), default="literal", show_default=True
        ),
        click.option(
            "--operation", "-o", "operations", multiple=True, help="Read, Write, Describe, ... (repeat)."
        ),
        click.option("--deny", is_flag=True, help="A DENY grant (DENY wins over ALLOW)."),
        click.option("--host", default="*", show_default=True, help="Client IP address, or * for any."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _spec(
    resource_type: str, name: str | None, pattern: str, operations: tuple[str, ...], deny: bool, host: str
) -> dict[str, object]:
    return {
        "type": resource_type,
        "name": name,
        "pattern": pattern,
        "operations": list(operations),
        "permission": "deny" if deny else "allow",
        "host": host,
    }


@cli.command()
@grant_options
@edit_command
def grant(settings: Settings, team: str, show_plan: bool | None, **spec: Any) -> None:
    """Give TEAM operations on a resource (all its members get them)."""
    if not spec["operations"]:
        raise Failure("give at least one --operation")
    _edit(settings, lambda text, path: edits.grant(text, path, team, _spec(**spec)), show_plan)


@cli.command()
@grant_options
@edit_command
def revoke(settings: Settings, team: str, show_plan: bool | None, **spec: Any) -> None:
    """Take operations on a resource from TEAM (every operation of that grant if none is given)."""
    _edit(settings, lambda text, path: edits.revoke(text, path, team, _spec(**spec)), show_plan)


def _edit(settings: Settings, change: Callable[[str, Path], edits.Edit], show_plan: bool | None) -> None:
    path = settings.file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc.strerror} (set --file)") from None
    result = change(text, path)
    if result.changed:
        edits.write_atomically(path, result.text)
        log.info("description edited", extra={"fields": {"file": str(path), "change": result.message}})
    lines = [f"{path}: {result.message}" if result.changed else f"{path}: unchanged, {result.message}"]
    data: dict[str, Any] = {
        "changed": result.changed,
        "file": str(path),
        "message": result.message,
        "plan": None,
    }
    if show_plan is None:
        show_plan = bool(settings.bootstrap_server)
    if show_plan:
        try:
            with settings.tools() as tools:
                current = live_plan(settings, tools, result.description)
        except (KafkaToolError, ListingError) as exc:
            edited = {"changed": result.changed, "file": str(path), "message": result.message}
            raise Failure(f"{path}: {result.message}, but the plan failed: {exc}", edited) from None
        text, data["plan"] = plan_report(current, result.description, applied=False)
        lines.append(text)
        lines.append("Run `bdf-acl apply` (or playbooks/acl_update.yml) to make it so.")
    else:
        lines.append("Plan not shown (no --bootstrap-server); `bdf-acl plan` shows it.")
    settings.emit("\n".join(lines), data)


def _principal(text: str) -> str:
    """'alice' -> 'User:alice'; 'User:alice' stays."""
    return text if ":" in text else f"User:{text}"


# --- the engine ----------------------------------------------------------------------------


def live_plan(settings: Settings, tools: KafkaTools, description: Description) -> Plan:
    """The plan against the cluster as it is now."""
    if settings.expect_cluster_id:
        cluster_id = tools.cluster_id()
        if cluster_id != settings.expect_cluster_id:
            raise Failure(
                f"{settings.bootstrap_server} belongs to cluster {cluster_id},"
                f" not {settings.expect_cluster_id}: nothing was done"
            )
    live = tools.list_acls()
    scram_users = tools.scram_users() if description.offboarded else None
    return compute_plan(description, live, scram_users)


def apply_plan(tools: KafkaTools, plan: Plan, audit: AuditLog) -> None:
    """Credentials first (an offboarded person is locked out at once), then removes, then adds.

    Each step is in the audit log as soon as it is done; a failure stops the run and the
    error says what was applied before it.
    """
    done: dict[str, list[dict[str, str]]] = {"added": [], "removed": [], "credentials_deleted": []}
    try:
        for credential in plan.delete_credentials:
            tools.delete_credential(credential)
            audit.record("delete_scram_credential", credential=credential.to_dict())
            done["credentials_deleted"].append(credential.to_dict())
        for batch in acl_batches(plan.remove):
            tools.remove_acls(batch)
            audit.record("remove_acls", acls=[acl.to_dict() for acl in batch])
            done["removed"] += [acl.to_dict() for acl in batch]
        for batch in acl_batches(plan.add):
            tools.add_acls(batch)
            audit.record("add_acls", acls=[acl.to_dict() for acl in batch])
            done["added"] += [acl.to_dict() for acl in batch]
    except KafkaToolError as exc:
        audit.record("apply_failed", error=str(exc))
        changed = any(done.values())
        raise Failure(
            f"{exc}; applied before the failure: {len(done['added'])} added, {len(done['removed'])} removed,"
            f" {len(done['credentials_deleted'])} credential(s) deleted (see the audit log)",
            {"changed": changed, "applied": changed, **done},
        ) from None
    audit.record(
        "apply_done",
        added=len(plan.add),
        removed=len(plan.remove),
        credentials_deleted=len(plan.delete_credentials),
    )
    log.info(
        "ACLs applied",
        extra={
            "fields": {
                "added": len(plan.add),
                "removed": len(plan.remove),
                "credentials_deleted": len(plan.delete_credentials),
            }
        },
    )


def main() -> None:
    cli(prog_name="bdf-acl")


if __name__ == "__main__":
    main()
