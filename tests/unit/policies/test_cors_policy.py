"""CorsPolicy: preflights answered before authentication, CORS headers only for allowed origins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from portcullis.config.model import CorsConfig
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Respond, Stage
from portcullis.pipeline.chain import PolicyChain
from portcullis.policies.stage1_shield.cors import CorsPolicy

APP = "https://app.example.com"
CONFIG = CorsConfig(
    allow_origins=[APP, "http://localhost:3000"],
    allow_methods=["GET", "POST", "DELETE"],
    allow_headers=["Content-Type", "Authorization", "X-Api-Key"],
    expose_headers=["X-Request-Id", "RateLimit"],
    allow_credentials=True,
    max_age="10m",
)
WILDCARD = CorsConfig(allow_origins=["*"], allow_headers=["content-type"])


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def make_ctx(method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = ()) -> RequestContext:
    return RequestContext(
        request_id="req-1", client_ip="203.0.113.7", method=method, host="api.example.com", path="/orders",
        query=b"", headers=[(b"host", b"api.example.com"), *headers], scheme="https", started=0.0,
        receive=_no_body,
    )


def preflight(
    origin: bytes = APP.encode(), method: bytes = b"POST", request_headers: bytes | None = b"content-type"
) -> RequestContext:
    headers = [(b"origin", origin), (b"access-control-request-method", method)]
    if request_headers is not None:
        headers.append((b"access-control-request-headers", request_headers))
    return make_ctx("OPTIONS", headers)


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [v for k, v in headers if k == name]
    assert len(values) <= 1, f"{name!r} sent {len(values)} times"
    return values[0] if values else None


def cors_names(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    return {k for k, _ in headers if k.startswith(b"access-control-")}


def respond_after(policy: CorsPolicy, ctx: RequestContext, head: ResponseHead) -> ResponseHead:
    policy.on_response(ctx, head)
    return head


def test_cors_runs_in_the_shield_stage_before_authentication() -> None:
    policy = CorsPolicy(CONFIG)
    assert (policy.name, policy.stage) == ("respond.cors", Stage.SHIELD)


async def test_allowed_preflight_is_answered_with_204_and_the_configured_lists() -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight())
    assert isinstance(decision, Respond)
    assert decision.status == 204
    assert decision.body == b""
    h = decision.headers
    assert header(h, b"access-control-allow-origin") == APP.encode()
    assert header(h, b"access-control-allow-methods") == b"GET, POST, DELETE"
    assert header(h, b"access-control-allow-headers") == b"content-type, authorization, x-api-key"
    assert header(h, b"access-control-max-age") == b"600"
    assert header(h, b"access-control-allow-credentials") == b"true"
    assert header(h, b"vary") == b"Origin"


async def test_preflight_without_credentials_sends_no_credentials_header() -> None:
    config = CorsConfig(allow_origins=[APP], allow_headers=["content-type"])
    decision = await CorsPolicy(config).on_request(preflight())
    assert isinstance(decision, Respond)
    assert header(decision.headers, b"access-control-allow-credentials") is None


async def test_wildcard_preflight_answers_star_not_the_origin() -> None:
    decision = await CorsPolicy(WILDCARD).on_request(preflight(b"https://anyone.example"))
    assert isinstance(decision, Respond)
    assert header(decision.headers, b"access-control-allow-origin") == b"*"
    assert header(decision.headers, b"access-control-allow-credentials") is None


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"https://app.example.com.evil.example",
        b"https://evilapp.example.com",
        b"https://sub.app.example.com",
        b"http://app.example.com",
        b"https://app.example.com:8443",
        b"https://app.example.com/",
        b"https://app.example.com/path",
        b"https://user@app.example.com",
        b"https://app.example.com\x00.evil.example",
        b" https://app.example.com",
        b"null",
        b"",
        b"app.example.com",
        b"http://localhost:3001",
        b"https://app_example.com",
    ],
    ids=[
        "other-site", "suffix-attack", "prefix-attack", "subdomain", "scheme-downgrade", "other-port",
        "trailing-slash", "with-path", "with-userinfo", "nul-byte", "leading-space", "null-origin", "empty",
        "no-scheme", "localhost-other-port", "underscore-lookalike",
    ],
)
async def test_preflight_from_a_disallowed_origin_gets_403(origin: bytes) -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight(origin))
    assert decision == Reject(ErrorCode.CORS_FORBIDDEN, "invalid_request:cors_preflight")


@pytest.mark.parametrize(
    "origin",
    [b"https://APP.Example.COM", b"HTTPS://app.example.com", b"https://app.example.com:443"],
    ids=["host-case", "scheme-case", "default-port"],
)
async def test_origins_compare_as_origins(origin: bytes) -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight(origin))
    assert isinstance(decision, Respond)
    assert header(decision.headers, b"access-control-allow-origin") == origin


async def test_a_configured_default_port_matches_the_browser_serialization() -> None:
    policy = CorsPolicy(CorsConfig(allow_origins=["https://app.example.com:443"]))
    decision = await policy.on_request(preflight(request_headers=None))
    assert isinstance(decision, Respond)


async def test_null_origin_is_refused_even_with_wildcard() -> None:
    decision = await CorsPolicy(WILDCARD).on_request(preflight(b"null"))
    assert isinstance(decision, Reject)


async def test_two_origin_headers_are_refused() -> None:
    ctx = make_ctx("OPTIONS", [
        (b"origin", APP.encode()), (b"origin", b"https://evil.example"), (b"access-control-request-method", b"GET"),
    ])
    assert isinstance(await CorsPolicy(CONFIG).on_request(ctx), Reject)


@pytest.mark.parametrize("method", [b"PUT", b"PATCH", b"post", b"GET, DELETE", b"TRACE", b""])
async def test_preflight_for_a_method_not_allowed_gets_403(method: bytes) -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight(method=method))
    assert decision == Reject(ErrorCode.CORS_FORBIDDEN, "invalid_request:cors_preflight")


@pytest.mark.parametrize(
    "request_headers", [b"x-admin", b"content-type,x-forwarded-for", b"cookie", b"x-api-key, x-consumer-id"]
)
async def test_preflight_for_a_header_not_allowed_gets_403(request_headers: bytes) -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight(request_headers=request_headers))
    assert decision == Reject(ErrorCode.CORS_FORBIDDEN, "invalid_request:cors_preflight")


@pytest.mark.parametrize(
    "request_headers", [b"content-type", b"Content-Type, Authorization", b"authorization,x-api-key", b"", b" , "]
)
async def test_preflight_request_headers_compare_case_insensitively(request_headers: bytes) -> None:
    decision = await CorsPolicy(CONFIG).on_request(preflight(request_headers=request_headers))
    assert isinstance(decision, Respond)


@pytest.mark.parametrize(
    "headers",
    [[], [(b"origin", APP.encode())], [(b"access-control-request-method", b"GET")]],
    ids=["plain", "origin-only", "request-method-only"],
)
async def test_options_that_is_not_a_preflight_goes_on(headers: list[tuple[bytes, bytes]]) -> None:
    assert await CorsPolicy(CONFIG).on_request(make_ctx("OPTIONS", headers)) is None


async def test_non_options_requests_go_on() -> None:
    ctx = make_ctx("POST", [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"POST")])
    assert await CorsPolicy(CONFIG).on_request(ctx) is None


def test_allowed_origin_gets_cors_headers_on_the_response() -> None:
    ctx = make_ctx("GET", [(b"origin", APP.encode())])
    head = respond_after(CorsPolicy(CONFIG), ctx, ResponseHead(200, [(b"content-type", b"application/json")]))
    assert header(head.headers, b"access-control-allow-origin") == APP.encode()
    assert header(head.headers, b"access-control-allow-credentials") == b"true"
    assert header(head.headers, b"access-control-expose-headers") == b"x-request-id, ratelimit"
    assert header(head.headers, b"vary") == b"Origin"
    assert header(head.headers, b"access-control-allow-methods") is None


@pytest.mark.parametrize("origin", [b"https://evil.example", b"null", b"https://app.example.com.evil.example"])
def test_disallowed_origin_gets_no_cors_headers(origin: bytes) -> None:
    ctx = make_ctx("GET", [(b"origin", origin)])
    head = respond_after(CorsPolicy(CONFIG), ctx, ResponseHead(200, []))
    assert cors_names(head.headers) == set()
    assert header(head.headers, b"vary") == b"Origin"


def test_request_without_origin_gets_no_cors_headers_but_varies_on_origin() -> None:
    head = respond_after(CorsPolicy(CONFIG), make_ctx(), ResponseHead(200, []))
    assert cors_names(head.headers) == set()
    assert header(head.headers, b"vary") == b"Origin"


def test_upstream_cors_headers_are_replaced_by_the_gateways() -> None:
    upstream = [
        (b"access-control-allow-origin", b"https://evil.example"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-allow-methods", b"*"),
        (b"content-type", b"application/json"),
    ]
    evil = respond_after(CorsPolicy(CONFIG), make_ctx("GET", [(b"origin", b"https://evil.example")]),
                         ResponseHead(200, list(upstream)))
    assert cors_names(evil.headers) == set()
    assert header(evil.headers, b"content-type") == b"application/json"
    good = respond_after(CorsPolicy(CONFIG), make_ctx("GET", [(b"origin", APP.encode())]),
                         ResponseHead(200, list(upstream)))
    assert header(good.headers, b"access-control-allow-origin") == APP.encode()
    assert header(good.headers, b"access-control-allow-methods") is None


@pytest.mark.parametrize(
    ("upstream_vary", "expected"),
    [
        ([b"Accept-Encoding"], [b"Accept-Encoding", b"Origin"]),
        ([b"accept-encoding, origin"], [b"accept-encoding, origin"]),
        ([b"*"], [b"*"]),
    ],
    ids=["adds", "already-there", "star"],
)
def test_vary_origin_is_added_once(upstream_vary: list[bytes], expected: list[bytes]) -> None:
    ctx = make_ctx("GET", [(b"origin", APP.encode())])
    head = respond_after(CorsPolicy(CONFIG), ctx, ResponseHead(200, [(b"vary", v) for v in upstream_vary]))
    assert [v for k, v in head.headers if k == b"vary"] == expected


def test_wildcard_responses_send_star_without_vary() -> None:
    ctx = make_ctx("GET", [(b"origin", b"https://anyone.example")])
    head = respond_after(CorsPolicy(WILDCARD), ctx, ResponseHead(200, []))
    assert header(head.headers, b"access-control-allow-origin") == b"*"
    assert header(head.headers, b"vary") is None


class _RequireCredentials(PolicyBase):
    name = "auth.test"
    stage = Stage.AUTHENTICATE

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        return Reject(ErrorCode.AUTH_MISSING_CREDENTIALS, "unauthenticated:missing")


async def test_preflight_is_answered_before_authentication_in_a_chain() -> None:
    chain = PolicyChain([_RequireCredentials(), CorsPolicy(CONFIG)])
    ctx = preflight()
    decision, entered = await chain.run_request(ctx)
    assert isinstance(decision, Respond)
    head = ResponseHead(decision.status, list(decision.headers), local=True)
    chain.run_response(ctx, head, entered)
    assert header(head.headers, b"access-control-allow-origin") == APP.encode()
    assert header(head.headers, b"vary") == b"Origin"


async def test_a_local_401_for_an_allowed_origin_is_readable_by_the_browser() -> None:
    chain = PolicyChain([_RequireCredentials(), CorsPolicy(CONFIG)])
    ctx = make_ctx("GET", [(b"origin", APP.encode())])
    decision, entered = await chain.run_request(ctx)
    assert isinstance(decision, Reject)
    head = ResponseHead(401, [(b"content-type", b"application/problem+json")], local=True)
    chain.run_response(ctx, head, entered)
    assert header(head.headers, b"access-control-allow-origin") == APP.encode()


async def test_a_refused_preflight_response_carries_no_cors_headers() -> None:
    policy = CorsPolicy(CONFIG)
    ctx = preflight(b"https://evil.example")
    assert isinstance(await policy.on_request(ctx), Reject)
    head = respond_after(policy, ctx, ResponseHead(403, [], local=True))
    assert cors_names(head.headers) == set()
