"""The ingress side of the front door's hooks: route body plans, and refusals recorded like requests.

Why here: the HTTP server (``portcullis.server``) refuses what it cannot parse, frame, size or time,
before the app sees a request, but it must not know about routes, audit or metrics (it imports
nothing from ingress). ``GatewayApp`` implements its two Protocols (``server.base.BodyPlanner`` and
``server.base.RefusalSink``) by delegating here:

- ``route_body_plan``: the matched route's ``max_body_bytes`` (same canonicalizer and router as
  the request will meet), which the server holds the body to, and whether the route streams it
  (``request.body_buffering: streamed``: dispatched at its head) or has it read and checked whole
  before dispatch (the default);
- ``record_refusal``: one audit record and the request metric for the refusal (decision
  ``invalid_request:…``, ``server_timeout:…``, ``connection_cap:…``), and the security headers the
  server adds to its problem document.

What it refuses to do: trust forwarding headers from an untrusted peer (the client address is
resolved exactly as for a served request), or raise into the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portcullis.errors import ClientError
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.http.headers import get_all
from portcullis.http.target import canonicalize_path, canonicalize_target
from portcullis.ingress.router import RouteMatch
from portcullis.ingress.runtime import Runtime
from portcullis.observability.logs import REQUEST_ID
from portcullis.server.base import RAW_TARGET_KEY, BodyPlan, Refusal, Scope

__all__ = ["record_refusal", "route_body_plan"]

_CACHE_CONTROL = b"cache-control"  # the problem renderer sets its own


async def _nothing() -> dict[str, Any]:  # pragma: no cover - a refused request has no body to read
    return {"type": "http.disconnect"}


_DEFAULT_PLAN = BodyPlan()


def route_body_plan(rt: Runtime, scope: Scope) -> BodyPlan:
    headers = scope["headers"]
    hosts = get_all(headers, b"host")
    host = hosts[0].decode("latin-1") if len(hosts) == 1 else None
    raw_target = scope["extensions"].get(RAW_TARGET_KEY)
    try:
        if raw_target is not None:
            path = canonicalize_target(raw_target["target"], host=host).path
        else:
            path = canonicalize_path(scope["raw_path"])
    except ClientError:
        return _DEFAULT_PLAN  # the app refuses the target; the listener's default bounds the body meanwhile
    match = rt.router.match(host, scope["method"], path)
    if isinstance(match, RouteMatch):
        route = rt.routes[match.route.name]
        return BodyPlan(limit=route.max_body_bytes, stream=route.stream_body)
    return _DEFAULT_PLAN


def record_refusal(rt: Runtime, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
    headers = refusal.headers
    peer = refusal.peer
    trusted = rt.is_trusted_peer(peer)
    client_ip = rt.client_addresses.resolve(peer, get_all(headers, b"x-forwarded-for") if trusted else ())
    hosts = get_all(headers, b"host")
    path, _, query = refusal.target.partition(b"?")
    ctx = RequestContext(
        request_id=refusal.request_id, client_ip=client_ip, method=refusal.method,
        host=hosts[0].decode("latin-1") if len(hosts) == 1 else None, path=path.decode("latin-1"), query=query,
        headers=headers, scheme=refusal.scheme, started=rt.clock.monotonic() - refusal.duration_s, receive=_nothing,
    )
    ctx.decision = refusal.decision
    ctx.bytes_in = refusal.bytes_in
    head = ResponseHead(refusal.status, [], local=True)
    rt.security_headers.on_response(ctx, head)
    logged_as = REQUEST_ID.set(refusal.request_id)
    try:
        rt.record(ctx, refusal.status, None)
    finally:
        REQUEST_ID.reset(logged_as)
    return [pair for pair in head.headers if pair[0] != _CACHE_CONTROL]
