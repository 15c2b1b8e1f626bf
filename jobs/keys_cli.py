"""``bdf-keys``: create and rotate the key file that protects personal data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bdf.config import ConfigError
from bdf.keyring import (
    Relation,
    compare_keyrings,
    load_keyring,
    new_keyring,
    rotated,
    save_keyring,
    with_new_message_key,
)

key_file_option = click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
# `compare` exits with this when neither file is a rotation of the other (1: unreadable file).
EXIT_CONFLICT = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage the AES-256-GCM key file (JSON, mode 0600) of the stream job and the producer."""


@main.command()
@key_file_option
def create(key_file: Path) -> None:
    """Create KEY_FILE with a first column key, a first message key and the pseudonym key."""
    if key_file.exists():
        raise click.ClickException(f"{key_file} exists; use 'rotate' to add a key")
    save_keyring(new_keyring(), key_file)
    click.echo(f"created {key_file} (active key id 1)", err=True)


@main.command()
@key_file_option
def rotate(key_file: Path) -> None:
    """Add a new column key and a new message key and make them active; old keys still decrypt.

    Deploy (or restart the stream job, then the producer) afterwards so new rows and new
    messages use the new keys.
    """
    ring = _load(key_file)
    new_ring = rotated(ring)
    save_keyring(new_ring, key_file)
    click.echo(
        f"rotated {key_file}: active key id {ring.active_key_id} -> {new_ring.active_key_id},"
        f" message key id {ring.active_message_key_id} -> {new_ring.active_message_key_id}",
        err=True,
    )


@main.command(name="add-message-key")
@key_file_option
def add_message_key(key_file: Path) -> None:
    """Give a key file written before message keys existed its first message key.

    Does nothing to a file that has them (use 'rotate'); never changes another key.
    """
    ring = _load(key_file)
    if ring.message_keys:
        click.echo(f"{key_file} has message keys (active id {ring.active_message_key_id})", err=True)
        return
    save_keyring(with_new_message_key(ring), key_file)
    click.echo(f"added message key id 1 to {key_file}", err=True)


@main.command(name="list")
@key_file_option
def list_keys(key_file: Path) -> None:
    """Show key ids (never key material): column keys, then message keys."""
    ring = _load(key_file)
    for family, keys, active in (
        ("column", ring.encryption_keys, ring.active_key_id),
        ("message", ring.message_keys, ring.active_message_key_id),
    ):
        for key_id in sorted(keys):
            click.echo(f"{family}\t{key_id}\t{'active' if key_id == active else 'decrypt-only'}")


@main.command()
@click.argument("first", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("second", type=click.Path(dir_okay=False, path_type=Path))
def compare(first: Path, second: Path) -> None:
    """Tell which of two copies of a key file is newer; never prints key material.

    Prints JSON {"relation": ..., "reason": ...}. The relation is "same",
    "first-newer" or "second-newer" (that one is the other rotated: it holds every key
    id of the other with the same material, newer ids and the same pseudonym key; exit
    0), or "conflict" (different pseudonym keys, an id with other material, or unrelated
    rotations; exit 3). Exit 1 when a file cannot be read.
    """
    relation, reason = compare_keyrings(_load(first), _load(second))
    click.echo(json.dumps({"relation": str(relation), "reason": reason}))
    if relation is Relation.CONFLICT:
        sys.exit(EXIT_CONFLICT)


def _load(key_file: Path):
    try:
        return load_keyring(key_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
