"""Soak: the real gateway at saturation keeps flat memory and writes every request's audit record.

Why: a 10-minute soak at 7,300 requests/s once showed the SQLite sink taking 2,000 records/s while
the rest queued in memory (RSS +3.6 MiB/s, 216 MiB/min) until p99 and ``/metrics`` fell over. This
test runs ``portcullis serve`` (one worker; API-key auth, a rate limit that never triggers, audit to
JSONL and SQLite) in front of nginx, drives it with wrk at saturation for ``PORTCULLIS_SOAK_SECONDS``
(default 60), samples the gateway's RSS from ``/proc/<pid>/status`` every few seconds and asserts:

- after a warm-up, RSS grows by less than ``GROWTH_BOUND_MIB_PER_MIN`` (20 MiB/min, the Theil-Sen
  slope over the samples): a tenth of the old leak, and well above allocator noise;
- after a graceful stop, records in the JSONL file == rows in SQLite (distinct ids) == requests the
  upstream answered (nginx's access log), which lies between what wrk counted and that plus the
  requests wrk had in flight when its timer stopped it; no spill file is left.

Everything listens on 127.0.0.1; wrk and nginx run bounded and are stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import statistics
import sys
from pathlib import Path

import httpx
import pytest
from tests.cluster import PEPPER, AdminAuth, start
from tests.conftest import missing_service
from tests.integration.test_http1_against_nginx import NGINX, Nginx, _prepare

SOAK_S = int(os.environ.get("PORTCULLIS_SOAK_SECONDS", "60"))
WARMUP_S = 15
SAMPLE_EVERY_S = 2
CONNECTIONS = 50
GROWTH_BOUND_MIB_PER_MIN = 20.0
WRK = "/usr/bin/wrk"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]

_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def gateway_config(upstream: str) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0, workers: 1, graceful_timeout: 10s}}
admin: {{host: 127.0.0.1, port: 0}}
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///gateway.db"}}
audit: {{file: audit.jsonl, max_file_bytes: 8GiB, to_store: true}}
upstreams:
  api: {{url: "{upstream}"}}
routes:
  - name: soak
    path: "/json"
    upstream: api
    auth: {{api_key: {{}}}}
    rate_limits: [{{name: never, key: consumer, rates: ["100000000/second"]}}]
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Theil-Sen slope of (seconds, MiB), in MiB per minute: the median of the slopes between every
    pair of samples, so a transient batch in hand (a spike of 10-20 MiB) does not read as growth."""
    slopes = sorted(
        (m2 - m1) / (t2 - t1) for i, (t1, m1) in enumerate(samples) for t2, m2 in samples[i + 1:] if t2 > t1
    )
    return statistics.median(slopes) * 60


def count_lines(path: Path) -> int:
    """Request records in a JSONL file: the operator's own acts are security events, and the chain's
    checkpoint lines (which name their chain's class) are not records at all."""
    count = 0
    with path.open("rb") as f:
        for line in f:
            count += b'"class":"request"' in line and b'"kind":"checkpoint"' not in line
    return count


def sqlite_counts(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM audit"
                                     " WHERE json_extract(record, '$.class') = 'request'").fetchone()
    return int(total), int(distinct)


async def run_nginx(tmp: Path) -> tuple[asyncio.subprocess.Process, Nginx]:
    assert NGINX is not None
    port = await asyncio.to_thread(_prepare, tmp)
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return proc, Nginx(port, tmp)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_saturated_gateway_keeps_flat_memory_and_audits_every_request_once(tmp_path: Path) -> None:
    if NGINX is None:
        missing_service("nginx is not installed (make test installs it)")
    if not await asyncio.to_thread(os.path.exists, WRK):
        missing_service("wrk is not installed (make test installs it)")
    upstream_dir, gateway_dir = tmp_path / "nginx", tmp_path / "gateway"
    await asyncio.to_thread(upstream_dir.mkdir)
    nginx_proc, nginx = await run_nginx(upstream_dir)
    try:
        served = await start(gateway_dir, gateway_config(nginx.url))
        try:
            async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
                created = await client.post(served.admin + "/keys", json={"consumer": "soak"})
                assert created.status_code == 201, created.text
                key = created.json()["key"]
                probe = await client.get(served.base + "/json", headers={"X-API-Key": key})
                assert probe.status_code == 200, probe.text

            wrk = await asyncio.create_subprocess_exec(
                WRK, "-t1", f"-c{CONNECTIONS}", f"-d{SOAK_S}s", "--timeout", "10s", "-H", f"X-API-Key: {key}",
                served.base + "/json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            samples: list[tuple[float, float]] = []
            loop = asyncio.get_running_loop()
            began = loop.time()
            report = asyncio.ensure_future(wrk.communicate())
            try:
                while not report.done():
                    samples.append((loop.time() - began, await asyncio.to_thread(rss_mib, served.proc.pid)))
                    await asyncio.wait([report], timeout=SAMPLE_EVERY_S)
                out = (await report)[0].decode()
            finally:
                await stop(wrk, signal.SIGKILL)
        finally:
            await stop(served.proc)
        assert served.proc.returncode == 0, "".join(served.output[-30:])
    finally:
        await stop(nginx_proc, signal.SIGQUIT)

    print(f"\nRSS of the gateway (MiB) every {SAMPLE_EVERY_S}s under wrk -c{CONNECTIONS} for {SOAK_S}s:")
    for t, mib in samples:
        print(f"  t={t:6.1f}s  rss={mib:7.1f} MiB")
    wrk_requests = int(_WRK_REQUESTS.search(out).group(1))  # type: ignore[union-attr]
    non_2xx = _WRK_NON2XX.search(out)
    audited = await asyncio.to_thread(count_lines, gateway_dir / "audit.jsonl")
    stored, distinct = await asyncio.to_thread(sqlite_counts, gateway_dir / "gateway.db")
    answered = len(await nginx.access_lines())
    settled = [s for s in samples if s[0] >= WARMUP_S]
    growth = slope_per_minute(settled)
    print(f"wrk: {wrk_requests} requests ({wrk_requests / SOAK_S:.0f}/s); upstream answered {answered};"
          f" JSONL {audited}; SQLite {stored} ({distinct} distinct); RSS slope after warm-up {growth:+.1f} MiB/min")
    print(out, file=sys.stderr)

    assert non_2xx is None, out
    assert len(settled) >= 5
    assert growth < GROWTH_BOUND_MIB_PER_MIN
    assert audited == stored == distinct == answered
    assert wrk_requests + 1 <= answered <= wrk_requests + 1 + CONNECTIONS  # + the probe; + wrk's in flight
    leftovers = [p.name for p in await asyncio.to_thread(lambda: list(gateway_dir.iterdir())) if "spill" in p.name]
    assert leftovers == []
