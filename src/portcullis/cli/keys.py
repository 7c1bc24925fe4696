"""``portcullis keys create | list | revoke`` (the configured store) and ``rotate | disable | enable``
(the admin API): manage consumers' API keys.

Why two ways: create, list and revoke work without a running gateway (first set-up, recovery), and
record their security event themselves; rotation needs its grace period and every instance's
cache dropped at once, which the running gateway does, so those go through its admin API with
``PORTCULLIS_ADMIN_TOKEN``.

A key is printed once, at creation; only its HMAC is stored, so a lost key is revoked and replaced,
never recovered. The config (for the store URL and the pepper) comes from ``--config`` or
``PORTCULLIS_CONFIG``. A running gateway sees a key revoked here within ``keys.cache_ttl``; the
admin API's revoke endpoint clears its cache at once.

Exit codes: 0 done, 1 the thing asked for failed (no such key, store unavailable), 2 bad input or
config. Errors are one red line on stderr, never a traceback, and never echo the pepper.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from portcullis.cli.admin_client import DEFAULT_ADMIN, AdminOption, admin_result
from portcullis.cli.common import (
    ConfigOption,
    JsonOption,
    duration_option,
    fail,
    load_or_fail,
    record_cli_event,
    show_once,
    tell_revoked,
    when,
    with_store,
)
from portcullis.cli.tables import plain_table
from portcullis.clock import SystemClock
from portcullis.config.model import SharedStateConfig, StoreConfig
from portcullis.identity.api_keys import CONSUMER_PATTERN, SCOPE_PATTERN, IssuedKey, create_key
from portcullis.stores.base import ApiKeyRecord, Store

__all__ = ["app"]

app = typer.Typer(help="Create, list, revoke (store), rotate, disable and enable (admin API) API keys.",
                  no_args_is_help=True)

_CONSUMER = re.compile(CONSUMER_PATTERN)
_SCOPE = re.compile(SCOPE_PATTERN)
_T = TypeVar("_T")

@dataclass(frozen=True, slots=True)
class _Settings:
    store: StoreConfig
    shared_state: SharedStateConfig | None
    pepper: bytes


def _settings(path: Path) -> _Settings:
    cfg = load_or_fail(path)
    if cfg.keys is None:
        raise fail(f"{path}: API keys need a `keys:` section with `pepper` (keys.pepper)")
    return _Settings(cfg.store, cfg.shared_state, cfg.keys.pepper.get_secret_value().encode())


def _with_store(settings: _Settings, work: Callable[[Store], Awaitable[_T]]) -> _T:
    return with_store(settings.store, work)


def _status(record: ApiKeyRecord, now: float) -> str:
    if record.state != "active":
        return record.state
    return "expired" if record.expires_at is not None and now >= record.expires_at else "active"


def _names(text: str, option: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if any(not _SCOPE.fullmatch(n) for n in names):
        raise fail(f"{option}: names are 1-64 characters: letters, digits, _ . @ : -")
    return names


@app.command()
def create(
    consumer: Annotated[str, typer.Option(help="Consumer the key belongs to (1-64 of A-Z a-z 0-9 _ . @ -).")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. orders:read,orders:write.")] = "",
    roles: Annotated[str, typer.Option(help="Comma-separated roles (authorize.roles_any, `principal.roles` in "
                                       "rules), e.g. support,billing.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h. Default: no expiry.")] = None,
    config: ConfigOption = Path("portcullis.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Create a key. It is shown once: store it now."""
    if not _CONSUMER.fullmatch(consumer):
        raise fail("--consumer: consumer names are 1-64 characters: letters, digits, _ . @ -")
    scope_set, role_set = _names(scopes, "--scopes"), _names(roles, "--roles")
    expires_s = duration_option(expires, "--expires") if expires is not None else None
    settings = _settings(config)

    async def work(store: Store) -> IssuedKey:
        issued = await create_key(store, consumer, scope_set, pepper=settings.pepper, clock=SystemClock(),
                                  expires_in_s=expires_s, roles=role_set)
        await record_cli_event(store, action="key.create", target=f"key_id={issued.record.key_id}",
                               details={"consumer": consumer, "scopes": sorted(scope_set), "roles": sorted(role_set)})
        return issued

    issued = _with_store(settings, work)
    record = issued.record
    if as_json:
        typer.echo(json.dumps({"key": issued.key, "key_id": record.key_id, "consumer": consumer,
                               "scopes": sorted(scope_set), "roles": sorted(role_set),
                               "expires_at": record.expires_at}))
        return
    show_once(f"Created key {record.key_id} for {consumer}.", issued.key)


@app.command("list")
def list_keys(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's keys.")] = None,
    config: ConfigOption = Path("portcullis.yaml"),
    as_json: JsonOption = False,
) -> None:
    """List keys with their status and last use (never their hashes)."""
    settings = _settings(config)
    records = _with_store(settings, lambda store: store.list(consumer))
    now = SystemClock().wall()
    if as_json:
        typer.echo(json.dumps([
            {"key_id": r.key_id, "consumer": r.consumer_id, "scopes": sorted(r.scopes), "roles": sorted(r.roles),
             "created_at": r.created_at,
             "expires_at": r.expires_at, "status": _status(r, now), "last_used_at": r.last_used_at}
            for r in records
        ]))
        return
    table = plain_table(
        ("key id", "consumer", "scopes", "roles", "created", "expires", "status", "last used"),
        [(r.key_id, r.consumer_id, ",".join(sorted(r.scopes)) or "-", ",".join(sorted(r.roles)) or "-",
          when(r.created_at), when(r.expires_at),
          _status(r, now), when(r.last_used_at)) for r in records],
        title=f"{len(records)} API keys" + (f" of {consumer}" if consumer else ""))
    Console().print(table)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id: the 12 characters after pcl_.")],
    config: ConfigOption = Path("portcullis.yaml"),
) -> None:
    """Revoke a key for good."""
    settings = _settings(config)

    async def work(store: Store) -> bool:
        found = await store.revoke(key_id, SystemClock().wall())
        await record_cli_event(store, action="key.revoke", target=f"key_id={key_id}",
                               outcome="ok" if found else "refused")
        return found

    if not _with_store(settings, work):
        raise fail(f"no key with id {key_id!r}", code=1)
    Console(highlight=False).print(Text(f"Revoked {key_id}.", style="green"))
    tell_revoked(settings.shared_state, key_id, "keys.cache_ttl")


@app.command()
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key id: the 12 characters after pcl_.")],
    grace: Annotated[str, typer.Option(help="How long the former secret keeps working (e.g. 1h, 1d; at most 30d).")]
    = "1d",
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Give a key a new secret through the admin API; the former one works for --grace more. Shown once."""
    grace_s = duration_option(grace, "--grace", positive=False)
    body = admin_result("POST", admin, f"/keys/{key_id}/rotate", body={"grace_s": grace_s}, as_json=as_json)
    if body is None:
        return
    show_once(f"Rotated {key_id}; the former secret works for {grace} more.", body["key"])


def _set_state(key_id: str, action: str, admin: str, as_json: bool) -> None:
    body = admin_result("POST", admin, f"/keys/{key_id}/{action}", as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(Text(f"{key_id}: {body['status']}.", style="green"))


@app.command()
def disable(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Refuse a key until it is enabled again (through the admin API; every instance at once)."""
    _set_state(key_id, "disable", admin, as_json)


@app.command()
def enable(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Accept a disabled key again (a revoked key stays revoked)."""
    _set_state(key_id, "enable", admin, as_json)
