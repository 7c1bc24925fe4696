"""Phase 1: where the call goes, whether it may go there at all, and in which run mode.

Order, and why: a caller header the rules refuse (``reject_headers``) ends the call (400) before
anything is looked up or spent, as on an ingress route; an incident block on the call's workflow,
user or execution ends it (403 ``access.blocked``, from the in-memory snapshot: no I/O); then the
route must exist and allow the method; the path is canonicalised (the same canonicaliser as
ingress) and appended to the route's base URL, so ``..`` cannot climb out of it; the route's path
rules see that canonical path; then the run mode (``egress/run_mode.py``: the door's context, else
``X-Run-Mode``, else the default) must be one the route takes, and a full run must meet the route's
requirement, before the guard spends a DNS lookup on it; last, the SSRF guard checks the URL under
the route's policy (scheme, port, host lists, the addresses the host resolves to). Nothing here
spends a limit or a budget.

The guard's verdict on the route's own origin stands for ``egress.origin_check_ttl`` once it
allowed the host, and is made once at a time (``origin_check.py`` says why); the call's own path
is checked every time (``ssrf.path_refusal``).

A ``CONNECT`` tunnel of the proxy door (``tunnel``) meets the same checks that do not need a
request it cannot read: blocks, the route, the run mode (a tunnel is bytes on their way out, so
``validate_only`` is refused), and the guard for the tunnel's host and port under the route's
policy, whose checked addresses are the only ones the tunnel may dial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from portcullis.clock import Clock
from portcullis.config.egress import path_matches
from portcullis.controls.model import BlockKind
from portcullis.controls.service import IncidentControls
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.run_mode import RUN_MODE_HEADER, RunModeCall, RunModeDecision, parse_run_mode
from portcullis.egress.ssrf import SsrfGuard, path_refusal
from portcullis.errors import Blocked, ClientError, EgressDenied, MalformedRequest
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import RawHeaders, fold_name
from portcullis.http.target import canonicalize_target

__all__ = ["Destination", "DestinationPhase"]

# Header text crosses as str (aiohttp's and httpx's type); the rules compare bytes. UTF-8 with
# surrogateescape turns any str into bytes and back unchanged, whichever door decoded it how.
TEXT, ESCAPE = "utf-8", "surrogateescape"
_RUN_MODE = RUN_MODE_HEADER.encode()


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Destination:
    """A call that may go: its route, method, absolute URL, and the caller's headers as bytes."""

    route: EgressRoute
    method: str
    url: str
    relative_path: str  # canonical, relative to the route's base URL: what path and cost rules match
    caller: RawHeaders
    mode: RunModeDecision
    addresses: tuple[IPv4Address | IPv6Address, ...] = ()  # a tunnel's: the guard's checked answer, to dial




class DestinationPhase:
    def __init__(
        self, routes: Mapping[str, EgressRoute], *, guard: SsrfGuard, header_rules: RequestHeaderRules,
        controls: IncidentControls | None, clock: Clock,
    ) -> None:
        self._routes = routes
        self._guard = guard
        self._header_rules = header_rules
        self._controls = controls
        self._clock = clock

    async def resolve(self, request: EgressRequest) -> Destination:
        caller = request.headers
        route = self._route(request, caller)
        cfg = route.config
        method = request.method.upper()
        if cfg.methods and method not in cfg.methods:
            raise EgressDenied("method_not_allowed")
        url, relative_path = _url(route, request.path_and_query)
        if cfg.paths and not any(path_matches(p, relative_path) for p in cfg.paths):
            raise EgressDenied("path_not_allowed")
        mode = self._mode(route, request, caller, method, relative_path)
        refused = path_refusal(url[len(route.base):])
        if refused is not None:
            raise EgressDenied(refused)
        refused = await route.origin_check.refusal()
        if refused is not None:
            raise EgressDenied(refused)
        return Destination(route, method, url, relative_path, caller, mode)

    def _route(self, request: EgressRequest, caller: RawHeaders) -> EgressRoute:
        """What every call and every tunnel passes first: the header rules' refusals, an incident
        block on the call's subjects, then its route."""
        refused = self._header_rules.refusal(caller)
        if refused is not None:
            raise MalformedRequest(f"rejected_header:{refused}")
        if self._controls is not None and self._controls.snapshot.has_subject_blocks:
            self._check_blocks(self._controls, request)
        route = self._routes.get(request.route)
        if route is None:
            raise EgressDenied("unknown_route")
        return route

    def _mode(self, route: EgressRoute, request: EgressRequest, caller: RawHeaders, method: str,
              relative_path: str) -> RunModeDecision:
        modes = route.run_modes
        asked = request.run_mode
        if asked is None:
            # Folded as a CGI backend reads names (``X_Run_Mode`` too): two spellings are two values,
            # refused, never one read here and the other elsewhere.
            asked = parse_run_mode([v.decode("latin-1") for k, v in caller if fold_name(k) == _RUN_MODE],
                                   modes.default)
        ctx = request.context

        def call() -> RunModeCall:  # only a CEL rule reads it
            return RunModeCall(route=route.name, method=method, path=relative_path, host=route.host,
                               scheme=route.config.url.split(":", 1)[0], workflow_id=ctx.workflow_id,
                               execution_id=ctx.execution_id, user=ctx.user, client_ip=request.client_ip)

        return modes.decide(asked, request.principal, call, self._clock.wall())

    async def tunnel(self, request: EgressRequest, host: str, port: int) -> Destination:
        """A ``CONNECT host:port`` on ``request.route`` (its method ``CONNECT``, its path ``/``)."""
        caller = request.headers  # the CONNECT's own (X-Run-Mode, the priority header)
        route = self._route(request, caller)
        mode = self._mode(route, request, caller, "CONNECT", "/")
        if not mode.sends:
            raise EgressDenied("tunnel_validate_only")  # nothing would be sent: no tunnel to open
        shown = f"[{host}]" if ":" in host else host
        url = f"https://{shown}:{port}/"
        verdict = await self._guard.check(url, route.policy)
        if not verdict.allowed:
            raise EgressDenied(verdict.reason)
        return Destination(route, "CONNECT", url, "/", caller, mode, verdict.addresses)

    def _check_blocks(self, controls: IncidentControls, request: EgressRequest) -> None:
        """Raise ``Blocked`` when the call's workflow, user or execution is blocked now."""
        snapshot, now, ctx = controls.snapshot, self._clock.wall(), request.context
        block = (snapshot.block(BlockKind.WORKFLOW, ctx.workflow_id, now)
                 or snapshot.block(BlockKind.USER, ctx.user, now)
                 or snapshot.block(BlockKind.EXECUTION, ctx.execution_id, now))
        if block is not None:
            controls.refused(block, client_ip=request.client_ip, request_id=request.request_id,
                             trace_id=request.trace.trace_id if request.trace is not None else None,
                             actor=f"egress:{request.route}", where="egress")
            raise Blocked(block.block_id)


def _url(route: EgressRoute, path_and_query: str) -> tuple[str, str]:
    if not path_and_query.startswith("/"):
        raise EgressDenied("path_invalid")
    try:
        target = canonicalize_target(path_and_query.encode("latin-1"), host=None)
    except (ClientError, UnicodeEncodeError):
        raise EgressDenied("path_invalid") from None
    query = target.query.decode("latin-1")
    return route.base + target.path + (f"?{query}" if query else ""), target.path
