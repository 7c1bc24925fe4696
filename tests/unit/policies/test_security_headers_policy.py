"""SecurityHeadersPolicy: what every response carries, and what upstream internals it loses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from portcullis.config.model import SecurityHeadersConfig
from portcullis.http.context import RequestContext, ResponseHead
from portcullis.identity.principal import Principal
from portcullis.pipeline.base import Stage
from portcullis.policies.stage6_respond.security_headers import SecurityHeadersPolicy

DEFAULTS = SecurityHeadersConfig()
ALICE = Principal(consumer_id="alice", method="api_key", key_id="k1")


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def make_ctx(principal: Principal | None = None) -> RequestContext:
    return RequestContext(
        request_id="req-1", client_ip="203.0.113.7", method="GET", host="api.example.com", path="/orders",
        query=b"", headers=[(b"host", b"api.example.com")], scheme="https", started=0.0, receive=_no_body,
        principal=principal,
    )


def respond(
    upstream: Sequence[tuple[bytes, bytes]] = (),
    *,
    config: SecurityHeadersConfig = DEFAULTS,
    tls: bool = False,
    principal: Principal | None = None,
    local: bool = False,
    status: int = 200,
) -> list[tuple[bytes, bytes]]:
    head = ResponseHead(status, list(upstream), local=local)
    SecurityHeadersPolicy(config, tls=tls).on_response(make_ctx(principal), head)
    return head.headers


def values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def test_security_headers_run_in_the_respond_stage() -> None:
    policy = SecurityHeadersPolicy(DEFAULTS, tls=False)
    assert (policy.name, policy.stage) == ("respond.security_headers", Stage.RESPOND)


def test_every_response_gets_the_default_security_headers() -> None:
    headers = respond([(b"content-type", b"application/json")])
    assert values(headers, b"x-content-type-options") == [b"nosniff"]
    assert values(headers, b"x-frame-options") == [b"DENY"]
    assert values(headers, b"referrer-policy") == [b"no-referrer"]
    assert values(headers, b"content-security-policy") == [b"frame-ancestors 'none'"]
    assert values(headers, b"content-type") == [b"application/json"]


@pytest.mark.parametrize(
    "name", [b"server", b"x-powered-by", b"x-aspnet-version", b"x-aspnetmvc-version"]
)
def test_headers_revealing_upstream_internals_are_removed(name: bytes) -> None:
    headers = respond([(name, b"Apache/2.4.1 (Unix) PHP/5.6"), (b"content-length", b"2")])
    assert values(headers, name) == []
    assert values(headers, b"content-length") == [b"2"]


def test_every_copy_of_a_removed_header_goes() -> None:
    headers = respond([(b"server", b"nginx"), (b"x-powered-by", b"Express"), (b"server", b"gunicorn")])
    assert values(headers, b"server") == values(headers, b"x-powered-by") == []


def test_removed_headers_are_configurable() -> None:
    config = SecurityHeadersConfig(remove_headers=["X-Backend-Host"])
    headers = respond([(b"x-backend-host", b"10.0.0.12"), (b"server", b"nginx")], config=config)
    assert values(headers, b"x-backend-host") == []
    assert values(headers, b"server") == [b"nginx"]


def test_upstream_copies_of_gateway_headers_are_replaced_not_duplicated() -> None:
    headers = respond([
        (b"x-frame-options", b"ALLOWALL"), (b"x-content-type-options", b"sniff"),
        (b"referrer-policy", b"unsafe-url"),
    ])
    assert values(headers, b"x-frame-options") == [b"DENY"]
    assert values(headers, b"x-content-type-options") == [b"nosniff"]
    assert values(headers, b"referrer-policy") == [b"no-referrer"]


def test_an_upstream_content_security_policy_is_kept() -> None:
    headers = respond([(b"content-security-policy", b"default-src 'self'")])
    assert values(headers, b"content-security-policy") == [b"default-src 'self'"]


def test_content_security_policy_can_be_turned_off() -> None:
    config = SecurityHeadersConfig(content_security_policy=None)
    assert values(respond(config=config), b"content-security-policy") == []


def test_configured_frame_and_referrer_policies_are_sent() -> None:
    config = SecurityHeadersConfig(frame_options="SAMEORIGIN", referrer_policy="strict-origin-when-cross-origin")
    headers = respond(config=config)
    assert values(headers, b"x-frame-options") == [b"SAMEORIGIN"]
    assert values(headers, b"referrer-policy") == [b"strict-origin-when-cross-origin"]


def test_hsts_is_sent_over_tls_and_replaces_the_upstreams() -> None:
    headers = respond([(b"strict-transport-security", b"max-age=0")], tls=True)
    assert values(headers, b"strict-transport-security") == [b"max-age=31536000; includeSubDomains"]


def test_hsts_follows_its_config() -> None:
    config = SecurityHeadersConfig(hsts_max_age="1d", hsts_include_subdomains=False)
    assert values(respond(config=config, tls=True), b"strict-transport-security") == [b"max-age=86400"]


def test_hsts_is_not_sent_without_tls() -> None:
    assert values(respond(tls=False), b"strict-transport-security") == []


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ([], [b"no-store"]),
        ([b"public, max-age=3600"], [b"no-store"]),
        ([b"max-age=3600"], [b"no-store"]),
        ([b"s-maxage=60, private"], [b"no-store"]),
        ([b"private, public"], [b"no-store"]),
        ([b'private="set-cookie", max-age=60'], [b"no-store"]),
        ([b'no-cache="x-token", max-age=60'], [b"no-store"]),
        ([b"max-age=60", b"public"], [b"no-store"]),
        ([b"private, max-age=60"], [b"private, max-age=60"]),
        ([b"no-store"], [b"no-store"]),
        ([b"No-Cache"], [b"No-Cache"]),
        ([b"max-age=0", b"private"], [b"max-age=0", b"private"]),
    ],
    ids=[
        "absent", "public", "heuristically-shareable", "s-maxage", "public-and-private", "qualified-private",
        "qualified-no-cache", "public-in-second-header", "private-kept", "no-store-kept", "no-cache-kept",
        "private-in-second-header-kept",
    ],
)
def test_authenticated_responses_never_reach_shared_caches(upstream: list[bytes], expected: list[bytes]) -> None:
    headers = respond([(b"cache-control", v) for v in upstream], principal=ALICE)
    assert values(headers, b"cache-control") == expected


def test_local_error_responses_are_not_stored() -> None:
    headers = respond([(b"content-type", b"application/problem+json")], local=True, status=401)
    assert values(headers, b"cache-control") == [b"no-store"]
    assert values(headers, b"x-content-type-options") == [b"nosniff"]


def test_a_local_response_already_marked_no_store_keeps_one_header() -> None:
    headers = respond([(b"cache-control", b"no-store")], local=True, status=429)
    assert values(headers, b"cache-control") == [b"no-store"]


@pytest.mark.parametrize("upstream", [[], [b"public, max-age=300"]], ids=["absent", "public"])
def test_public_responses_keep_upstream_caching(upstream: list[bytes]) -> None:
    headers = respond([(b"cache-control", v) for v in upstream])
    assert values(headers, b"cache-control") == upstream


def test_header_order_of_the_upstream_is_kept() -> None:
    upstream = [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"etag", b'"x"')]
    headers = respond(upstream)
    assert [h for h in headers if h in upstream] == upstream
