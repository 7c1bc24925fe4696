"""A tiny demo backend for ``make run``: echoes what the gateway forwarded, as JSON.

Why: the quickstart should show, without any other service, what a backend receives from
Portcullis (the canonical path, the consumer identity headers, the request id). It is a demo, not
part of the gateway, and it trusts its caller completely — never expose it.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

__all__ = ["app", "main"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    seen = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = orjson.dumps({
        "service": "demo-backend",
        "method": scope["method"],
        "path": scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"],
        "query": scope.get("query_string", b"").decode("latin-1"),
        "consumer": seen.get("x-consumer-id"),
        "scopes": seen.get("x-consumer-scopes"),
        "request_id": seen.get("x-request-id"),
        "body_bytes": size,
    }, option=orjson.OPT_INDENT_2) + b"\n"
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"server", b"demo-backend/1.0"), (b"x-powered-by", b"demo"),
    ]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="Portcullis demo backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
