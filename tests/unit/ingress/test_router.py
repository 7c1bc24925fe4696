"""Unit tests for ingress/router.py: precedence, hosts, methods, parameters, trailing slashes."""

from __future__ import annotations

import pytest

from portcullis.config.model import RouteConfig
from portcullis.errors import ConfigError
from portcullis.ingress.router import RouteMatch, RouteMiss, Router


def route(name: str, path: str, *, methods: tuple[str, ...] = (), hosts: tuple[str, ...] = ()) -> RouteConfig:
    return RouteConfig(name=name, path=path, upstream="app", methods=list(methods), hosts=list(hosts))


def matched(result: RouteMatch | RouteMiss) -> tuple[str, dict[str, str]]:
    assert isinstance(result, RouteMatch), result
    return result.route.name, dict(result.params)


# Listed least specific first on purpose: config order must not beat specificity.
PRECEDENCE_ROUTES = [
    route("catch-all", "/{rest:path}"),
    route("any-any", "/{a}/{b}"),
    route("any-b", "/{a}/b"),
    route("users-rest", "/users/{rest:path}"),
    route("users-id", "/users/{id}"),
    route("users-me", "/users/me"),
    route("users-id-orders", "/users/{id}/orders"),
    route("root", "/"),
]


@pytest.mark.parametrize(
    ("path", "name", "params"),
    [
        pytest.param("/users/me", "users-me", {}, id="literal-beats-param"),
        pytest.param("/users/42", "users-id", {"id": "42"}, id="param-beats-path"),
        pytest.param("/users/42/orders", "users-id-orders", {"id": "42"}, id="longer-literal-template"),
        pytest.param("/users/42/x", "users-rest", {"rest": "42/x"}, id="path-param-takes-the-rest"),
        pytest.param("/users/b", "users-id", {"id": "b"}, id="first-differing-segment-decides"),
        pytest.param("/x/b", "any-b", {"a": "x"}, id="literal-second-segment"),
        pytest.param("/x/y", "any-any", {"a": "x", "b": "y"}, id="two-params"),
        pytest.param("/x/y/z", "catch-all", {"rest": "x/y/z"}, id="catch-all"),
        pytest.param("/", "root", {}, id="root"),
    ],
)
def test_most_specific_route_wins_whatever_the_config_order(path: str, name: str, params: dict[str, str]) -> None:
    assert matched(Router(PRECEDENCE_ROUTES).match(None, "GET", path)) == (name, params)


def test_equally_specific_routes_keep_config_order() -> None:
    router = Router([route("first", "/{a}"), route("second", "/{b}")])
    assert matched(router.match(None, "GET", "/x")) == ("first", {"a": "x"})


@pytest.mark.parametrize(
    ("path", "name"),
    [
        pytest.param("/a", "no-slash", id="without-trailing-slash"),
        pytest.param("/a/", "slash", id="with-trailing-slash"),
    ],
)
def test_trailing_slash_is_significant(path: str, name: str) -> None:
    router = Router([route("no-slash", "/a"), route("slash", "/a/")])
    assert matched(router.match(None, "GET", path))[0] == name


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/files/", id="path-param-needs-a-segment"),
        pytest.param("/files", id="no-rest-at-all"),
        pytest.param("/users/", id="param-cannot-be-empty"),
        pytest.param("/users/1/2", id="param-is-one-segment"),
        pytest.param("/Users/1", id="case-sensitive"),
    ],
)
def test_unmatched_path_is_not_found(path: str) -> None:
    router = Router([route("files", "/files/{rest:path}"), route("user", "/users/{id}")])
    assert router.match(None, "GET", path) == RouteMiss("not_found")


