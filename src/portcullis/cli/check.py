"""``portcullis check``, ``explain`` and ``config-reference``: look at a config without serving it.

Why ``explain`` exists: when a request is refused, operators need to see what the gateway would do
with it — the canonical path (or why the target is rejected), the route it matches, the policy
chain that would run, and which request headers the route removes or refuses (and what happens to
each ``-H`` header) — without sending anything. It calls the same canonicalizer, router, chain
planner and compiled header rules as the data path, so it cannot disagree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portcullis.cli.common import config_error_text, fail
from portcullis.clock import SystemClock
from portcullis.config.advice import config_warnings
from portcullis.config.egress import EgressRouteConfig
from portcullis.config.loader import load_config
from portcullis.config.model import AttributeRule, AuthConfig, GatewayConfig, RouteConfig
from portcullis.config.reference import render_reference
from portcullis.controls.service import IncidentControls
from portcullis.egress.executor import CALLER_ONLY_HEADERS
from portcullis.errors import ClientError, ConfigError
from portcullis.gateway.build import Verifiers, effective_request, egress_door_route, plan_chain
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import GATEWAY_SET_HEADERS, REMOVED_BY_DEFAULT, fold_name, header_family, pattern_covers
from portcullis.http.target import canonicalize_target
from portcullis.ingress.router import RouteMatch, Router
from portcullis.limiting.limiter import MultiLimiter
from portcullis.observability.metrics import GatewayMetrics
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.memory_controls import MemoryControlStore

__all__ = ["check", "config_reference", "explain"]

ConfigArg = Annotated[Path, typer.Argument(help="The gateway's YAML config.")]


def _load(path: Path, console: Console) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        head, _, rest = config_error_text(path, exc).partition("\n")
        console.print(Text(f"✗ {head}", style="red"), highlight=False, soft_wrap=True)
        if rest:
            console.print(rest, markup=False, highlight=False)
        raise typer.Exit(2) from None


def _chain_namer() -> Callable[[GatewayConfig, RouteConfig], list[str]]:
    """Each route's chain, by policy name. The planner's limiter and metrics are made once per
    command: a fresh metrics registry per route cost seconds on a 20,000-route config."""
    limiter = MultiLimiter(MemoryCounterStore(), SystemClock())
    metrics = GatewayMetrics()
    verifiers = Verifiers(keys=None, jwt=None)
    clock = SystemClock()
    controls = IncidentControls(MemoryControlStore(), clock)  # the chain's shape only: no controls in force

    def names(config: GatewayConfig, route: RouteConfig) -> list[str]:
        policies = plan_chain(config, route, limiter=limiter, metrics=metrics, verifiers=verifiers,
                              controls=controls, clock=clock)
        return [*(p.name for p in sorted(policies, key=lambda p: p.stage)), "respond.security_headers (every response)"]

    return names


def _auth_summary(route: RouteConfig) -> str:
    if not isinstance(route.auth, AuthConfig):
        return "[yellow]none (public)[/yellow]"
    methods = []
    if route.auth.api_key:
        methods.append("api_key")
    if route.auth.jwt:
        methods.append("jwt" + (f"({','.join(route.auth.jwt.issuers)})" if route.auth.jwt.issuers else ""))
    if route.auth.introspection:
        methods.append(f"introspection({route.auth.introspection.issuer})")
    if route.auth.jwt_assertion:
        methods.append(f"jwt_assertion({route.auth.jwt_assertion.header})")
    if route.auth.signature is not None:
        methods.append(f"signature({','.join(route.auth.signature.algorithms)})")
    if route.auth.webhook_signature is not None:
        methods.append(f"webhook_signature({route.auth.webhook_signature.consumer})")
    if route.auth.mtls:
        methods.append("mtls" + ("(+xfcc)" if route.auth.mtls.accept_xfcc else ""))
    return (" + " if route.auth.require == "all" else " | ").join(methods)


def check(config: ConfigArg) -> None:
    """Validate a config, print each route with its protections, and warn about settings that interact."""
    console = Console()
    cfg = _load(config, console)
    chain_names = _chain_namer()
    table = Table(title=f"{config}: {len(cfg.routes)} routes", show_lines=True)
    for column in ("route", "match", "upstream", "auth", "authorize", "limits", "request", "chain"):
        table.add_column(column)
    for route in cfg.routes:
        hosts = ",".join(route.hosts) or "*"
        methods = ",".join(route.methods) or "ANY"
        authz = "-"
        if route.authorize:
            a = route.authorize
            parts = [f"all:{','.join(a.scopes_all)}" if a.scopes_all else "",
                     f"any:{','.join(a.scopes_any)}" if a.scopes_any else "",
                     f"roles:{','.join(a.roles_any)}" if a.roles_any else "",
                     *(f"{{{r.param}}}={r.claim}" if isinstance(r, AttributeRule) else f"rule:{r.name}"
                       for r in a.rules)]
            authz = " ".join(p for p in parts if p) or "-"
        limits = [*cfg.rate_limits, *route.rate_limits]
        limit_text = "\n".join(
            f"{lim.name}[{lim.key}]: {', '.join(str(r) for r in lim.rates)}" for lim in limits
        ) or "-"
        req = effective_request(cfg, route)
        req_text = f"body≤{req.max_body_bytes}" if req.max_body_bytes is not None else "body: unlimited"
        req_text += f"\nbody {req.body_buffering}"
        if req.json_body:
            req_text += f"\njson depth≤{req.json_body.max_depth} keys≤{req.json_body.max_keys}"
        table.add_row(
            route.name, f"{methods} {hosts}{route.path}", cfg.upstreams[route.upstream].url,
            _auth_summary(route), authz, limit_text, req_text, "\n".join(chain_names(cfg, route)),
        )
    console.print(table)
    for warning in config_warnings(cfg):
        console.print(Text(f"⚠ {warning}", style="yellow"), highlight=False, soft_wrap=True)
    console.print(f"[green]✓ {config} is valid[/green]", highlight=False)


def explain(
    config: ConfigArg,
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET.")],
    target: Annotated[str, typer.Argument(help="Request target as sent: /path?query or http://host/path.")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="A request header 'Name: value' (repeatable).")
    ] = None,
) -> None:
    """Show what the gateway would do with a request, without sending anything.

    Exit status: 0 when a route matches, 3 when the request would be refused before any policy.
    """
    console = Console()
    cfg = _load(config, console)
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep:
            console.print(f"[red]--header must be 'Name: value', got {h!r}[/red]", highlight=False)
            raise typer.Exit(2)
        headers[name.strip().lower()] = value.strip()
    host = headers.get("host")
    console.print(f"request:   {method.upper()} {target}" + (f"  (Host: {host})" if host else ""), highlight=False)
    try:
        canonical = canonicalize_target(target.encode("latin-1", "replace"), host=host)
    except ClientError as exc:
        console.print(f"[red]rejected:  400 {exc.code.value} (reason: {exc.reason})[/red]", highlight=False)
        raise typer.Exit(3) from None
    console.print(f"canonical: {canonical.path}" + (f"?{canonical.query.decode('latin-1')}" if canonical.query else ""),
                  highlight=False)
    section = cfg.egress if cfg.egress is not None and cfg.egress.entry.enabled else None
    door = egress_door_route(section.entry) if section is not None else None
    match = Router([*cfg.routes, door] if door is not None else cfg.routes).match(host, method.upper(), canonical.path)
    if not isinstance(match, RouteMatch):
        status = "404 route.not_found" if match.kind == "not_found" else (
            f"405 route.method_not_allowed (allow: {', '.join(match.allowed)})")
        console.print(f"[red]no route:  {status}[/red]", highlight=False)
        raise typer.Exit(3)
    route = match.route
    egress: EgressRouteConfig | None = None
    if section is not None and route is door:
        egress = section.route(match.params["egress_route"])
        if egress is None:
            console.print(f"[red]route:     egress door, but no egress route named {match.params['egress_route']!r}: "
                          "403 egress.destination_denied (after the chain)[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(3)
        query = f"?{canonical.query.decode('latin-1')}" if canonical.query else ""
        url = f"{egress.url.rstrip('/')}/{match.params['egress_path']}{query}"
        console.print(f"route:     egress → {egress.name}: {url}", highlight=False)
    else:
        console.print(f"route:     {route.name} → {cfg.upstreams[route.upstream].url}{canonical.path}", highlight=False)
    if match.params:
        console.print("params:    " + ", ".join(f"{k}={v!r}" for k, v in match.params.items()), highlight=False)
    console.print("chain:", highlight=False)
    for index, name in enumerate(_chain_namer()(cfg, route), 1):
        console.print(f"  {index}. {name}", highlight=False)
    console.print(_body_text(cfg, route, door=route is door), highlight=False)
    rules = RequestHeaderRules(cfg.request, route.request)
    for line in _header_rules_text(cfg, route, egress):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    refused = None
    for name in headers:
        verdict, family = _header_verdict(rules, fold_name(name.encode("latin-1")), egress)
        refused = refused or family
        console.print(f"  -H {name}: {verdict}", highlight=False, markup=False, soft_wrap=True)
    if refused is not None:
        console.print(f"[red]rejected:  400 request.malformed (reason: rejected_header:{refused})[/red]",
                      highlight=False)
        raise typer.Exit(3)


def _body_text(cfg: GatewayConfig, route: RouteConfig, *, door: bool) -> str:
    """How the route's request body is read, as ``explain`` prints it."""
    req = effective_request(cfg, route)
    limit = f"at most {req.max_body_bytes} bytes" if req.max_body_bytes is not None else "no limit"
    if door or req.body_buffering != "streamed":
        return f"body:      buffered ({limit}): read and checked whole before anything is forwarded"
    return (f"body:      streamed ({limit}): forwarded as it arrives; a body cut for its size, framing or "
            "timeout reaches the upstream cut")


