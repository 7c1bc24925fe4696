"""``portcullis admin``: the first admin token, then tokens and status through the admin API.

Why ``bootstrap`` writes the store directly: the admin API refuses everyone without a token, so
the first token cannot come from it, and a default password is exactly what an attacker tries
first. Whoever can read the config (its pepper) and write the store can already do anything, so
bootstrap adds no power; it prints the token once and records a security event. Every other
command here is a client of the admin API (``cli.admin_client``), authenticated with
``PORTCULLIS_ADMIN_TOKEN`` and bound by that token's role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portcullis.cli.admin_client import DEFAULT_ADMIN, AdminOption, admin_result
from portcullis.cli.common import (
    ConfigOption,
    JsonOption,
    duration_option,
    fail,
    load_or_fail,
    record_cli_event,
    when,
    with_store,
)
from portcullis.cli.tables import plain_table
from portcullis.clock import SystemClock
from portcullis.identity.admin_roles import RoleBook, UnknownRole
from portcullis.identity.admin_tokens import issue_admin_token
from portcullis.stores.base import Store

__all__ = ["app", "status"]

app = typer.Typer(help="Admin tokens: bootstrap the first one, then manage them through the admin API.",
                  no_args_is_help=True)
tokens_app = typer.Typer(help="List, create and revoke admin tokens (through the admin API).", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")

_DEFAULT_LIFETIME = "90d"


def _lifetime(text: str | None) -> float | None:
    return None if text is None or text == "never" else duration_option(text, "--expires")


@app.command()
def bootstrap(
    role: Annotated[str, typer.Option(help="The token's role (developer, admin, security, compliance or custom).")]
    = "security",
    name: Annotated[str, typer.Option(help="Who holds it.")] = "bootstrap",
    expires: Annotated[str | None, typer.Option(help="Lifetime (e.g. 1d, 90d) or 'never'.")] = _DEFAULT_LIFETIME,
    config: ConfigOption = Path("portcullis.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Make an admin token by writing the store directly (the way in before any token exists). Shown once."""
    cfg = load_or_fail(config)
    secret = cfg.admin.token_pepper or (cfg.keys.pepper if cfg.keys is not None else None)
    if secret is None:
        raise fail(f"{config}: admin tokens need `admin.token_pepper` or `keys.pepper`")
    try:
        RoleBook(cfg.admin.roles).permissions(role)
    except UnknownRole:
        raise fail(f"--role: no role named {role!r}") from None
    issued = issue_admin_token(name=name, role=role, created_by="cli:bootstrap", pepper=secret.get_secret_value()
                               .encode(), clock=SystemClock(), expires_in_s=_lifetime(expires))

    async def write(store: Store) -> None:
        await store.create_admin_token(issued.record)
        await record_cli_event(store, action="token.bootstrap", target=f"token_id={issued.record.token_id}",
                               details={"granted_role": role, "name": name})

    with_store(cfg.store, write)
    record = issued.record
    if as_json:
        typer.echo(json.dumps({"token": issued.token, "token_id": record.token_id, "role": role,
                               "expires_at": record.expires_at}))
        return
    console = Console(highlight=False)
    console.print(Text(f"Created admin token {record.token_id} ({role}, expires {when(record.expires_at)}).",
                       style="green"))
    console.print(issued.token, markup=False, soft_wrap=True)
    console.print(Text("Shown once. Use it as PORTCULLIS_ADMIN_TOKEN or `Authorization: Bearer …`.", style="yellow"))


def _token_table(rows: list[dict[str, Any]]) -> Table:
    return plain_table(("token id", "name", "role", "expires", "revoked", "last used", "created by"), [
        (str(row["token_id"]), str(row["name"]), str(row["role"]), when(row["expires_at"]), when(row["revoked_at"]),
         when(row["last_used_at"]), str(row["created_by"])) for row in rows])


@tokens_app.command("list")
def list_tokens(admin: AdminOption = DEFAULT_ADMIN, as_json: JsonOption = False) -> None:
    """Every admin token (never a secret)."""
    body = admin_result("GET", admin, "/admin-tokens", as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(_token_table(body))


@tokens_app.command("create")
def create_token(
    role: Annotated[str, typer.Option(help="A role whose permissions your own token holds.")],
    name: Annotated[str, typer.Option(help="Who or what holds it.")],
    expires: Annotated[str | None, typer.Option(help="Lifetime (e.g. 1d, 90d) or 'never'.")] = _DEFAULT_LIFETIME,
    consumers: Annotated[str, typer.Option(help="Comma-separated consumers a developer token owns.")] = "",
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Create an admin token through the admin API. Shown once."""
    body = {"name": name, "role": role, "expires_in_s": _lifetime(expires),
            "consumers": [c.strip() for c in consumers.split(",") if c.strip()]}
    body = admin_result("POST", admin, "/admin-tokens", body=body, as_json=as_json)
    if body is None:
        return
    console = Console(highlight=False)
    console.print(Text(f"Created admin token {body['token_id']} ({role}).", style="green"))
    console.print(body["token"], markup=False, soft_wrap=True)
    console.print(Text("Shown once. Store it now.", style="yellow"))


@tokens_app.command("revoke")
def revoke_token(token_id: str, admin: AdminOption = DEFAULT_ADMIN, as_json: JsonOption = False) -> None:
    """Revoke an admin token; its next request is refused."""
    body = admin_result("POST", admin, f"/admin-tokens/{token_id}/revoke", as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(Text(f"Revoked admin token {token_id}.", style="green"))


def status(admin: AdminOption = DEFAULT_ADMIN, as_json: JsonOption = False) -> None:
    """The running gateway's status: readiness, routes, breakers, audit writer."""
    body = admin_result("GET", admin, "/status", as_json=as_json)
    if body is None:
        return
    table = Table("field", "value", show_header=False)
    table.add_row("version", str(body["version"]))
    table.add_row("ready", "yes" if body["ready"] else "NO")
    for name, state in body["checks"].items():
        table.add_row(f"  {name}", str(state))
    table.add_row("routes", str(body["routes"]))
    table.add_row("egress routes", str(body["egress_routes"]))
    table.add_row("open breakers", ", ".join(body["open_breakers"]) or "-")
    for name, value in body["audit"].items():
        table.add_row(f"audit {name}", str(value))
    Console(highlight=False).print(table)
