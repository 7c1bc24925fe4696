"""Phase 5: send the call: attempts, redirects, retries, within the response limits.

Each attempt asks the breaker first (never retry into an open breaker), connects through the
guarded resolver (resolve-then-pin: the connection goes to the address the guard checked; the
client is ``phase5_client``, the lean HTTP/1.1 client the ingress path uses, one per route), follows
redirects only as far as the route allows (each hop guarded again, credentials dropped when the
origin changes), and reads the answer within the response limits. Failures (5xx, 429, timeouts,
connection errors) are retried only when safe, after a jittered or provider-requested wait, while
the retry budget and the total timeout allow; beyond a streak of failed attempts at the endpoint,
a retry goes only with probability 1/failures (``egress/retry.py``, adaptive retry).

A route may ask for some answers to be streamed (``stream_if``: an LLM route's event streams):
such an answer is handed over with its connection still open and its body as a chunk iterator
(``Answer.stream``), counted against the decoded-size guard on the way; the caller must close it.
The total timeout then bounds the time to the answer's head only, as a stream has its own limits.

Errors leave as Portcullis errors with fixed reasons and no chained exception: a client error can
carry the request's headers, and with them an injected credential.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from portcullis.clock import Clock
from portcullis.egress.breaker import is_failure
from portcullis.egress.call.phase4_credentials import renewed_token
from portcullis.egress.call.phase5_client import PinnedClients, PinnedResponse
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.response_guard import DecodedSizeMeter, ResponseRefused
from portcullis.egress.retry import may_retry_request, retry_delay_s
from portcullis.egress.ssrf import SsrfGuard
from portcullis.errors import EgressDenied, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from portcullis.http.headers import RawHeaders
from portcullis.observability.tracing import Tracer
from portcullis.upstream.base import Timeouts

__all__ = ["Answer", "Sender", "Sent", "StreamIf", "close_session"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

StreamIf = Callable[[int, str | None], bool]  # (status, content type) -> hand the body over as a stream


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Answer:
    """The provider's answer to one request: status, the headers that cross (lower-case names, the
    bytes as received), the body as read."""

    status: int
    headers: RawHeaders
    body: bytes
    stream: AsyncIterator[bytes] | None = None  # the body, still arriving (``stream_if``); close it


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Sent:
    """The answer the caller gets, after how many attempts, and the trace of the last one."""

    answer: Answer
    attempts: int
    trace_id: str | None


class Sender:
    def __init__(self, *, guard: SsrfGuard, clock: Clock, rng: random.Random, tracer: Tracer,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._guard = guard
        self._clock = clock
        self._rng = rng
        self._tracer = tracer
        self._sleep = sleep

    async def send(self, route: EgressRoute, method: str, url: str, headers: RawHeaders, request: EgressRequest,
                   caller: RawHeaders, *, body: bytes | None = None, stream_if: StreamIf | None = None) -> Sent:
        """``headers``: what the provider receives (phase 4's, lower-case names), bar the client's
        own; ``body``: what is sent instead of the caller's (an LLM route's re-serialised body)."""
        cfg = route.config
        deadline = self._clock.monotonic() + cfg.total_timeout
        safe = may_retry_request(method, headers)
        route.retry_budget.request()
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            permit = route.breaker.acquire()  # CircuitOpen propagates: no call, no retry into it
            started = self._clock.monotonic()
            status: int | None = None
            error: UpstreamError | None = None
            answer: Answer | None = None
            span = self._tracer.egress_attempt(request.trace, caller, method=method, url=url, host=route.host,
                                               port=route.port, attempt=attempt)
            try:
                # The attempt's trace headers (the caller's own never cross: the header rules drop
                # both names, ``http.headers.GATEWAY_SET_HEADERS``).
                answer = await self._follow(route, method, url, [*headers, *span.headers],
                                            request.body if body is None else body, deadline, stream_if)
                status = answer.status
            except UpstreamError as exc:
                error = exc
            except BaseException as exc:
                route.breaker.release(permit)
                span.finish(None, type(exc).__name__)
                raise
            span.finish(status, error.code.value if error is not None else None)
            failed = is_failure(status, error=error is not None)
            route.breaker.record(permit, failed=failed, duration_s=self._clock.monotonic() - started)
            route.streak.record(failed=failed)
            if status == 401 and route.oauth2 is not None and not renewed:
                # The provider refused our token (revoked, rotated): renew it once and send again.
                renewed = True
                headers = await renewed_token(route.oauth2, headers)
                continue
            if not failed and answer is not None:
                return Sent(answer, attempt, span.trace_id)
            delay = self._retry_delay(route, answer, attempt, safe, deadline, error)
            if delay is None:
                if answer is not None:
                    return Sent(answer, attempt, span.trace_id)
                assert error is not None
                raise error
            await self._sleep(delay)

    def _retry_delay(
        self, route: EgressRoute, answer: Answer | None, attempt: int, safe: bool, deadline: float,
        error: UpstreamError | None,
    ) -> float | None:
        if not safe or attempt >= route.retry.max_attempts or isinstance(error, ResponseRefused):
            return None
        if not route.streak.allows_retry(self._rng):
            return None  # adaptive retry: a long streak of failures makes a retry a 1/failures draw
        retry_after = None
        if answer is not None:
            retry_after = next((v.decode("latin-1") for k, v in answer.headers if k == b"retry-after"), None)
        delay = retry_delay_s(attempt, retry_after, route.retry, self._rng, self._clock.wall())
        if delay is None or self._clock.monotonic() + delay >= deadline:
            return None
        if not route.retry_budget.try_retry():
            return None
        return delay

    async def _follow(
        self, route: EgressRoute, method: str, url: str, headers: RawHeaders, body: bytes | None, deadline: float,
        stream_if: StreamIf | None = None,
    ) -> Answer:
        """Send, and follow up to ``max_redirects`` redirects, each passing the whole guard again.

        Leaving the route's origin drops the headers the route injected (its credentials), as curl
        and requests do after CVE-2018-1000007 and CVE-2018-18074; a 303 (and a 301/302 after a
        POST) continues as a GET without a body, as browsers do.
        """
        cfg, policy = route.config, route.policy
        for hop in range(cfg.max_redirects + 1):
            answer = await self._send_once(route, method, url, headers, body, deadline - self._clock.monotonic(),
                                           stream_if)
            if answer.status not in _REDIRECTS or hop == cfg.max_redirects:
                return answer
            location = next((v for k, v in answer.headers if k == b"location"), None)
            if not location:
                return answer
            next_url = urljoin(url, location.decode("latin-1"))
            verdict = await self._guard.check(next_url, policy)
            if not verdict.allowed:
                raise EgressDenied(f"redirect_{verdict.reason}")
            if _origin(next_url) != _origin(url):
                headers = [(k, v) for k, v in headers if k not in route.injected_names
                           and not (route.oauth2 is not None and k == b"authorization")]
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = next_url
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(
        self, route: EgressRoute, method: str, url: str, headers: RawHeaders, body: bytes | None, time_left: float,
        stream_if: StreamIf | None = None,
    ) -> Answer:
        if time_left <= 0:
            raise UpstreamTimeout("egress_total_timeout")
        cfg = route.config
        # A streamed answer outlives the total timeout: it bounds the head (and a buffered body) here.
        timeouts = Timeouts(connect_s=min(cfg.connect_timeout, time_left), read_s=cfg.read_timeout,
                            total_s=math.inf if stream_if is not None else time_left)
        handed_over = False
        try:
            async with asyncio.timeout(time_left if stream_if is not None else None):
                resp = await _clients(route, self._guard).request(method, url, headers, body, limits=route.limits,
                                                                  timeouts=timeouts)
                try:
                    if stream_if is not None and stream_if(resp.status, resp.content_type):
                        meter = None
                        if route.limits.max_decoded_bytes is not None:
                            meter = DecodedSizeMeter(resp.encoding, route.limits.max_decoded_bytes)
                        handed_over = True
                        return Answer(resp.status, resp.headers, b"", stream=_streamed(resp, meter))
                    return Answer(resp.status, resp.headers, await resp.read())
                finally:
                    if not handed_over:
                        await resp.aclose()
        except TimeoutError:  # the head (or a buffered body) of a call that may stream took too long
            raise UpstreamTimeout("egress_timeout") from None


async def _streamed(resp: PinnedResponse, meter: DecodedSizeMeter | None) -> AsyncIterator[bytes]:
    """A streamed answer's body as it arrives; a connection left mid-answer is dropped, not pooled."""
    try:
        async for chunk in resp.iter_body():
            if meter is not None:
                meter.feed(chunk)
            yield chunk
    except (ResponseRefused, UpstreamTimeout):
        raise
    except UpstreamError:
        raise UpstreamProtocolError("response_truncated") from None
    finally:
        await resp.aclose()


async def close_session(route: EgressRoute) -> None:
    if route.session is not None:
        await route.session.aclose()
        route.session = None


def _clients(route: EgressRoute, guard: SsrfGuard) -> PinnedClients:
    if route.session is None:
        route.session = PinnedClients(guard, route.policy, tls=route.tls)
    return route.session


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