def _header_verdict(
    rules: RequestHeaderRules, folded: bytes, egress: EgressRouteConfig | None
) -> tuple[str, str | None]:
    """What happens to one request header, and its family when it is refused."""
    family = header_family(folded.decode("latin-1"))
    if rules.refuses(folded):
        return f"refused ({family})", family
    if egress is not None:  # a third party gets none of the gateway's own headers, only the route's
        if folded.decode("latin-1") in egress.headers:
            return "replaced by the egress route's value", None
        if folded in CALLER_ONLY_HEADERS:
            return "removed (the caller's gateway credential or context)", None
        if rules.removes(folded):
            return f"removed ({family})", None
        return "sent to the provider", None
    if folded in GATEWAY_SET_HEADERS:
        return "replaced by the gateway's own value", None
    if rules.removes(folded):
        return f"removed ({family})", None
    return "forwarded", None


def _header_rules_text(cfg: GatewayConfig, route: RouteConfig, egress: EgressRouteConfig | None) -> list[str]:
    """The route's request header rules, as ``explain`` prints them (for an egress call, what the
    provider gets instead of the gateway's own headers)."""
    keeps = [*cfg.request.keep_headers, *route.request.keep_headers]
    kept_defaults = [f for f, names in REMOVED_BY_DEFAULT.items() if all(
        any(pattern_covers(k, n) for k in keeps) for n in names)]
    families = ", ".join(f for f in REMOVED_BY_DEFAULT if f not in kept_defaults)
    removed = [f"default list ({families})" if families else "no default list",
               *cfg.request.remove_headers, *route.request.remove_headers]
    refused = [*(p for p in cfg.request.reject_headers
                 if not any(pattern_covers(k, p) for k in route.request.keep_headers)),
               *route.request.reject_headers]
    own = [
        "  replaced: the gateway's own (X-Consumer-Id, X-Forwarded-For, X-Request-Id, …) and hop-by-hop",
    ] if egress is None else [
        "  dropped:  the gateway's own (X-Consumer-Id, X-Forwarded-For, X-Request-Id, …), hop-by-hop, and the "
        "caller's gateway credentials and context (" + ", ".join(sorted(n.decode() for n in CALLER_ONLY_HEADERS)) + ")",
        "  set:      " + (", ".join(egress.headers) + " (the egress route's)" if egress.headers else "-"),
    ]
    return [
        "request headers (names matched case-insensitively, `_` as `-`):",
        *own,
        "  removed:  " + ", ".join(removed),
        "  kept:     " + (", ".join(keeps) or "-"),
        "  refused:  " + (", ".join(refused) + " → 400 request.malformed" if refused else "-"),
    ]


def config_reference(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the config reference (Markdown), generated from the config model.

    Exit status: 0 written, 1 the output file cannot be written (one line says why)."""
    text = render_reference()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or type(exc).__name__}", code=1) from None
