"""The ingress client's pool and timeouts, against real servers on 127.0.0.1.

What a gateway operator relies on: a bounded number of connections per backend, a request that
waits for a free one only as long as its connect timeout, every timeout reported as a 504-class
error in bounded time, the keep-alive race retried only when that is safe, and back-pressure
that never buffers a whole large body in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from portcullis.errors import UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Upstream
from portcullis.upstream.http1.connection import HIGH_WATER

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Backend:
    """A raw HTTP/1.1 server whose behaviour per request is a coroutine the test supplies."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    mode: str = "answer"  # answer | hold | silent | stall_body | close_idle_on_next
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if self.mode == "close_idle_on_next" and served > 0:
                    return  # the keep-alive race: closed without answering the reused connection
                self.requests.append(head)
                served += 1
                if self.mode == "silent":
                    await self.release.wait()
                    return
                if self.mode == "hold":
                    await self.release.wait()
                if self.mode == "stall_body":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                    await writer.drain()
                    await self.release.wait()
                    return
                writer.write(OK)
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


def get(path: str = "/", method: str = "GET", body: bytes | None = None) -> UpstreamRequest:
    return UpstreamRequest(method, path, [(b"host", b"backend")], body)


async def fetch(up: Http1Upstream, timeouts: Timeouts, request: UpstreamRequest | None = None) -> bytes:
    resp = await up.send(request or get(), timeouts=timeouts)
    try:
        return b"".join([c async for c in resp.iter_body()])
    finally:
        await resp.aclose()


TIMEOUTS = Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0)


async def test_sequential_requests_reuse_one_connection(backend: Backend) -> None:
    up = Http1Upstream(backend.url, pool_size=4)
    try:
        for _ in range(20):
            assert await fetch(up, TIMEOUTS) == b"ok"
        assert backend.connections == 1
        assert (up.pool.open_connections, up.pool.idle_connections) == (1, 1)
    finally:
        await up.aclose()


async def test_the_pool_never_opens_more_than_its_size_and_queued_requests_all_complete(backend: Backend) -> None:
    backend.mode = "hold"
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        calls = [asyncio.create_task(fetch(up, TIMEOUTS)) for _ in range(10)]
        async with asyncio.timeout(2):
            while len(backend.requests) < 2:
                await asyncio.sleep(0.005)
        assert backend.most_open == 2 and up.pool.open_connections == 2
        backend.release.set()
        assert await asyncio.gather(*calls) == [b"ok"] * 10
        assert backend.most_open == 2
    finally:
        await up.aclose()


async def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(backend: Backend) -> None:
    backend.mode = "hold"
    up = Http1Upstream(backend.url, pool_size=1)
    try:
        busy = asyncio.create_task(fetch(up, TIMEOUTS))
        async with asyncio.timeout(2):
            while not backend.requests:
                await asyncio.sleep(0.005)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await fetch(up, Timeouts(connect_s=0.1, read_s=2.0, total_s=5.0))
        assert info.value.reason == "upstream_pool_timeout"
        assert time.monotonic() - started < 1.5
        backend.release.set()
        assert await busy == b"ok"
        assert await fetch(up, TIMEOUTS) == b"ok"  # the pool recovered its slot
    finally:
        await up.aclose()


async def test_a_silent_backend_times_out_on_the_read_timeout(backend: Backend) -> None:
    backend.mode = "silent"
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await fetch(up, Timeouts(connect_s=1.0, read_s=0.2, total_s=5.0))
        assert time.monotonic() - started < 1.5
        assert up.pool.open_connections == 0  # a timed-out connection is never reused
    finally:
        await up.aclose()


async def test_the_total_timeout_wins_when_it_is_shorter(backend: Backend) -> None:
    backend.mode = "silent"
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await fetch(up, Timeouts(connect_s=1.0, read_s=10.0, total_s=0.2))
        assert time.monotonic() - started < 1.5
    finally:
        await up.aclose()


async def test_a_body_that_stalls_half_way_times_out_while_streaming(backend: Backend) -> None:
    backend.mode = "stall_body"
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        resp = await up.send(get(), timeouts=Timeouts(connect_s=1.0, read_s=0.2, total_s=5.0))
        with pytest.raises(UpstreamTimeout):
            _ = [c async for c in resp.iter_body()]
        await resp.aclose()
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()


async def test_nothing_listening_is_unavailable_at_once() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    up = Http1Upstream(f"http://127.0.0.1:{port}", pool_size=2)
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up, TIMEOUTS)
        assert info.value.reason == "upstream_unreachable"
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()


async def test_the_keep_alive_race_is_retried_once_for_an_idempotent_request(backend: Backend) -> None:
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        assert await fetch(up, TIMEOUTS) == b"ok"
        backend.mode = "close_idle_on_next"  # the reused connection is closed unanswered
        assert await fetch(up, TIMEOUTS) == b"ok"  # retried on a new connection
        assert backend.connections == 2
    finally:
        await up.aclose()


async def test_the_keep_alive_race_is_never_retried_for_a_post(backend: Backend) -> None:
    up = Http1Upstream(backend.url, pool_size=2)
    try:
        assert await fetch(up, TIMEOUTS) == b"ok"
        backend.mode = "close_idle_on_next"
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up, TIMEOUTS, get(method="POST", body=b"{}"))
        assert info.value.reason == "upstream_closed"
        assert len(backend.requests) == 1  # the POST was not sent a second time
    finally:
        await up.aclose()


async def test_a_large_response_is_not_buffered_beyond_the_high_water_mark(backend: Backend) -> None:
    size = 16 * HIGH_WATER
    payload = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    up = Http1Upstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", pool_size=1)
    try:
        resp = await up.send(get(), timeouts=TIMEOUTS)
        conn = resp._conn  # white-box: the buffered byte count is the property under test
        received = 0
        async for chunk in resp.iter_body():
            received += len(chunk)
            await asyncio.sleep(0.001)  # a slow consumer: let the socket fill up
            assert conn._buffered <= HIGH_WATER + 256 * 1024  # at most one read past the mark
        await resp.aclose()
        assert received == size
    finally:
        await up.aclose()
        server.close()
        await server.wait_closed()


async def test_a_streamed_request_body_waits_for_a_slow_backend_instead_of_buffering(backend: Backend) -> None:
    # The backend reads nothing until released: the writer must pause on the full transport.
    gate = asyncio.Event()
    received = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        await gate.wait()
        while received < 8 * 1024 * 1024:
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)
        writer.write(OK)
        await writer.drain()
        writer.close()

    produced = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(128):
            produced += 65536
            yield b"y" * 65536

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    up = Http1Upstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", pool_size=1)
    try:
        request = UpstreamRequest("POST", "/", [(b"host", b"b"), (b"content-length", b"8388608")], body())
        sending = asyncio.create_task(fetch(up, TIMEOUTS, request))
        async with asyncio.timeout(2):
            while produced < 65536:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        assert produced < 8 * 1024 * 1024  # paused on back-pressure, not read whole into memory
        gate.set()
        assert await sending == b"ok"
        assert received == 8 * 1024 * 1024
    finally:
        await up.aclose()
        server.close()
        await server.wait_closed()
