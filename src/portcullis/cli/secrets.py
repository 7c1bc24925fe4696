"""``portcullis secrets set | list | delete | rotate-master | generate-key``: the credential vault.

A value is read from standard input (piped) or a hidden prompt, never from the command line, where
it would land in shell history and in every user's ``ps``. Nothing prints a value back: ``list``
shows names, fingerprints and times. The master key comes from ``PORTCULLIS_SECRET_KEY``; during a
rotation it holds the new key first and the old one after it, and ``rotate-master`` re-encrypts
everything under the new one (all or nothing).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from portcullis.cli.common import ConfigOption, JsonOption, fail, load_or_fail, record_cli_event, when, with_store
from portcullis.cli.tables import plain_table
from portcullis.clock import SystemClock
from portcullis.errors import VaultError, VaultLocked
from portcullis.stores.base import Store
from portcullis.vault import MasterKeys, Vault, generate_master_key
from portcullis.vault.vault import valid_secret_name

__all__ = ["app"]

app = typer.Typer(help="Store, list, delete and rotate egress credentials.", no_args_is_help=True)
_MAX_VALUE = 64 * 1024
_T = TypeVar("_T")
NameArg = Annotated[str, typer.Argument(help="Secret name, e.g. github_token (a-z 0-9 _ . -).")]


def _call(config: Path, work: Callable[[Vault], Awaitable[_T]], *, needs_key: bool, action: str | None = None,
          target: str | None = None) -> _T:
    """Run ``work`` on the vault; a command that changes it (``action``) records its security event."""
    store_cfg = load_or_fail(config).store
    keys: MasterKeys | None = None
    try:
        keys = MasterKeys.from_env()
    except VaultLocked as exc:
        if needs_key:
            raise fail(str(exc)) from None

    async def run(store: Store) -> _T:
        result = await work(Vault(store, keys, SystemClock()))
        if action is not None:
            await record_cli_event(store, action=action, target=target)
        return result

    try:
        return with_store(store_cfg, run)
    except VaultError as exc:
        raise fail(str(exc), code=1) from None


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(f"value for {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read(_MAX_VALUE + 1)
        if len(value) > _MAX_VALUE:
            raise fail("a secret value is at most 64 KiB")
        value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise fail("a secret value cannot be empty")
    return value


@app.command("set")
def set_secret(
    name: NameArg,
    config: ConfigOption = Path("portcullis.yaml"),
    on_argv: Annotated[str | None, typer.Argument(hidden=True, show_default=False)] = None,
) -> None:
    """Store (or replace) a secret. The value comes from stdin or a hidden prompt, never argv."""
    if on_argv is not None:
        # Caught here so the usage error cannot echo it back (it is in the shell history already).
        raise fail("secret values are never taken from the command line: pipe the value in, or type it "
                   "at the prompt; consider the one you typed exposed")
    if not valid_secret_name(name):
        raise fail("secret names are 1-64 of a-z 0-9 _ . - (starting with a letter or digit)")
    value = _read_value(name)
    info = _call(config, lambda vault: vault.set(name, value), needs_key=True, action="secret.put",
                 target=f"name={name}")
    Console(highlight=False).print(Text(f"Stored {info.name} ({info.fingerprint}).", style="green"))


@app.command("list")
def list_secrets(config: ConfigOption = Path("portcullis.yaml"), as_json: JsonOption = False) -> None:
    """Names, fingerprints and times; never values. Works without the master key."""
    infos = _call(config, lambda vault: vault.list(), needs_key=False)
    if as_json:
        typer.echo(json.dumps([{"name": i.name, "fingerprint": i.fingerprint, "created_at": i.created_at,
                                "updated_at": i.updated_at, "last_used_at": i.last_used_at} for i in infos]))
        return
    if not infos:
        Console(highlight=False).print("The vault is empty.")
        return
    Console(highlight=False).print(plain_table(
        ("name", "fingerprint", "created", "updated", "last used"),
        [(i.name, i.fingerprint, when(i.created_at), when(i.updated_at), when(i.last_used_at)) for i in infos]))


@app.command("delete")
def delete_secret(name: NameArg, config: ConfigOption = Path("portcullis.yaml")) -> None:
    """Delete a secret (routes that inject it then fail closed)."""
    _call(config, lambda vault: vault.delete(name), needs_key=False, action="secret.delete", target=f"name={name}")
    Console(highlight=False).print(Text(f"Deleted {name}.", style="green"))


@app.command("rotate-master")
def rotate_master(config: ConfigOption = Path("portcullis.yaml")) -> None:
    """Re-encrypt every secret under the first key in PORTCULLIS_SECRET_KEY (new,old during rotation)."""
    count = _call(config, lambda vault: vault.rotate_master(), needs_key=True, action="secret.rotate_master")
    Console(highlight=False).print(Text(
        f"Re-encrypted {count} secret(s) under the new master key. Remove the old key from "
        "PORTCULLIS_SECRET_KEY once every gateway runs with the new one.", style="green"))


@app.command("generate-key")
def generate_key() -> None:
    """Print a new random master key for PORTCULLIS_SECRET_KEY."""
    typer.echo(generate_master_key())
