"""The request header lists: validated as header names at load, with the mistakes that protect
nothing (keeping the gateway's own headers, keeping what nobody removes) refused by path."""

from __future__ import annotations

import pytest

from portcullis.config.loader import load_config_text
from portcullis.config.model import GatewayConfig
from portcullis.errors import ConfigError

BASE = """
upstreams: {api: {url: "http://127.0.0.1:9000"}}
"""


def load(extra: str) -> GatewayConfig:
    return load_config_text(BASE + extra, env={})


def error_of(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(extra)
    return str(info.value)


def route(request: str) -> str:
    return f"routes: [{{name: r, path: /r, upstream: api, auth: none, request: {request}}}]\n"


def test_names_are_folded_as_backends_read_them() -> None:
    cfg = load("request: {remove_headers: [X_Debug_Token, X-Tenant-*], reject_headers: [X-HTTP-Method]}\n"
               + route("{}"))
    assert cfg.request.remove_headers == ["x-debug-token", "x-tenant-*"]
    assert cfg.request.reject_headers == ["x-http-method"]


@pytest.mark.parametrize(("request_section", "expected"), [
    pytest.param("{remove_headers: ['x debug']}", "remove_headers[0]: expected an HTTP header name", id="space-in-name"),
    pytest.param("{reject_headers: ['x-a:b']}", "expected an HTTP header name", id="colon-in-name"),
    pytest.param("{remove_headers: ['x-*-token']}", "expected an HTTP header name", id="star-not-last"),
    pytest.param("{remove_headers: ['*']}", "expected an HTTP header name", id="bare-star"),
    pytest.param("{remove_headers: ['']}", "expected an HTTP header name", id="empty-name"),
    pytest.param("{reject_headers: [Host]}", "framing header", id="rejecting-host"),
    pytest.param("{remove_headers: [content-*]}", "framing header", id="prefix-covering-content-length"),
    pytest.param("{keep_headers: [Transfer-Encoding]}", "framing header", id="keeping-transfer-encoding"),
    pytest.param("{keep_headers: [x-consumer-id]}", "set by the gateway", id="keeping-the-gateways-own"),
    pytest.param("{keep_headers: [X_Forwarded_For]}", "set by the gateway", id="keeping-an-own-variant"),
    pytest.param("{keep_headers: [proxy-authorization]}", "hop-by-hop", id="keeping-hop-by-hop"),
    pytest.param("{keep_headers: [x-user], remove_headers: [x-user]}", "also in remove_headers",
                 id="keep-and-remove-at-one-level"),
    pytest.param("{keep_headers: [x-envoy-retry-on], reject_headers: [x-envoy-*]}", "also in reject_headers",
                 id="keep-under-a-refused-prefix"),
])
def test_bad_header_lists_are_refused_naming_the_path(request_section: str, expected: str) -> None:
    message = error_of(route(request_section))
    assert "routes[0].request" in message
    assert expected in message


def test_a_global_keep_must_lift_something_from_the_default_list() -> None:
    message = error_of("request: {keep_headers: [x-custom-trace]}\n" + route("{}"))
    assert "request.keep_headers" in message
    assert "nothing to keep" in message


def test_a_route_keep_must_lift_something_inherited() -> None:
    message = error_of(route("{keep_headers: [x-custom-trace]}"))
    assert "routes[0].request.keep_headers: 'x-custom-trace'" in message
    assert "nothing to keep" in message


@pytest.mark.parametrize("keep", [
    pytest.param("x-http-method-override", id="a-default-name"),
    pytest.param("x-envoy-retry-on", id="a-name-under-a-default-prefix"),
    pytest.param("x-auth-request-*", id="a-default-prefix"),
    pytest.param("x-tenant-region", id="a-name-under-a-global-prefix"),
    pytest.param("x-debug", id="a-globally-refused-name"),
])
def test_a_route_may_keep_what_it_inherits(keep: str) -> None:
    cfg = load("request: {remove_headers: [x-tenant-*], reject_headers: [x-debug]}\n"
               + route(f"{{keep_headers: [{keep}]}}"))
    assert cfg.routes[0].request.keep_headers == [keep]
