"""``bdf-certs``: the deployment CA and its host certificates (see ``bdf.certs``).

Ansible runs it on the control node with ``--json`` and reports ``changed`` from the
output, so a second deploy reports nothing changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bdf.certs import (
    HOST_DAYS,
    RENEW_WITHIN_DAYS,
    CertError,
    Outcome,
    describe,
    describe_pem,
    ensure_ca,
    ensure_host,
    ensure_truststore,
)

dir_option = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The deployment's TLS directory (ca.key, ca.crt, hosts/).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Create the deployment CA, issue host certificates, show expiry. Never prints key material."""


@main.command()
@dir_option
@click.option("--deployment", required=True, help='Names the CA: "BigDataFlow <deployment> CA".')
@json_option
def ca(directory: Path, deployment: str, as_json: bool) -> None:
    """Create the CA (EC P-256, 10 years) once; an existing one is checked, never replaced."""
    _report(_run(ensure_ca, directory, deployment), as_json)


@main.command()
@dir_option
@click.option("--name", required=True, help="The host's inventory name: hosts/<name>.{key,crt}.")
@click.option("--dns", multiple=True, help="A DNS name for the certificate (repeatable).")
@click.option("--ip", multiple=True, help="An IP address for the certificate (repeatable).")
@click.option("--days", default=HOST_DAYS, show_default=True, type=click.IntRange(1, 825))
@click.option(
    "--renew-within",
    default=RENEW_WITHIN_DAYS,
    show_default=True,
    type=click.IntRange(0),
    help="Reissue when the certificate expires within this many days.",
)
@click.option("--renew", is_flag=True, help="Reissue (new key) even if the certificate still fits.")
@json_option
def host(
    directory: Path,
    name: str,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
    days: int,
    renew_within: int,
    renew: bool,
    as_json: bool,
) -> None:
    """Issue a host key and certificate signed by the CA (server and client auth).

    Kept unless it is missing, its names or addresses differ, it expires within
    --renew-within days, another CA signed it, or --renew is given.
    """
    outcome = _run(
        ensure_host, directory, name, dns, ip, days=days, renew_within_days=renew_within, renew=renew
    )
    _report(outcome, as_json)


@main.command()
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The CA certificate (PEM) to trust.",
)
@click.option(
    "--out", "store", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The PKCS12 file."
)
@click.option(
    "--password-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The trust store's password (mode 0600): never on the command line.",
)
@json_option
def truststore(ca_file: Path, store: Path, password_file: Path, as_json: bool) -> None:
    """A PKCS12 trust store holding the CA alone, for Java clients without PEM support.

    Kept while it opens with the password and holds that CA (a second run changes nothing).
    """
    _report(_run(ensure_truststore, ca_file, store, password_file), as_json)


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path)
)
@json_option
def show(files: tuple[Path, ...], as_json: bool) -> None:
    """Subject, names, issuer, not-after and days left of each certificate in FILES ("-": stdin)."""
    found = [
        entry
        for file in files
        for entry in (
            _run(describe_pem, sys.stdin.buffer.read(), "-") if str(file) == "-" else _run(describe, file)
        )
    ]
    if as_json:
        click.echo(json.dumps(found))
        return
    for entry in found:
        names = ", ".join(entry["dns"] + entry["ip"]) or "-"
        click.echo(
            f"{entry['file']}: {entry['subject']} (names: {names}) issued by {entry['issuer']}, "
            f"valid until {entry['not_after']} ({entry['days_left']} days left)"
        )


def _run(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except CertError as exc:
        raise click.ClickException(str(exc)) from None


def _report(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(outcome.as_dict()))
    else:
        click.echo(f"{'changed' if outcome.changed else 'unchanged'}: {outcome.cert} ({outcome.reason})")


if __name__ == "__main__":
    sys.exit(main())
