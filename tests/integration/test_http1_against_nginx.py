"""The ingress HTTP/1.1 client against a real nginx: the upstream most gateways sit in front of.

nginx is installed by ``make test`` (Debian package). Outside CI a machine without it skips these
tests; under ``CI=true`` a missing nginx is a failure, never a silent skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import missing_service

from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Upstream

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
TIMEOUTS = Timeouts(connect_s=2.0, read_s=5.0, total_s=10.0)
BIG = bytes(range(256)) * 8192  # 2 MiB

CONF = """
worker_processes 1;
user root;  # the test runs as root and its tmp_path is private (0700)
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 10000;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/www;
    location = /json {{ default_type application/json; return 200 '{{"ok":true}}'; }}
    location = /empty {{ return 204; }}
    location = /upload {{ client_max_body_size 10m; client_body_buffer_size 10m;
                          default_type text/plain; return 200 'got it'; }}
    location /files/ {{ etag on; }}
    location = /v1/chat/completions {{ default_type text/event-stream; return 200 "{chat_stream}"; }}
  }}
}}
"""
# What ``/v1/chat/completions`` answers (the LLM soak's provider): an OpenAI chat completion
# streamed as server-sent events, its usage in the last chunk (``stream_options.include_usage``).
CHAT_STREAM_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def _chunk(choices: list[dict[str, object]], **extra: object) -> str:
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                       "choices": choices, **extra}, separators=(",", ":"))


CHAT_STREAM = "".join(f"data: {event}\n\n" for event in (
    _chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]),
    _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    _chunk([], usage=CHAT_STREAM_USAGE),
    "[DONE]",
))


@dataclass
class Nginx:
    port: int
    dir: Path

    async def access_lines(self) -> list[str]:
        log = self.dir / "access.log"
        return await asyncio.to_thread(lambda: log.read_text().splitlines() if log.exists() else [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _prepare(directory: Path) -> int:
    """Write the site and the config (blocking file work, run off the loop); return the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    (directory / "www" / "files").mkdir(parents=True)
    (directory / "www" / "files" / "big.bin").write_bytes(BIG)
    stream = CHAT_STREAM.replace("\\", "\\\\").replace('"', '\\"')  # an nginx double-quoted string
    (directory / "nginx.conf").write_text(CONF.format(dir=directory, port=port, chat_stream=stream))
    return port


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[Nginx]:
    if NGINX is None:
        missing_service("nginx is not installed (make test installs it)")
    port = await asyncio.to_thread(_prepare, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if proc.returncode is not None:
                        raise RuntimeError("nginx exited") from None
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield Nginx(port, tmp_path)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def call(up: Http1Upstream, method: str, path: str, *, headers: list[tuple[bytes, bytes]] | None = None,
               body: bytes | AsyncIterator[bytes] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    resp = await up.send(UpstreamRequest(method, path, [(b"host", b"nginx"), *(headers or [])], body),
                         timeouts=TIMEOUTS)
    try:
        data = b"".join([chunk async for chunk in resp.iter_body()])
        return resp.status, dict(resp.headers), data
    finally:
        await resp.aclose()


async def test_keep_alive_carries_every_kind_of_answer_on_one_connection(nginx: Nginx) -> None:
    up = Http1Upstream(nginx.url, pool_size=4)
    try:
        status, headers, body = await call(up, "GET", "/json")
        assert (status, body, headers[b"content-type"]) == (200, b'{"ok":true}', b"application/json")
        assert (await call(up, "HEAD", "/files/big.bin"))[::2] == (200, b"")
        assert (await call(up, "GET", "/empty"))[::2] == (204, b"")
        etag = (await call(up, "GET", "/files/big.bin"))[1][b"etag"]
        assert (await call(up, "GET", "/files/big.bin", headers=[(b"if-none-match", etag)]))[::2] == (304, b"")
        assert (await call(up, "GET", "/missing"))[0] == 404
        assert (await call(up, "GET", "/json"))[2] == b'{"ok":true}'
        assert up.pool.open_connections == 1  # every framing above left the connection reusable
        assert len(await nginx.access_lines()) == 7
    finally:
        await up.aclose()


async def test_a_large_file_streams_through_intact(nginx: Nginx) -> None:
    up = Http1Upstream(nginx.url, pool_size=2)
    try:
        resp = await up.send(UpstreamRequest("GET", "/files/big.bin", [(b"host", b"nginx")], None),
                             timeouts=TIMEOUTS)
        chunks = [chunk async for chunk in resp.iter_body()]
        await resp.aclose()
        assert len(chunks) > 1
        assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(BIG).digest()
    finally:
        await up.aclose()


async def test_request_bodies_reach_nginx_with_a_length_or_chunked(nginx: Nginx) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(BIG), 65536):
            yield BIG[i:i + 65536]

    up = Http1Upstream(nginx.url, pool_size=2)
    try:
        assert (await call(up, "POST", "/upload", body=BIG))[::2] == (200, b"got it")
        assert (await call(up, "POST", "/upload", body=parts()))[::2] == (200, b"got it")  # chunked
        sized = [(b"content-length", str(len(BIG)).encode())]
        assert (await call(up, "POST", "/upload", headers=sized, body=parts()))[::2] == (200, b"got it")
        assert (await call(up, "POST", "/upload"))[::2] == (200, b"got it")  # no body: Content-Length 0
        assert up.pool.open_connections == 1
        assert all(" 200 " in line for line in await nginx.access_lines())
    finally:
        await up.aclose()


async def test_concurrent_requests_share_a_bounded_pool(nginx: Nginx) -> None:
    up = Http1Upstream(nginx.url, pool_size=3)
    try:
        results = await asyncio.gather(*(call(up, "GET", "/json") for _ in range(60)))
        assert all(r[0] == 200 and r[2] == b'{"ok":true}' for r in results)
        assert 1 <= up.pool.open_connections <= 3
        assert len(await nginx.access_lines()) == 60
    finally:
        await up.aclose()
