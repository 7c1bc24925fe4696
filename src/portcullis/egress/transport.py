"""``portcullis.egress.transport.AsyncTransport``: guarded egress inside the caller's own process.

Why a transport: the OpenAI and Anthropic Python SDKs (and most modern clients) accept an
``httpx.AsyncClient``; giving it this transport puts every call through the same executor as the
gateway's HTTP entry point (guard, budgets, breaker, vault credentials, limits, retries) without a
network hop to the gateway and without the process ever holding the provider's key.

A request is matched to the egress route whose base URL it falls under (scheme, host, port and
path prefix); a URL no route covers is refused, as the HTTP entry point refuses an unknown route.
Refusals surface as ``httpx`` responses with the gateway's problem documents, the same
``EgressOutcome`` the HTTP door renders (403 destination denied, 403 access blocked by an incident
block, 429 budget exhausted, 503 circuit open), so SDK retry logic sees ordinary HTTP answers.

The caller's headers pass the executor's header rules, the default list at least (URL- and
method-override headers, forwarding hints, other gateways' identity headers): code in this process
is often an agent's tool and no more trusted than a caller of the gateway's door.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx

from portcullis.audit.record import AuditRecord
from portcullis.audit.redact import redact_query
from portcullis.audit.writer import AuditWriter
from portcullis.clock import Clock, SystemClock
from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressOutcome, EgressRequest
from portcullis.egress.run_mode import RunMode
from portcullis.errors import UpstreamError
from portcullis.identity.principal import Principal
from portcullis.ids import random_hex
from portcullis.pipeline.handler import BodyStream

__all__ = ["AsyncTransport", "Transport"]


class AsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport bound to one execution context."""

    def __init__(
        self, executor: EgressExecutor, config: EgressConfig, context: CallContext, *,
        audit: AuditWriter | None = None, clock: Clock | None = None, run_mode: RunMode | None = None,
        principal: Principal | None = None,
    ) -> None:
        """``run_mode``: the mode of every call (None: each request's ``X-Run-Mode``, else the
        config's default); ``principal``: who this process calls as, for routes whose full runs
        require a scope, role or rule (None: such routes refuse full runs)."""
        self._executor = executor
        self._context = context
        self._run_mode = run_mode
        self._principal = principal
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

    def _record(self, call: EgressRequest, outcome: EgressOutcome, started: float, sent: int | None = None) -> None:
        """One audit record per in-process call, shaped like the HTTP door's (route ``egress``)."""
        if self._audit is None:
            return
        path, _, query = call.path_and_query.partition("?")
        result = outcome.result
        self._audit.submit(AuditRecord.create(
            clock=self._clock, request_id=call.request_id, client_ip="in-process", consumer_id=call.context.user,
            key_id=None, method=call.method, route="egress", path=f"/{call.route}{path}",
            query=redact_query(query) if query else None, status=outcome.status, decision=outcome.decision,
            latency_ms=round((self._clock.monotonic() - started) * 1000, 3), bytes_in=len(call.body or b""),
            bytes_out=sent if sent is not None else len(outcome.body) if isinstance(outcome.body, bytes) else 0,
            upstream_status=result.status if result is not None else None,
            user_agent=None, egress=outcome.audit, trace_id=result.trace_id if result is not None else None,
        ))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        raw_path = url.raw_path.decode("ascii")
        path, _, query = raw_path.partition("?")
        name, relative = "", path
        for scheme, host, base_port, prefix, route in self._bases:
            if (url.scheme, url.host.lower(), port) != (scheme, host, base_port):
                continue
            if prefix and path != prefix and not path.startswith(prefix + "/"):
                continue
            name, relative = route, path[len(prefix):] or "/"
            break
        call = EgressRequest(
            route=name, method=request.method, path_and_query=relative + (f"?{query}" if query else ""),
            context=self._context, headers=list(request.headers.raw), body=await request.aread(),
            request_id=random_hex(128), principal=self._principal, run_mode=self._run_mode,
        )
        started = self._clock.monotonic()
        # A URL no route covers is refused as the HTTP door refuses an unknown route name.
        outcome = await self._executor.run(call)
        headers = outcome.headers  # bytes: httpx takes them as they are, and ``.raw`` gives them back
        body = outcome.body
        if not isinstance(body, bytes):
            # Relayed as it arrives; the record is written when the caller closes the response.
            def record(sent: int) -> None:
                self._record(call, outcome, started, sent)

            return httpx.Response(outcome.status, headers=headers, request=request,
                                  stream=_RelayedStream(body, record))
        self._record(call, outcome, started)
        return httpx.Response(outcome.status, headers=headers, content=body, request=request)


class _RelayedStream(httpx.AsyncByteStream):
    """A streamed answer (an LLM's events) handed to httpx unbuffered. A cut or broken stream is an
    ``httpx.RemoteProtocolError`` to the caller, as a provider's broken connection would be."""

    def __init__(self, body: BodyStream, on_close: Callable[[int], None]) -> None:
        self._stream = body
        self._on_close = on_close
        self._sent = 0
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                self._sent += len(chunk)
                yield chunk
        except UpstreamError as exc:
            raise httpx.RemoteProtocolError(f"egress stream ended: {exc.reason}") from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            self._on_close(self._sent)


class Transport(httpx.BaseTransport):
    """The synchronous door, for ``httpx.Client`` and sync SDK clients.

    The executor is asynchronous (its connections, breaker and budgets live on one event loop), so
    this transport runs that loop on a private thread and hands each request to it; calls from
    several threads are serialised onto it. Close it (or use it as a context manager) to stop the
    thread.
    """

    def __init__(self, executor_factory: Callable[[], EgressExecutor], config: EgressConfig,
                 context: CallContext, *, run_mode: RunMode | None = None, principal: Principal | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="portcullis-egress", daemon=True)
        self._thread.start()

        async def build() -> AsyncTransport:
            return AsyncTransport(executor_factory(), config, context, run_mode=run_mode, principal=principal)

        self._async = asyncio.run_coroutine_threadsafe(build(), self._loop).result()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        future = asyncio.run_coroutine_threadsafe(self._read(forwarded), self._loop)
        response = future.result()
        content = response.content
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    async def _read(self, request: httpx.Request) -> httpx.Response:
        """The whole answer, read on the executor's loop (a streamed one too: this door buffers it)."""
        response = await self._async.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._async.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()
