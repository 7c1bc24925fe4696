"""Properties of the canonicalizer, and the check that the gateway routes what a backend receives.

The last test is the one that matters: for any accepted target, a standard ASGI backend (Starlette,
reached through httpx's in-process ASGI transport) given the canonical path decodes it to
``unquote(canonical)`` and picks the same route, with the same parameters, as our router does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portcullis.config.model import RouteConfig
from portcullis.errors import MalformedRequest
from portcullis.http.target import canonicalize_path
from portcullis.ingress.router import RouteMatch, Router

SETTINGS = settings(max_examples=300, deadline=None)

def _escape(byte: int, upper: bool) -> str:
    text = f"%{byte:02x}"
    return text.upper() if upper else text


_ascii_escapes = st.builds(_escape, st.integers(0x20, 0x7E), st.booleans())
_any_byte_escapes = st.builds(_escape, st.integers(0, 0xFF), st.booleans())
_utf8_escapes = st.characters(min_codepoint=0xA0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]).map(
    lambda char: "".join(f"%{b:02X}" for b in char.encode("utf-8"))
)
_pieces = st.one_of(
    st.sampled_from(["a", "b", "c", "x", "Z", "~", "-", "_", "1"]),
    st.sampled_from([".", "..", ".", "%2e", "%2E"]),
    _ascii_escapes,
    _utf8_escapes,
    _any_byte_escapes,
    st.sampled_from(["{", "|", "!", "$", "'", "(", "*", "+", ",", "=", ":", "@", "%", ";", "\\", " "]),
)
# Whole segments that hit the literal templates below, so every route gets exercised.
_segments = st.one_of(st.sampled_from(["a", "b", "c", "", ".", ".."]), st.lists(_pieces, max_size=4).map("".join))
paths = st.lists(_segments, min_size=1, max_size=5).map(lambda segs: ("/" + "/".join(segs)).encode("ascii"))


def _accepted(raw: bytes) -> str | None:
    try:
        return canonicalize_path(raw)
    except MalformedRequest:
        return None


@SETTINGS
@given(raw=st.one_of(paths, st.binary(max_size=40).map(lambda b: b"/" + b)))
def test_any_path_is_either_canonicalized_or_refused_as_malformed(raw: bytes) -> None:
    _accepted(raw)


@SETTINGS
@given(raw=paths)
def test_canonicalization_is_idempotent(raw: bytes) -> None:
    canonical = _accepted(raw)
    if canonical is not None:
        assert canonicalize_path(canonical.encode("ascii")) == canonical


@SETTINGS
@given(raw=paths)
def test_canonical_path_has_no_ambiguous_parts(raw: bytes) -> None:
    canonical = _accepted(raw)
    if canonical is None:
        return
    assert canonical.startswith("/")
    assert all(0x20 < ord(char) < 0x7F for char in canonical)
    for forbidden in ("//", "/./", "/../", ";", "\\", "%2F", "%5C", "%3B", "%2E", "%7E"):
        assert forbidden not in canonical.upper()
    assert not canonical.endswith(("/.", "/.."))
    for escape in canonical.split("%")[1:]:
        assert re.match("[0-9A-F]{2}", escape)
    decoded = unquote(canonical, errors="strict")
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in decoded)


@SETTINGS
@given(raw=paths)
def test_decoding_the_canonical_path_twice_changes_nothing(raw: bytes) -> None:
    # A backend that decodes twice (CVE-2001-0333) must still see what the gateway routed.
    canonical = _accepted(raw)
    if canonical is not None:
        assert unquote(unquote(canonical)) == unquote(canonical)


@SETTINGS
@given(raw=paths)
def test_canonicalization_keeps_the_meaning_of_a_path_without_dot_segments(raw: bytes) -> None:
    canonical = _accepted(raw)
    decoded = unquote(raw.decode("ascii"))
    segments = decoded.split("/")[1:]
    if canonical is None or "//" in decoded or any(s in (".", "..") for s in segments):
        return
    assert unquote(canonical) == decoded


class _SegmentsConvertor(Convertor[str]):
    """Starlette's ``path`` convertor matches an empty rest; ours needs one or more segments."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segments", _SegmentsConvertor())

# (name, template, methods). Hand-listed most specific first, which is Starlette's order (first
# match wins). Our router is given the same routes in a shuffled config order.
TABLE: list[tuple[str, str, list[str] | None]] = [
    ("root", "/", None),
    ("ab", "/a/b", ["POST"]),
    ("ab-slash", "/a/b/", None),
    ("a-x", "/a/{x}", None),
    ("a-x-c", "/a/{x}/c", ["GET"]),
    ("a-rest", "/a/{rest:path}", None),
    ("x-b", "/{x}/b", None),
    ("x-y", "/{x}/{y}", ["GET", "POST"]),
    ("rest", "/{rest:path}", ["GET"]),
]


# Starlette's default for a function endpoint is GET only; "any method" must be spelled out.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        seen = {"route": name, "params": request.path_params, "path": request.scope["path"]}
        return Response(headers={"x-seen": json.dumps(seen, ensure_ascii=True)})

    return endpoint


BACKEND = Starlette(
    routes=[
        Route(template.replace(":path}", ":segments}"), _endpoint(name), methods=methods or ANY_METHOD)
        for name, template, methods in TABLE
    ]
)
BACKEND.router.redirect_slashes = False
CONFIG_ROUTES = [
    RouteConfig(name=name, path=template, methods=methods or [], upstream="app") for name, template, methods in TABLE
]


def _ours(router: Router, method: str, path: str) -> tuple[int, str | None, dict[str, str]]:
    result = router.match(None, method, path)
    if isinstance(result, RouteMatch):
        return 200, result.route.name, dict(result.params)
    return (404 if result.kind == "not_found" else 405), None, {}


def test_gateway_routes_exactly_what_starlette_receives() -> None:
    with asyncio.Runner() as runner:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=BACKEND), base_url="http://backend.test")

        @SETTINGS
        @given(raw=paths, method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
               order=st.permutations(CONFIG_ROUTES))
        def check(raw: bytes, method: str, order: Sequence[RouteConfig]) -> None:
            canonical = _accepted(raw)
            if canonical is None:
                return
            response = runner.run(client.request(method, canonical))
            status, name, params = _ours(Router(order), method, canonical)
            assert response.status_code == status
            if status == 200:
                seen = json.loads(response.headers["x-seen"])
                assert seen["path"] == unquote(canonical)
                assert (seen["route"], seen["params"]) == (name, params)

        try:
            check()
        finally:
            runner.run(client.aclose())
