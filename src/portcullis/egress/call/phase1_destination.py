"""Phase 1: where the call goes, and whether it may go there at all.

Order, and why: a caller header the rules refuse (``reject_headers``) ends the call (400) before
anything is looked up or spent, as on an ingress route; an incident block on the call's workflow,
user or execution ends it (403 ``access.blocked``, from the in-memory snapshot: no I/O); then the
route must exist and allow the method; the path is canonicalised (the same canonicaliser as
ingress) and appended to the route's base URL, so ``..`` cannot climb out of it; the route's path
rules see that canonical path; last, the SSRF guard checks the URL under the route's policy
(scheme, port, host lists). Nothing here spends a limit or a budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.config.egress import path_matches
from portcullis.controls.model import BlockKind
from portcullis.controls.service import IncidentControls
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.ssrf import SsrfGuard
from portcullis.errors import Blocked, ClientError, EgressDenied, MalformedRequest
from portcullis.http.header_rules import RequestHeaderRules
from portcullis.http.headers import RawHeaders
from portcullis.http.target import canonicalize_target

__all__ = ["Destination", "DestinationPhase", "caller_headers"]

# Header text crosses as str (aiohttp's and httpx's type); the rules compare bytes. UTF-8 with
# surrogateescape turns any str into bytes and back unchanged, whichever door decoded it how.
TEXT, ESCAPE = "utf-8", "surrogateescape"


@dataclass(frozen=True, slots=True)
class Destination:
    """A call that may go: its route, method, absolute URL, and the caller's headers as bytes."""

    route: EgressRoute
    method: str
    url: str
    relative_path: str  # canonical, relative to the route's base URL: what path and cost rules match
    caller: RawHeaders


def caller_headers(request: EgressRequest) -> RawHeaders:
    return [(k.encode(TEXT, ESCAPE), v.encode(TEXT, ESCAPE)) for k, v in request.headers]


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
        caller = caller_headers(request)
        refused = self._header_rules.refusal(caller)
        if refused is not None:
            raise MalformedRequest(f"rejected_header:{refused}")
        if self._controls is not None and self._controls.snapshot.has_subject_blocks:
            self._check_blocks(self._controls, request)
        route = self._routes.get(request.route)
        if route is None:
            raise EgressDenied("unknown_route")
        cfg = route.config
        method = request.method.upper()
        if cfg.methods and method not in cfg.methods:
            raise EgressDenied("method_not_allowed")
        url, relative_path = _url(route, request.path_and_query)
        if cfg.paths and not any(path_matches(p, relative_path) for p in cfg.paths):
            raise EgressDenied("path_not_allowed")
        verdict = await self._guard.check(url, route.policy)
        if not verdict.allowed:
            raise EgressDenied(verdict.reason)
        return Destination(route, method, url, relative_path, caller)

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
