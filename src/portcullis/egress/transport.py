"""``portcullis.egress.transport.AsyncTransport``: guarded egress inside the caller's own process.

Why a transport: the OpenAI and Anthropic Python SDKs (and most modern clients) accept an
``httpx.AsyncClient``; giving it this transport puts every call through the same executor as the
gateway's HTTP entry point (guard, budgets, breaker, vault credentials, limits, retries) without a
network hop to the gateway and without the process ever holding the provider's key.

A request is matched to the egress route whose base URL it falls under (scheme, host, port and
path prefix); a URL no route covers is refused, as the HTTP entry point refuses an unknown route.
Refusals surface as ``httpx`` responses with the gateway's problem documents (403 destination
denied, 403 access blocked by an incident block, 429 budget exhausted, 503 circuit open), so SDK
retry logic sees ordinary HTTP answers.

The caller's headers pass the executor's header rules, the default list at least (URL- and
method-override headers, forwarding hints, other gateways' identity headers): code in this process
is often an agent's tool and no more trusted than a caller of the gateway's door.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import redact_query
from portcullis.audit.writer import AuditWriter
from portcullis.clock import Clock, SystemClock
from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.errors import Blocked, BudgetExhausted, CircuitOpen, ClientError, RateLimited, UpstreamError
from portcullis.http.problem import render_problem
from portcullis.ids import random_hex

__all__ = ["AsyncTransport", "Transport"]


class AsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport bound to one execution context."""

    def __init__(
        self, executor: EgressExecutor, config: EgressConfig, context: CallContext, *,
        audit: AuditWriter | None = None, clock: Clock | None = None,
    ) -> None:
        self._executor = executor
        self._context = context
        self._audit = audit
        self._clock = clock or SystemClock()
        self._bases = []
        for route in config.routes:
            parts = urlsplit(route.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._bases.append((parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"), route.name))
        self._bases.sort(key=lambda b: len(b[3]), reverse=True)  # the longest prefix wins

    async def aclose(self) -> None:
        await self._executor.aclose()

    def _record(
        self, call: EgressRequest, status: int, decision: str, started: float, details: dict[str, Any] | None,
        trace_id: str | None = None,
    ) -> None:
        """One audit record per in-process call, shaped like the HTTP door's (route ``egress``)."""
        if self._audit is None:
            return
        path, _, query = call.path_and_query.partition("?")
        self._audit.submit(AuditRecord.create(
            clock=self._clock, request_id=call.request_id or random_hex(128), client_ip="in-process",
            consumer_id=call.context.user, key_id=None, method=call.method, route="egress",
            path=f"/{call.route}{path}", query=redact_query(query) if query else None, status=status,
            decision=decision, latency_ms=round((self._clock.monotonic() - started) * 1000, 3),
            bytes_in=len(call.body or b""), bytes_out=0, upstream_status=status if details else None,
            user_agent=None, egress={**_record_fields(call), **(details or {})}, trace_id=trace_id,
        ))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        raw_path = url.raw_path.decode("ascii")
        path, _, query = raw_path.partition("?")
        for scheme, host, base_port, prefix, name in self._bases:
            if (url.scheme, url.host.lower(), port) != (scheme, host, base_port):
                continue
            if prefix and path != prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix):] or "/"
            call = EgressRequest(
                route=name, method=request.method, path_and_query=relative + (f"?{query}" if query else ""),
                context=self._context, headers=list(request.headers.multi_items()), body=await request.aread(),
                request_id=random_hex(128),
            )
            return await self._execute(call, request)
        return _problem(ClientError("no_route_for_url"), request, 403)

    async def _execute(self, call: EgressRequest, request: httpx.Request) -> httpx.Response:
        started = self._clock.monotonic()
        try:
            result = await self._executor.call(call)
        except (CircuitOpen, RateLimited) as exc:
            response = _problem(exc, request, None, retry_after=exc.retry_after_s)
            self._record(call, response.status_code, f"egress_refused:{exc.reason}", started, None)
            return response
        except Blocked as exc:
            response = _problem(exc, request, None)
            self._record(call, response.status_code, exc.reason, started, None)  # blocked:<block id>
            return response
        except (ClientError, UpstreamError) as exc:
            response = _problem(exc, request, None)
            self._record(call, response.status_code, f"egress_refused:{exc.reason}", started, None)
            return response
        self._record(call, result.status, "allowed", started, {
            "host": result.host, "attempts": result.attempts, "breaker": result.breaker.value, "cost": result.cost,
            "budget_remaining": dict(result.budget.remaining), "secrets": list(result.secrets),
        }, result.trace_id)
        headers = [(k, v) for k, v in result.headers if k.lower() not in ("content-length", "content-encoding")]
        headers.append(("X-Egress-Attempts", str(result.attempts)))
        for name, left in result.budget.remaining.items():
            headers.append(("X-Budget-Remaining", f"{name}={left:g}"))
        # The body is handed over as received; httpx must not decode it a second time.
        encoding = next((v for k, v in result.headers if k.lower() == "content-encoding"), None)
        if encoding:
            headers.append(("Content-Encoding", encoding))
        return httpx.Response(result.status, headers=headers, content=result.body, request=request)


def _record_fields(call: EgressRequest) -> dict[str, Any]:
    return {"route": call.route, "workflow_id": call.context.workflow_id,
            "execution_id": call.context.execution_id}


def _problem(
    exc: ClientError | UpstreamError, request: httpx.Request, status: int | None, *, retry_after: float | None = None
) -> httpx.Response:
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if retry_after is not None:
        extra = ((b"retry-after", str(max(1, round(retry_after))).encode()),)
    # Only a budget's name is told to the caller (it must know which cap it hit); a guard's reason
    # stays in the audit, or a prompt could use it to map internal DNS ("private" vs "no such name").
    detail = exc.detail if isinstance(exc, BudgetExhausted) else None
    code_status, headers, body = render_problem(exc.code, random_hex(128), extra_headers=extra, detail=detail)
    return httpx.Response(
        status or code_status, headers=[(k.decode(), v.decode()) for k, v in headers], content=body, request=request,
    )


class Transport(httpx.BaseTransport):
    """The synchronous door, for ``httpx.Client`` and sync SDK clients.

    The executor is asynchronous (its connections, breaker and budgets live on one event loop), so
    this transport runs that loop on a private thread and hands each request to it; calls from
    several threads are serialised onto it. Close it (or use it as a context manager) to stop the
    thread.
    """

    def __init__(self, executor_factory: Callable[[], EgressExecutor], config: EgressConfig,
                 context: CallContext) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="portcullis-egress", daemon=True)
        self._thread.start()

        async def build() -> AsyncTransport:
            return AsyncTransport(executor_factory(), config, context)

        self._async = asyncio.run_coroutine_threadsafe(build(), self._loop).result()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        future = asyncio.run_coroutine_threadsafe(self._async.handle_async_request(forwarded), self._loop)
        response = future.result()
        content = response.content
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._async.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
