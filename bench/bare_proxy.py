"""The floor: the thinnest Python reverse proxy that uses Portcullis's own upstream client.

Why it exists: it runs on the same server stack as the gateway (uvicorn, uvloop, httptools) and
forwards through the same pooled upstream client, but with no policies, no routing, no audit and
no metrics. Whatever the gateway costs beyond this is the price of its features (G1 in the
results); whatever this costs beyond nginx is the price of Python.

Run: ``python -m bench.bare_proxy --port 8081 --upstream http://127.0.0.1:9000``.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Upstream as UpstreamClient

CLIENT_NAME = "portcullis.upstream.http1.Http1Upstream"

__all__ = ["CLIENT_NAME", "BareProxy", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 section 7.6.1 plus the de-facto ones; same set the gateway drops.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"http2-settings",
})
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}  # uvicorn adds its own Date
_TIMEOUTS = Timeouts(connect_s=2.0, read_s=30.0, total_s=60.0)


def _named_in_connection(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    names: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            names.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return frozenset(names)


def upstream_headers(raw: list[tuple[bytes, bytes]], host: bytes) -> list[tuple[bytes, bytes]]:
    """Request headers for the upstream, in the type ``UpstreamRequest.headers`` expects.

    Kept as one small function because that type has changed before (str pairs to byte pairs):
    if it changes again, only this function and ``response_headers`` change.
    """
    drop = _REQUEST_DROP | _named_in_connection(raw)
    out = [(k, v) for k, v in raw if k not in drop]
    out.append((b"host", host))
    return out


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones, as ASGI byte pairs."""
    drop = _RESPONSE_DROP | _named_in_connection(raw)
    return [(k, v) for k, v in raw if k not in drop]


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body or None


class BareProxy:
    """A raw ASGI app: every request goes to one upstream, answer streamed back unchanged."""

    def __init__(self, upstream_url: str, pool_size: int) -> None:
        parts = urlsplit(upstream_url)
        self._host = (parts.netloc or "").encode("latin-1")
        self._upstream = UpstreamClient(upstream_url, pool_size=pool_size, verify_tls=True, ca_file=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not proxied
            return
        path = scope.get("raw_path") or scope["path"].encode("latin-1")
        query: bytes = scope.get("query_string", b"")
        target = (path + (b"?" + query if query else b"")).decode("latin-1")
        body = await _read_body(receive)
        request = UpstreamRequest(scope["method"], target, upstream_headers(list(scope["headers"]), self._host), body)
        response = await self._upstream.send(request, timeouts=_TIMEOUTS)
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": response_headers(response.headers)})
            whole = response.complete_body()
            if whole is not None:
                await send({"type": "http.response.body", "body": whole})
                return
            async for chunk in response.iter_body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port of the backend")
    parser.add_argument("--pool-size", type=int, default=100)
    args = parser.parse_args(argv)
    app = BareProxy(args.upstream, args.pool_size)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", lifespan="off",
                access_log=False, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
