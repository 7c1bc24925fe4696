"""``portcullis egress check``: would the egress guard let the gateway call this URL, and where?

Why a command: when an agent's call is refused, an operator needs the guard's reason (and, when
allowed, the addresses the call would be pinned to) without sending anything. ``--resolve`` answers
the lookup instead of DNS, as curl's option does, so a verdict can be reproduced exactly.

With ``--config`` (and ``--route``) the rules come from the config's ``egress:`` section, through
the same function the data path uses; without it, the global defaults (public addresses, https,
ports 80/443) plus any ``--allow-*`` what-if flags.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from portcullis.cli.admin_client import DEFAULT_ADMIN, EXIT_USAGE, AdminOption, JsonOption, admin_result
from portcullis.cli.common import load_or_fail
from portcullis.egress.budgets import budget_amount
from portcullis.egress.policy import default_policy, route_policy
from portcullis.egress.resolver import SystemResolver, parse_resolve_option
from portcullis.egress.ssrf import GuardPolicy, Resolver, SsrfGuard, Verdict

__all__ = ["app", "check_url"]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("check")
def check_url(
    url: Annotated[str, typer.Argument(help="The URL an egress call would request.")],
    resolve: Annotated[
        list[str] | None,
        typer.Option("--resolve", help="Answer HOST with these addresses, not DNS: HOST=IP[,IP...] (repeatable)."),
    ] = None,
    allow_http: Annotated[bool, typer.Option("--allow-http", help="Accept plain http:// as a route may.")] = False,
    allow_network: Annotated[
        list[str] | None,
        typer.Option("--allow-network", help="A CIDR a route excepts, e.g. 10.20.0.0/16 (repeatable)."),
    ] = None,
    allow_host: Annotated[
        list[str] | None, typer.Option("--allow-host", help="Allow-list entry: a name or *.suffix (repeatable).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Check under this config's egress section.")
    ] = None,
    route: Annotated[
        str | None, typer.Option("--route", help="Check as this egress route would (needs --config).")
    ] = None,
) -> None:
    """Print the guard's verdict without sending anything. Exit status: 0 allowed, 3 blocked, 2 bad input."""
    console = Console()
    resolver: Resolver
    what_if = bool(allow_host or allow_network or allow_http)
    try:
        resolver = parse_resolve_option(resolve) if resolve else SystemResolver()
        if route is not None and (config is None or what_if):
            raise ValueError("--route needs --config, and takes its rules from it (no --allow-* flags)")
        if config is not None and not what_if:
            policy = _config_policy(config, route)
        else:
            policy = GuardPolicy(
                allowed_hosts=tuple(h.lower() for h in allow_host or ()),
                allowed_networks=tuple(ip_network(n, strict=False) for n in allow_network or ()),
                allow_http=allow_http,
            )
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2) from None
    verdict = asyncio.run(SsrfGuard(resolver).check(url, policy))
    _print(console, url, verdict)
    raise typer.Exit(0 if verdict.allowed else 3)


def _print(console: Console, url: str, verdict: Verdict) -> None:
    console.print(f"url:       {url}", highlight=False, markup=False)
    if verdict.target is not None:
        t = verdict.target
        console.print(f"target:    {t.scheme}://{t.host}:{t.port}{t.path_and_query}", highlight=False, markup=False)
    if verdict.addresses:
        console.print("addresses: " + ", ".join(str(a) for a in verdict.addresses), highlight=False)
    if verdict.allowed:
        console.print("[green]allowed[/green]: the call would be pinned to the addresses above", highlight=False)
    else:
        console.print(f"[red]blocked[/red]: {verdict.reason}", highlight=False)


def _config_policy(path: Path, route_name: str | None) -> GuardPolicy:
    cfg = load_or_fail(path)
    if route_name is None:
        return default_policy(cfg.egress)
    route = cfg.egress.route(route_name) if cfg.egress else None
    if cfg.egress is None or route is None:
        raise ValueError(f"{path}: no egress route named {route_name!r}")
    return route_policy(cfg.egress, route)


@app.command("breakers")
def breakers(admin: AdminOption = DEFAULT_ADMIN, as_json: JsonOption = False) -> None:
    """Show every egress route's circuit breaker (from the running gateway)."""
    body = admin_result("GET", admin, "/egress/breakers", as_json=as_json)
    if body is None:
        return
    table = Table("route", "state", "retry after (s)")
    for row in body:
        table.add_row(str(row["route"]), str(row["state"]), str(row["retry_after_s"]))
    Console(highlight=False).print(table)


@app.command("breaker")
def breaker(
    route: Annotated[str, typer.Argument(help="The egress route.")],
    action: Annotated[str, typer.Argument(help="open (force open), close (force closed) or reset.")],
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Force a route's breaker open or closed, or reset it to closed with an empty window."""
    if action not in ("open", "close", "reset"):
        Console(stderr=True).print("[red]action is open, close or reset[/red]")
        raise typer.Exit(EXIT_USAGE)
    body = admin_result("POST", admin, f"/egress/breakers/{urllib.parse.quote(route, safe='')}/{action}",
                        as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(f"{body['route']}: {body['state']}")


@app.command("budgets")
def budgets(
    route: Annotated[str, typer.Option("--route", help="The egress route the call would use.")],
    workflow: Annotated[str, typer.Option("--workflow", help="X-Workflow-Id.")],
    execution: Annotated[str, typer.Option("--execution", help="X-Execution-Id.")],
    user: Annotated[str, typer.Option("--user", help="The authenticated consumer.")],
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """What is left of each budget a call would spend from (from the running gateway; nothing spent)."""
    body = admin_result("GET", admin, "/egress/budgets",
                        query={"route": route, "workflow_id": workflow, "execution_id": execution, "user": user},
                        as_json=as_json)
    if body is None:
        return
    table = Table("budget", "remaining")
    for name, left in body["remaining"].items():
        table.add_row(str(name), budget_amount(float(left)))
    Console(highlight=False).print(table)


@app.command("reset-budget")
def reset_budget(
    workflow: Annotated[str | None, typer.Option("--workflow", help="X-Workflow-Id (alone: the workflow's counts).")]
    = None,
    execution: Annotated[str | None, typer.Option("--execution", help="X-Execution-Id (with --workflow).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="A user's daily counts.")] = None,
    admin: AdminOption = DEFAULT_ADMIN,
    as_json: JsonOption = False,
) -> None:
    """Reset one execution's, workflow's or user's budget counters on every instance sharing state."""
    body = admin_result("POST", admin, "/egress/budgets/reset",
                        body={"workflow_id": workflow, "execution_id": execution, "user": user}, as_json=as_json)
    if body is None:
        return
    Console(highlight=False).print(f"reset {body['counters_reset']} counters")
