"""The ingress ASGI application: receive → canonicalize → route → chain → forward → respond → record.

Why a raw ASGI callable rather than a framework: this is the hot path, and every step here is a
security decision that must be explicit. The app reads the runtime once per request, so a reload
that swaps the runtime never changes a request half-way through.

What it refuses to do: show a client anything but a fixed problem document when it refuses or
fails (no exception text, no stack trace), trust a forwarding header from an untrusted peer, or
route one path while forwarding another. Nor does it ever make a cut response look complete: once a
response head has gone out, a failure can only end the connection early (RFC 9112 section 8), so
the client's HTTP library reports an incomplete message instead of handing over a short body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from portcullis.errors import (
    STORE_RETRY_AFTER_S,
    ClientError,
    ErrorCode,
    PayloadTooLarge,
    StoreUnavailable,
    UpstreamError,
)
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.http.headers import get_all, get_one
from portcullis.http.problem import render_problem
from portcullis.http.target import canonicalize_path, canonicalize_target
from portcullis.ids import random_hex
from portcullis.ingress.forward import response_headers
from portcullis.ingress.front_door import record_refusal, route_body_plan
from portcullis.ingress.router import RouteMatch
from portcullis.ingress.runtime import CompiledRoute, Runtime
from portcullis.observability.logs import REQUEST_ID
from portcullis.observability.tracing import ServerTrace
from portcullis.pipeline.base import Reject, Respond
from portcullis.pipeline.chain import PolicyChain
from portcullis.pipeline.handler import BodyStream
from portcullis.server.base import ABORT_KEY, RAW_TARGET_KEY, BodyPlan, ClientDisconnected, Refusal
from portcullis.server.framing import head_framing_error
from portcullis.server.tls import TLS_PEER_KEY
from portcullis.upstream.base import UpstreamRequest

__all__ = ["TRUNCATED_KIND", "GatewayApp"]

log = logging.getLogger("portcullis.ingress")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The ``kind`` label of portcullis_upstream_errors_total for a body cut after the head went out:
# one fixed value, whatever the cause (closed, reset, timed out).
TRUNCATED_KIND = "upstream.truncated"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_DRAIN_LIMIT = 1024 * 1024
_RETRY_1S = ((b"retry-after", b"1"),)
_RETRY_STORE = ((b"retry-after", b"%d" % STORE_RETRY_AFTER_S),)
_CLOSE = ((b"connection", b"close"),)


def new_request_id() -> str:
    return random_hex(128)


class GatewayApp:
    """The ASGI entry. ``runtime`` may be swapped at any time by a reload."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def body_plan(self, scope: Scope) -> BodyPlan:
        """``server.base.BodyPlanner``: the route's body limit, and whether the route streams its body."""
        return route_body_plan(self.runtime, scope)

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        """``server.base.RefusalSink``: audit and count a refusal the server made; security headers back."""
        return record_refusal(self.runtime, refusal)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": "start-up failed"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.runtime
        started = rt.clock.monotonic()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        peer = client[0] if client else None
        peer_trusted = rt.is_trusted_peer(peer)
        client_ip = rt.client_addresses.resolve(peer, get_all(headers, b"x-forwarded-for") if peer_trusted else ())
        inbound_id = get_one(headers, b"x-request-id") if peer_trusted else None
        request_id = inbound_id.decode() if inbound_id and _REQUEST_ID.match(inbound_id) else new_request_id()
        host_values = get_all(headers, b"host")
        host = host_values[0].decode("latin-1") if len(host_values) == 1 else None
        ctx = RequestContext(
            request_id=request_id, client_ip=client_ip, method=scope["method"], host=host, path="",
            query=scope.get("query_string", b""), headers=headers, scheme=scope.get("scheme", "http"),
            started=started, receive=receive, peer=peer,
        )
        server = scope.get("server")
        trace = rt.services.tracer.server(ctx, peer=peer, server_port=server[1] if server else None)
        ctx.trace_id = trace.trace_id
        extensions = scope.get("extensions")
        if extensions:
            ctx.tls = extensions.get(TLS_PEER_KEY)
        rt.metrics.requests_in_flight += 1
        logged_as = REQUEST_ID.set(request_id)  # every log line until the request is recorded carries it
        status = 500
        route: CompiledRoute | None = None
        chain: PolicyChain = rt.base_chain
        entered = len(chain.policies)
        try:
            if rt.shed_when_audit_full and rt.services.audit.full:
                # Nothing is served that cannot be audited: the queue is full only when the writer
                # cannot keep up at all, and shedding load is what lets it catch up.
                ctx.decision = "shed:audit_queue_full"
                status = await self._send_problem(send, ctx, ErrorCode.SERVICE_UNAVAILABLE, chain, entered, _RETRY_1S)
                return
            early = self._check_request(ctx, headers, host_values, scope)
            if early is not None:
                ctx.decision = f"invalid_request:{early[1]}"
                # A request refused here may be framed otherwise than the server read it (RFC 9112
                # section 6.3): nothing more is read from this connection.
                status = await self._send_problem(send, ctx, early[0], chain, entered, _CLOSE)
                return
            match = rt.router.match(host, ctx.method, ctx.path)
            if not isinstance(match, RouteMatch):
                ctx.decision = match.kind
                code = ErrorCode.ROUTE_NOT_FOUND if match.kind == "not_found" else ErrorCode.METHOD_NOT_ALLOWED
                extra = ((b"allow", ", ".join(match.allowed).encode()),) if match.allowed else ()
                status = await self._send_problem(send, ctx, code, chain, entered, extra)
                return
            route = rt.routes[match.route.name]
            ctx.route_name = route.name
            ctx.params = match.params
            refused = route.forward.rules.refusal(headers)
            if refused is not None:
                # The route's reject_headers: refused before any policy, never forwarded.
                ctx.decision = f"invalid_request:rejected_header:{refused}"
                status = await self._send_problem(send, ctx, ErrorCode.REQUEST_MALFORMED, chain, entered)
                return
            ctx.max_body_bytes = route.max_body_bytes
            declared = ctx.content_length
            if declared is not None and route.max_body_bytes is not None and declared > route.max_body_bytes:
                ctx.decision = "invalid_request:body_too_large"
                if declared <= _DRAIN_LIMIT:
                    await self._drain(ctx)
                status = await self._send_problem(send, ctx, ErrorCode.REQUEST_TOO_LARGE, chain, entered)
                return
            chain = route.chain
            decision, entered = await chain.run_request(ctx)
            if isinstance(decision, Reject):
                ctx.decision = decision.decision
                status = await self._send_problem(
                    send, ctx, decision.code, chain, entered, decision.headers, decision.detail
                )
                return
            if isinstance(decision, Respond):
                ctx.decision = decision.decision
                head = ResponseHead(decision.status, [*decision.headers], local=True)
                status = await self._send_head_and_body(send, ctx, head, chain, entered, decision.body)
                return
            status = await self._forward(send, ctx, route, chain, entered, peer, peer_trusted, trace)
        except ClientError as exc:
            # A streamed body's timeout reaches the app as a ClientError; it is audited as the
            # server audits a buffered body's (server_timeout:), so one query finds both.
            kind = "server_timeout" if exc.code is ErrorCode.REQUEST_TIMEOUT else "invalid_request"
            ctx.decision = f"{kind}:{exc.reason}"
            if ctx.response_status is not None:
                status = ctx.response_status
                _abort(scope)
                return
            if isinstance(exc, PayloadTooLarge):
                await self._drain(ctx)
            status = await self._send_problem(send, ctx, exc.code, chain, entered)
        except UpstreamError as exc:
            if ctx.response_status is not None:
                status = ctx.response_status
                self._cut_response(scope, ctx, exc)
                return
            ctx.decision = f"upstream_error:{exc.reason}"
            rt.metrics.upstream_errors.labels(ctx.route_name or "", exc.code.value).inc()
            status = await self._send_problem(send, ctx, exc.code, chain, entered)
        except ClientDisconnected as exc:
            # The client is gone: told by our server's send, or by a disconnect while its body was
            # streamed. An upstream answer (if any) was abandoned mid-body, so its connection is
            # discarded rather than read to the end.
            ctx.decision = "client_disconnected" if exc.reason == "gone" else f"client_cut:{exc.reason}"
            status = ctx.response_status if ctx.response_status is not None else 499
        except StoreUnavailable as exc:
            # A store outage no policy answered for itself (each store has its own rule: cached
            # keys, local shares, spill files; this is the net under them): a 503 the client may
            # retry, not an internal error with a traceback.
            log.warning("a store is unavailable request_id=%s: %s", request_id, exc)
            ctx.decision = "store_unavailable"
            status = await self._fail(send, scope, ctx, ErrorCode.SERVICE_UNAVAILABLE, _RETRY_STORE)
        except Exception:
            rt.metrics.internal_errors.inc()
            log.exception("internal error request_id=%s", request_id)
            ctx.decision = "internal_error"
            status = await self._fail(send, scope, ctx, ErrorCode.INTERNAL)
        finally:
            rt.metrics.requests_in_flight -= 1
            try:
                rt.record(ctx, status, route)
                trace.finish(status=status, path=ctx.path, route=route.template if route is not None else None,
                             decision=ctx.decision, problem=ctx.problem,
                             http_version=scope.get("http_version", "1.1"))
            finally:
                REQUEST_ID.reset(logged_as)

    async def _fail(
        self, send: Send, scope: Scope, ctx: RequestContext, code: ErrorCode,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> int:
        """The gateway failed the request, not the client: its problem document with only the base
        chain's response phase (the route's policies may be what failed), or, once the head went
        out, the connection cut where the response stands."""
        if ctx.response_status is not None:
            _abort(scope)
            return ctx.response_status
        base = self.runtime.base_chain
        return await self._send_problem(send, ctx, code, base, len(base.policies), extra)

    def _check_request(
        self, ctx: RequestContext, headers: list[tuple[bytes, bytes]], host_values: list[bytes], scope: Scope
    ) -> tuple[ErrorCode, str] | None:
        """Framing, size and target checks that need no route. Returns (code, reason) to refuse.

        Under our server a head that breaks a size or framing rule never gets here; under the former
        server (``listen.server: uvicorn``) this is where it is refused. Size first, then framing, as
        our server meets them while reading; the framing rules are the server's own
        (``server.framing``), so either server gives a request the same reason.
        """
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
        if size > self.runtime.max_header_bytes:
            return ErrorCode.REQUEST_HEADERS_TOO_LARGE, "headers_too_large"
        reason = head_framing_error(scope.get("http_version", "1.1"), headers)
        if reason is not None:
            return ErrorCode.REQUEST_MALFORMED, reason
        length = get_one(headers, b"content-length")
        if length is not None:
            ctx.content_length = int(length)  # checked above: one field, 1 to 18 digits
        try:
            raw_target = scope.get("extensions", {}).get(RAW_TARGET_KEY, {}).get("target")
            if raw_target is not None:
                target = canonicalize_target(raw_target, host=ctx.host)
                ctx.path, ctx.query = target.path, target.query
            else:
                # The query is checked too (controls, spaces, non-ASCII, '#'), then passed unchanged.
                raw = scope.get("raw_path") or scope["path"].encode()
                if ctx.query:
                    target = canonicalize_target(raw + b"?" + ctx.query, host=ctx.host)
                    ctx.path, ctx.query = target.path, target.query
                else:
                    ctx.path = canonicalize_path(raw)
        except ClientError as exc:
            return exc.code, exc.reason
        return None

    async def _forward(
        self, send: Send, ctx: RequestContext, route: CompiledRoute, chain: PolicyChain, entered: int,
        peer: str | None, peer_trusted: bool, trace: ServerTrace,
    ) -> int:
        if route.handler is not None:  # the route answers itself (the egress door)
            answer = await route.handler.handle(ctx, trace)
            head = ResponseHead(answer.status, answer.headers, local=answer.local)
            if isinstance(answer.body, bytes):
                return await self._send_head_and_body(send, ctx, head, chain, entered, answer.body)
            return await self._send_head_and_stream(send, ctx, head, chain, entered, answer.body)
        rt = self.runtime
        has_body = (ctx.content_length or 0) > 0 or get_one(ctx.headers, b"transfer-encoding") is not None
        body: AsyncIterator[bytes] | bytes | None
        body_length: int | None
        if ctx.body is not None:
            body, body_length = ctx.body, len(ctx.body)
        elif has_body:
            body, body_length = self._stream_body(ctx), ctx.content_length
        else:
            body, body_length = None, None
        path_and_query = ctx.path + ("?" + ctx.query.decode("latin-1") if ctx.query else "")
        where = route.upstream_address
        client = trace.upstream(method=ctx.method, address=where.host, port=where.port,
                                url=where.base_url + ctx.path) if where is not None else trace.upstream(
            method=ctx.method, address="", port=0, url=ctx.path)
        request = UpstreamRequest(
            method=ctx.method, path_and_query=path_and_query,
            headers=route.forward.build(ctx, peer=peer, peer_trusted=peer_trusted, body_length=body_length,
                                        trace=client.headers),
            body=body,
        )
        t0 = rt.clock.monotonic()
        try:
            response = await route.upstream.send(request, timeouts=route.timeouts)
        except UpstreamError as exc:
            client.finish(None, exc.code.value)
            if ctx.body_too_large:
                raise PayloadTooLarge("body_exceeds_limit") from None
            raise
        except BaseException as exc:
            client.finish(None, type(exc).__name__)
            raise
        error: str | None = None
        try:
            rt.metrics.upstream_answered(route.name, rt.clock.monotonic() - t0)
            ctx.upstream_status = response.status
            head = ResponseHead(response.status, response_headers(response.headers))
            head.headers.append((b"x-request-id", ctx.request_id.encode()))
            head.headers.extend(ctx.response_headers)
            chain.run_response(ctx, head, entered)
            rt.security_headers.on_response(ctx, head)
            await send({"type": "http.response.start", "status": head.status, "headers": head.headers})
            ctx.response_status = head.status
            whole = response.complete_body()
            if whole is not None:  # already here: one message, no stream
                ctx.bytes_out += len(whole)
                await send({"type": "http.response.body", "body": whole, "more_body": False})
            else:
                async for chunk in response.iter_body():
                    ctx.bytes_out += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            error = exc.code.value
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            await response.aclose()
            client.finish(response.status, error)
        return head.status

    def _cut_response(self, scope: Scope, ctx: RequestContext, exc: UpstreamError) -> None:
        """The upstream broke its body after the head went out: say so everywhere but in a clean end.

        The audit keeps the status the client saw, with ``upstream_error:response_truncated`` (plus
        the cause when it was not a plain early close, such as ``:upstream_timeout``); the metric
        gets one fixed kind; the log gets one line, with no traceback because nothing in the
        gateway failed. The connection is then closed where the body stands.
        """
        cause = "" if exc.reason == "response_truncated" else f":{exc.reason}"
        ctx.decision = f"upstream_error:response_truncated{cause}"
        self.runtime.metrics.upstream_errors.labels(ctx.route_name or "", TRUNCATED_KIND).inc()
        log.warning(
            "upstream cut the response body request_id=%s route=%s status=%s bytes_sent=%d reason=%s",
            ctx.request_id, ctx.route_name, ctx.response_status, ctx.bytes_out, exc.reason,
        )
        _abort(scope)

    async def _stream_body(self, ctx: RequestContext) -> AsyncIterator[bytes]:
        limit = ctx.max_body_bytes
        while True:
            message = await ctx.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("gone")
            chunk: bytes = message.get("body", b"")
            ctx.bytes_in += len(chunk)
            if limit is not None and ctx.bytes_in > limit:
                ctx.body_too_large = True
                raise PayloadTooLarge("body_exceeds_limit")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def _drain(self, ctx: RequestContext) -> None:
        """Read and discard what is left of a refused body, up to ``_DRAIN_LIMIT`` bytes.

        A client still uploading when the connection closes sees a reset instead of our 413; a
        bounded drain lets ordinary clients read the answer, while the connection is closed after
        it either way (the rest of a larger body is never read).
        """
        drained = 0
        while drained <= _DRAIN_LIMIT:
            message = await ctx.receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                ctx.body_consumed = True
                return

    async def _send_problem(
        self, send: Send, ctx: RequestContext, code: ErrorCode, chain: PolicyChain, entered: int,
        extra: tuple[tuple[bytes, bytes], ...] = (), detail: str | None = None,
    ) -> int:
        ctx.problem = code
        status, headers, body = render_problem(code, ctx.request_id, extra_headers=extra, detail=detail)
        head = ResponseHead(status, headers, local=True)
        return await self._send_head_and_body(send, ctx, head, chain, entered, body)

    async def _send_head_and_body(
        self, send: Send, ctx: RequestContext, head: ResponseHead, chain: PolicyChain, entered: int, body: bytes
    ) -> int:
        head.headers.append((b"x-request-id", ctx.request_id.encode()))
        head.headers.extend(ctx.response_headers)
        if not any(k == b"content-length" for k, _ in head.headers):
            head.headers.append((b"content-length", str(len(body)).encode()))
        chain.run_response(ctx, head, entered)
        # Security headers reach every response, including refusals made before any policy ran.
        self.runtime.security_headers.on_response(ctx, head)
        if head.status == 413:
            # The unread body would otherwise be parsed as the next request on this connection.
            head.headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": head.status, "headers": head.headers})
        ctx.response_status = head.status
        await send({"type": "http.response.body", "body": body, "more_body": False})
        ctx.bytes_out += len(body)
        return head.status


    async def _send_head_and_stream(
        self, send: Send, ctx: RequestContext, head: ResponseHead, chain: PolicyChain, entered: int, body: BodyStream,
    ) -> int:
        """A handler's streamed body, each chunk sent as it comes. A chunk iterator that raises an
        ``UpstreamError`` after the head went out is handled as a cut upstream body (``_cut_response``)."""
        try:
            head.headers.append((b"x-request-id", ctx.request_id.encode()))
            head.headers.extend(ctx.response_headers)
            chain.run_response(ctx, head, entered)
            self.runtime.security_headers.on_response(ctx, head)
            await send({"type": "http.response.start", "status": head.status, "headers": head.headers})
            ctx.response_status = head.status
            async for chunk in body:
                ctx.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await body.aclose()
        return head.status


def _abort(scope: Scope) -> None:
    """End the connection with the response as it stands (only ever after its head went out).

    Under our uvicorn protocol this closes the connection quietly. Under another ASGI server the
    app returns with the response incomplete, which the server answers by closing the connection
    (uvicorn and hypercorn do; they may log that the response was incomplete).
    """
    abort = scope.get("extensions", {}).get(ABORT_KEY, {}).get("abort")
    if abort is not None:
        abort()
