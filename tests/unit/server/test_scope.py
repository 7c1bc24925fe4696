"""build_scope: what the app is told about a parsed head (ASGI HTTP scope 2.3, RFC 9112 section 3.2)."""

from __future__ import annotations

import pytest

from portcullis.server.base import RAW_TARGET_KEY
from portcullis.server.scope import build_scope, socket_address

HEADERS = [(b"host", b"api.example")]


def scope_for(url: bytes) -> dict[str, object]:
    return build_scope(url, "1.1", "GET", HEADERS, ("127.0.0.1", 8080), ("203.0.113.9", 51000), "https")


def test_the_scope_carries_the_connection_and_the_head_as_asgi_names_them() -> None:
    scope = scope_for(b"/orders?id=7")
    assert scope == {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8080), "client": ("203.0.113.9", 51000), "scheme": "https", "method": "GET",
        "root_path": "", "path": "/orders", "raw_path": b"/orders", "query_string": b"id=7", "headers": HEADERS,
        "extensions": {},
    }


def test_the_header_list_is_handed_over_not_copied() -> None:
    assert scope_for(b"/")["headers"] is HEADERS


TARGETS = [
    # target, path, raw_path, query_string
    pytest.param(b"/a%2Fb/c%20d", "/a/b/c d", b"/a%2Fb/c%20d", b"", id="ASGI-path-is-percent-decoded-raw-path-is-not"),
    pytest.param(b"/p?x=%41&y", "/p", b"/p", b"x=%41&y", id="query-string-is-passed-undecoded"),
]


@pytest.mark.parametrize(("target", "path", "raw_path", "query"), TARGETS)
def test_origin_form_targets_are_split_into_path_and_query(target: bytes, path: str, raw_path: bytes, query: bytes) -> None:
    scope = scope_for(target)
    assert (scope["path"], scope["raw_path"], scope["query_string"], scope["extensions"]) == (path, raw_path, query, {})


@pytest.mark.parametrize("target", [
    pytest.param(b"http://other.example/p?q=1", id="RFC9112-3.2.2-absolute-form"),
    pytest.param(b"*", id="RFC9112-3.2.4-asterisk-form"),
    pytest.param(b"other.example:443", id="RFC9112-3.2.3-authority-form"),
])
def test_a_target_that_is_not_origin_form_is_kept_whole_for_the_canonicalizer(target: bytes) -> None:
    assert scope_for(target)["extensions"] == {RAW_TARGET_KEY: {"target": target}}


def test_a_target_the_url_parser_cannot_split_gets_an_empty_path_for_the_app_to_refuse() -> None:
    scope = scope_for(b"http://[::1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("", b"", b"")


@pytest.mark.parametrize(("info", "address"), [
    pytest.param(("127.0.0.1", 8080), ("127.0.0.1", 8080), id="ipv4"),
    pytest.param(("::1", 8080, 0, 0), ("::1", 8080), id="ipv6-flow-info-and-scope-dropped"),
    pytest.param("/run/portcullis.sock", None, id="unix-socket"),
    pytest.param(None, None, id="unknown"),
])
def test_socket_address_is_host_and_port_or_nothing(info: object, address: tuple[str, int] | None) -> None:
    assert socket_address(info) == address
