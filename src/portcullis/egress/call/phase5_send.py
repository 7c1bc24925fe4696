"""Phase 5: send the call: attempts, redirects, retries, within the response limits.

Each attempt asks the breaker first (never retry into an open breaker), connects through the
guarded resolver (resolve-then-pin: the connection goes to the address the guard checked), follows
redirects only as far as the route allows (each hop guarded again, credentials dropped when the
origin changes), and reads the answer within the response limits. Failures (5xx, 429, timeouts,
connection errors) are retried only when safe, after a jittered or provider-requested wait, while
the retry budget and the total timeout allow; beyond a streak of failed attempts at the endpoint,
a retry goes only with probability 1/failures (``egress/retry.py``, adaptive retry).

Errors leave as Portcullis errors with fixed reasons and no chained third-party exception: an
aiohttp error can carry the request's headers, and with them an injected credential.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

from portcullis.clock import Clock
from portcullis.egress.breaker import is_failure
from portcullis.egress.call.phase4_credentials import TextHeaders, renewed_token
from portcullis.egress.call.request import EgressRequest
from portcullis.egress.call.route import EgressRoute
from portcullis.egress.pinning import BlockedDestination
from portcullis.egress.response_guard import ResponseRefused, check_content_type, read_limited
from portcullis.egress.retry import may_retry_request, retry_delay_s
from portcullis.egress.ssrf import SsrfGuard
from portcullis.errors import EgressDenied, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from portcullis.http.headers import HOP_BY_HOP, RawHeaders
from portcullis.observability.tracing import ClientTrace, Tracer

__all__ = ["Answer", "Sender", "Sent", "close_session"]

# The provider's hop-by-hop headers end here; its cookies are not the caller's business.
_RESPONSE_DROP = frozenset({name.decode() for name in HOP_BY_HOP} | {"set-cookie"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Answer:
    """The provider's answer to one request: status, the headers that cross, the body as read."""

    status: int
    headers: TextHeaders
    body: bytes


@dataclass(frozen=True, slots=True)
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

    async def send(self, route: EgressRoute, method: str, url: str, headers: TextHeaders, request: EgressRequest,
                   caller: RawHeaders) -> Sent:
        cfg = route.config
        deadline = self._clock.monotonic() + cfg.total_timeout
        safe = may_retry_request(method, {k.lower(): v for k, v in headers})
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
                answer = await self._follow(route, method, url, [*headers, *_text(span)], request.body, deadline)
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
            retry_after = next((v for k, v in answer.headers if k.lower() == "retry-after"), None)
        delay = retry_delay_s(attempt, retry_after, route.retry, self._rng, self._clock.wall())
        if delay is None or self._clock.monotonic() + delay >= deadline:
            return None
        if not route.retry_budget.try_retry():
            return None
        return delay

    async def _follow(
        self, route: EgressRoute, method: str, url: str, headers: TextHeaders, body: bytes | None, deadline: float,
    ) -> Answer:
        """Send, and follow up to ``max_redirects`` redirects, each passing the whole guard again.

        Leaving the route's origin drops the headers the route injected (its credentials), as curl
        and requests do after CVE-2018-1000007 and CVE-2018-18074; a 303 (and a 301/302 after a
        POST) continues as a GET without a body, as browsers do.
        """
        cfg, policy = route.config, route.policy
        for hop in range(cfg.max_redirects + 1):
            answer = await self._send_once(route, method, url, headers, body, deadline - self._clock.monotonic())
            location = next((v for k, v in answer.headers if k.lower() == "location"), None)
            if answer.status not in _REDIRECTS or not location or hop == cfg.max_redirects:
                return answer
            next_url = urljoin(url, location)
            verdict = await self._guard.check(next_url, policy)
            if not verdict.allowed:
                raise EgressDenied(f"redirect_{verdict.reason}")
            if _origin(next_url) != _origin(url):
                headers = [(k, v) for k, v in headers if k.lower() not in cfg.headers
                           and not (route.oauth2 is not None and k.lower() == "authorization")]
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = next_url
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(
        self, route: EgressRoute, method: str, url: str, headers: TextHeaders, body: bytes | None, time_left: float,
    ) -> Answer:
        if time_left <= 0:
            raise UpstreamTimeout("egress_total_timeout")
        cfg = route.config
        timeout = aiohttp.ClientTimeout(total=time_left, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
        try:
            async with _session(route).request(
                method, yarl.URL(url, encoded=True), headers=headers, data=body, allow_redirects=False,
                timeout=timeout,
            ) as resp:
                check_content_type(resp.headers.get("Content-Type"), route.limits.content_types)
                data = await read_limited(resp.content.iter_chunked(65536), route.limits,
                                          encoding=resp.headers.get("Content-Encoding"))
                kept = [(k, v) for k, v in resp.headers.items() if k.lower() not in _RESPONSE_DROP]
                return Answer(resp.status, kept, data)
        except ResponseRefused:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedDestination):
                raise UpstreamUnavailable(f"egress_blocked:{exc.os_error.reason}") from None
            raise UpstreamUnavailable("egress_unreachable") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("egress_timeout") from None
        except (aiohttp.ClientError, ConnectionError):
            raise UpstreamUnavailable("egress_connection_failed") from None


async def close_session(route: EgressRoute) -> None:
    if route.session is not None:
        await route.session.close()
        route.session = None


def _session(route: EgressRoute) -> aiohttp.ClientSession:
    if route.session is None or route.session.closed:
        route.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=route.connector_policy, use_dns_cache=False, limit=100,
                                           ssl=route.tls if route.tls is not None else True),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )
    return route.session


def _text(span: ClientTrace) -> TextHeaders:
    """The attempt's trace headers as aiohttp takes them (the caller's own never cross: the header
    rules drop both names, ``http.headers.GATEWAY_SET_HEADERS``)."""
    return [(k.decode("ascii"), v.decode("ascii")) for k, v in span.headers]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