def test_path_param_keeps_a_trailing_slash() -> None:
    router = Router([route("files", "/files/{rest:path}")])
    assert matched(router.match(None, "GET", "/files/a/b/")) == ("files", {"rest": "a/b/"})


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("/u/caf%C3%A9", {"id": "café"}, id="utf8"),
        pytest.param("/u/a%20b", {"id": "a b"}, id="space"),
        pytest.param("/u/a%3Fb%23", {"id": "a?b#"}, id="reserved"),
        pytest.param("/u/100%25", {"id": "100%"}, id="percent"),
    ],
)
def test_params_are_percent_decoded(path: str, params: dict[str, str]) -> None:
    assert matched(Router([route("u", "/u/{id}")]).match(None, "GET", path)) == ("u", params)


def test_rest_param_is_percent_decoded() -> None:
    router = Router([route("f", "/f/{rest:path}")])
    assert matched(router.match(None, "GET", "/f/a%20b/%E2%82%AC")) == ("f", {"rest": "a b/€"})


def test_template_literal_is_compared_in_canonical_form() -> None:
    router = Router([route("home", "/%7ebob/caf%c3%a9")])
    assert matched(router.match(None, "GET", "/~bob/caf%C3%A9"))[0] == "home"


HOST_ROUTES = [
    route("api", "/x", hosts=("API.example.com",)),
    route("v6", "/x", hosts=("::1",)),
    route("any", "/x"),
]


@pytest.mark.parametrize(
    ("host", "name"),
    [
        pytest.param("api.example.com", "api", id="exact"),
        pytest.param("API.EXAMPLE.COM", "api", id="case-insensitive"),
        pytest.param("api.example.com:8443", "api", id="port-stripped"),
        pytest.param("api.example.com.", "api", id="trailing-dot"),
        pytest.param("[::1]:8080", "v6", id="ipv6-with-port"),
        pytest.param("[::1]", "v6", id="ipv6"),
        pytest.param("evil.example.com", "any", id="other-host-falls-to-any"),
        pytest.param("api.example.com.evil.test", "any", id="suffix-is-not-a-match"),
        pytest.param(None, "any", id="no-host-header"),
    ],
)
def test_host_matching(host: str | None, name: str) -> None:
    assert matched(Router(HOST_ROUTES).match(host, "GET", "/x"))[0] == name


def test_host_only_route_is_not_found_for_other_hosts() -> None:
    router = Router([route("api", "/x", hosts=("api.example.com",))])
    assert router.match("other.example.com", "GET", "/x") == RouteMiss("not_found")


@pytest.mark.parametrize("host", ["api.example.com:443", "[::1]:80"])
def test_configured_host_with_a_port_is_a_config_error(host: str) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]\.hosts"):
        Router([route("api", "/x", hosts=(host,))])


def test_literal_dot_segment_in_a_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]\.path"):
        Router([route("dots", "/a/..")])


def test_head_matches_a_get_route() -> None:
    router = Router([route("read", "/r", methods=("GET",))])
    assert matched(router.match(None, "HEAD", "/r"))[0] == "read"


def test_wrong_method_is_method_not_allowed_with_every_allowed_method() -> None:
    router = Router([route("read", "/r/{id}", methods=("GET",)), route("write", "/r/1", methods=("PUT",))])
    assert router.match(None, "DELETE", "/r/1") == RouteMiss("method_not_allowed", ("GET", "HEAD", "PUT"))


def test_less_specific_route_serves_a_method_the_specific_one_lacks() -> None:
    router = Router([route("me", "/users/me", methods=("GET",)), route("user", "/users/{id}")])
    assert matched(router.match(None, "DELETE", "/users/me")) == ("user", {"id": "me"})


def test_method_not_allowed_only_considers_routes_for_this_host() -> None:
    router = Router([route("api", "/x", methods=("POST",), hosts=("api.example.com",))])
    assert router.match("other.example.com", "GET", "/x") == RouteMiss("not_found")


def test_routes_for_explain_lists_routes_in_matching_order() -> None:
    names = [r.name for r in Router(PRECEDENCE_ROUTES).routes_for_explain()]
    assert names == [
        "root", "users-me", "users-id", "users-id-orders", "users-rest", "any-b", "any-any", "catch-all",
    ]
