"""Soak: the proxy door under sustained load keeps flat memory and audits every call and tunnel once.

Why: the proxy door holds more per-connection state than the HTTP door (a tunnel's two transports,
its copy tasks and timers, the requests read inside a tunnel, the door's connection counts per
address, a tunnel's record kept until it ends), and a leak in any of it shows only when tunnels
come and go by the thousand. This runs ``portcullis serve`` (one worker) with ``egress.proxy`` in
front of nginx, and for ``PORTCULLIS_SOAK_SECONDS`` (default 60), at once:

- wrk sends absolute-form requests (``GET http://<nginx>/json``, what ``HTTP_PROXY`` makes of a
  plain-http URL) at saturation, each one an egress call on the ``plain`` route;
- tunnel workers open ``CONNECT`` tunnels back to back, half to an ``https`` route (spliced: the
  door copies bytes it never reads, here to a local server that answers and closes) and half to
  the ``http`` route (read: the door reads the plain request inside and makes it an egress call),
  one request per tunnel, each tunnel under one of ``EXECUTIONS`` execution ids.

It asserts, while the gateway's RSS is sampled:

- after a warm-up, RSS grows by less than ``GROWTH_BOUND_MIB_PER_MIN`` (the Theil-Sen slope);
- every call and every tunnel was answered 200;
- after a graceful stop: one ``CONNECT`` record per tunnel (``allowed``, with its mode), one call
  record per absolute-form request and per request read inside a tunnel, the JSONL file == the
  SQLite rows (distinct ids), and nginx answered exactly the calls recorded.

Everything listens on 127.0.0.1; wrk and nginx run bounded and are stopped by PID.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.cluster import AdminAuth
from tests.soak_kit import (
    BIG_CALL_BUDGETS,
    CONNECTIONS,
    GROWTH_BOUND_MIB_PER_MIN,
    SOAK_S,
    gateway_before_nginx,
    gateway_head,
    soak,
    sqlite_counts,
)

from portcullis.stores.audit_rows import is_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]

EXECUTIONS = 200
TUNNEL_WORKERS = 8
WARMUP_S = 25
PROXY = re.compile(r"\(proxy http://127\.0\.0\.1:(\d+)\)")
SPLICED_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nspliced"


def door_config(splice_port: int) -> Callable[[str], str]:
    def config(upstream: str) -> str:
        return gateway_head(upstream) + f"""routes:
  - {{name: unused, path: "/unused", upstream: api, auth: none}}
egress:
  entry: {{enabled: false}}
{BIG_CALL_BUDGETS}  routes:
    - name: plain
      url: "{upstream}"
      allow_http: true
      allow_networks: ["127.0.0.0/8"]
      rate_limits: ["100000000/second"]
    - name: spliced
      url: "https://127.0.0.1:{splice_port}"
      allow_networks: ["127.0.0.0/8"]
      rate_limits: ["100000000/second"]
  proxy: {{listen: "127.0.0.1:0"}}
