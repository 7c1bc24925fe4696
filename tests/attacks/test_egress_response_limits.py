"""A third-party API's answer is bounded: wire size, decoded size (decompression bombs), media type.

Sources: CWE-409 (improper handling of highly compressed data: zip/gzip bombs), CWE-400
(uncontrolled resource consumption), OWASP API10:2023 (unsafe consumption of APIs). The "provider"
is a real HTTP server on 127.0.0.1; bodies are read through aiohttp as the egress client does.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web

from portcullis.egress.response_guard import (
    DecodedSizeMeter,
    ResponseLimits,
    ResponseRefused,
    check_content_type,
    read_limited,
)
from portcullis.testing import serve_app

BOMB = gzip.compress(b"\0" * (20 * 1024 * 1024), compresslevel=9)  # 20 MiB of zeros in ~20 KiB
JSON = b'{"items": [1, 2, 3]}' * 100


def respond(body: bytes, **headers: str) -> Callable[[web.Request], web.StreamResponse]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 16384):
            await resp.write(body[i:i + 16384])
        return resp
    return handler  # type: ignore[return-value]


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/json", respond(JSON, **{"Content-Type": "application/json"}))
    app.router.add_get("/gzip-json", respond(gzip.compress(JSON),
                                             **{"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    app.router.add_get("/deflate-json", respond(zlib.compress(JSON),
                                                **{"Content-Type": "application/json", "Content-Encoding": "deflate"}))
    app.router.add_get("/bomb", respond(BOMB, **{"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    app.router.add_get("/huge", respond(b"x" * (3 * 1024 * 1024), **{"Content-Type": "application/json"}))
    app.router.add_get("/html", respond(b"<html></html>", **{"Content-Type": "text/html"}))
    app.router.add_get("/brotli", respond(b"\x0b\x02\x80hello\x03", **{"Content-Encoding": "br"}))
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}"


async def fetch(base: str, path: str, limits: ResponseLimits) -> bytes:
    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(base + path) as r:
        check_content_type(r.headers.get("Content-Type"), limits.content_types)
        return await read_limited(r.content.iter_chunked(16384), limits, encoding=r.headers.get("Content-Encoding"))


LIMITS = ResponseLimits(max_bytes=1024 * 1024, max_decoded_bytes=2 * 1024 * 1024, content_types=("application/json",))


@pytest.mark.parametrize(("path", "reason"), [
    pytest.param("/bomb", "response_decoded_too_large", id="CWE-409-gzip-bomb"),
    pytest.param("/huge", "response_too_large", id="CWE-400-oversized-body"),
    pytest.param("/html", "response_content_type", id="API10-unexpected-media-type"),
])
async def test_a_hostile_answer_is_refused(provider: str, path: str, reason: str) -> None:
    with pytest.raises(ResponseRefused) as info:
        await fetch(provider, path, LIMITS)
    assert info.value.reason == reason


@pytest.mark.parametrize("path", ["/json", "/gzip-json", "/deflate-json"])
async def test_ordinary_answers_pass_as_sent(provider: str, path: str) -> None:
    body = await fetch(provider, path, LIMITS)
    assert (zlib.decompress(body, 47) if path != "/json" else body) == JSON


async def test_an_encoding_that_cannot_be_measured_is_refused_only_when_a_decoded_limit_is_set(provider: str) -> None:
    with pytest.raises(ResponseRefused) as info:
        await fetch(provider, "/brotli", ResponseLimits())
    assert info.value.reason == "response_encoding_unmeasurable"
    assert await fetch(provider, "/brotli", ResponseLimits(max_decoded_bytes=None)) == b"\x0b\x02\x80hello\x03"


def test_the_bomb_is_stopped_after_bounded_work() -> None:
    meter = DecodedSizeMeter("gzip", limit=1024 * 1024)

    def feed_all() -> None:
        for i in range(0, len(BOMB), 4096):
            meter.feed(BOMB[i:i + 4096])

    with pytest.raises(ResponseRefused):
        feed_all()
    assert meter.decoded <= 1024 * 1024 + 64 * 1024  # one inflate window past the limit, no more


def test_corrupt_compressed_data_is_refused() -> None:
    with pytest.raises(ResponseRefused) as info:
        DecodedSizeMeter("gzip", limit=10).feed(b"\x1f\x8b\x08\x00garbage-that-is-not-deflate")
    assert info.value.reason == "response_encoding_corrupt"


@pytest.mark.parametrize(("value", "ok"), [
    ("application/json", True), ("application/json; charset=utf-8", True), ("Application/JSON", True),
    ("application/jsonp", False), ("text/html", False), (None, False), ("", False),
])
def test_media_types_are_compared_without_parameters(value: str | None, ok: bool) -> None:
    if ok:
        check_content_type(value, ("application/json",))
    else:
        with pytest.raises(ResponseRefused):
            check_content_type(value, ("application/json",))