"""
    return config


def basic(key: str, execution: str) -> str:
    return "Basic " + base64.b64encode(f"wf=soak;ex={execution}:{key}".encode()).decode()


def absolute_form_script(path: Path, target: str, host: str, authorization: str) -> Path:
    path.write_text(f'wrk.path = "{target}"\nwrk.headers["Host"] = "{host}"\n'
                    f'wrk.headers["Proxy-Authorization"] = "{authorization}"\n', encoding="utf-8")
    return path


async def spliced_upstream() -> asyncio.Server:
    """What a spliced tunnel reaches: reads one request head, answers and closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(SPLICED_ANSWER)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def one_tunnel(proxy_port: int, target: str, inner: bytes, authorization: str) -> bytes:
    """CONNECT ``target``, send ``inner`` through the tunnel, read until the door closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        async with asyncio.timeout(10):
            writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                         f"Proxy-Authorization: {authorization}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return head
            writer.write(inner)
            return await reader.read()  # the inner answer, then the close
    finally:
        writer.close()


async def tunnel_worker(
    worker: int, proxy_port: int, nginx_port: int, splice_port: int, key: str, stop: asyncio.Event,
    done: Counter[str],
) -> None:
    n = worker
    while not stop.is_set():
        n += TUNNEL_WORKERS
        authorization = basic(key, f"run-{n % EXECUTIONS}")
        if n % 2:
            answer = await one_tunnel(proxy_port, f"127.0.0.1:{splice_port}", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                      authorization)
            done["splice" if answer == SPLICED_ANSWER else "failed"] += 1
        else:
            host = f"127.0.0.1:{nginx_port}"
            answer = await one_tunnel(proxy_port, host, f"GET /json HTTP/1.1\r\nHost: {host}\r\n"
                                      "Connection: close\r\n\r\n".encode(), authorization)
            done["read" if answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"ok":true}') else "failed"] += 1


def proxy_records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        rows = [orjson.loads(line) for line in f if b'"door":"proxy"' in line]
    return [r for r in rows if not is_checkpoint(r)]


async def test_a_proxy_door_under_sustained_calls_and_tunnels_keeps_flat_memory_and_audits_each_once(
    tmp_path: Path,
) -> None:
    server = await spliced_upstream()
    splice_port = server.sockets[0].getsockname()[1]
    done: Counter[str] = Counter()
    try:
        async with gateway_before_nginx(tmp_path, door_config(splice_port)) as (served, nginx):
            match = PROXY.search("".join(served.output))
            assert match is not None, served.output
            proxy_port = int(match.group(1))
            async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
                created = await client.post(served.admin + "/keys", json={"consumer": "agent"})
                assert created.status_code == 201, created.text
                key = created.json()["key"]
            script = await asyncio.to_thread(absolute_form_script, tmp_path / "absolute.lua", f"{nginx.url}/json",
                                             f"127.0.0.1:{nginx.port}", basic(key, "wrk"))
            stop = asyncio.Event()
            workers = [asyncio.create_task(tunnel_worker(i, proxy_port, nginx.port, splice_port, key, stop, done))
                       for i in range(TUNNEL_WORKERS)]
            try:
                run = await soak(f"http://127.0.0.1:{proxy_port}/", served.proc.pid, "-s", str(script),
                                 warmup_s=WARMUP_S)
            finally:
                stop.set()
                await asyncio.gather(*workers)
    finally:
        server.close()
        await server.wait_closed()

    gateway_dir = tmp_path / "gateway"
    records = await asyncio.to_thread(proxy_records, gateway_dir / "audit.jsonl")
    rows, distinct = await asyncio.to_thread(sqlite_counts, gateway_dir / "gateway.db")
    answered = len(await nginx.access_lines())
    tunnels = Counter(r["egress"]["mode"] for r in records if r["method"] == "CONNECT")
    calls = Counter(r["egress"].get("tunnel", "absolute") for r in records if r["method"] != "CONNECT")
    decisions = Counter(r["decision"] for r in records)
    run.report(f"wrk: {run.requests} absolute-form calls ({run.requests / SOAK_S:.0f}/s); tunnels {dict(done)};"
               f" records: tunnels {dict(tunnels)}, calls {dict(calls)}; SQLite {rows} ({distinct} distinct);"
               f" upstream answered {answered}")

    assert not run.non_2xx, run.output
    assert done["failed"] == 0 and done["splice"] > 0 and done["read"] > 0, done
    assert len(run.settled()) >= 5
    assert run.growth() < GROWTH_BOUND_MIB_PER_MIN
    assert set(decisions) == {"allowed"}, decisions
    assert tunnels == {"splice": done["splice"], "read": done["read"]}
    assert calls["read"] == done["read"]
    assert run.requests <= calls["absolute"] <= run.requests + CONNECTIONS  # + wrk's in flight at its end
    assert len(records) == rows == distinct
    assert answered == calls["absolute"] + calls["read"]
