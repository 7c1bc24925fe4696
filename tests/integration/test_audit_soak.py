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
from pathlib import Path

import httpx
import pytest
from tests.cluster import AdminAuth
from tests.soak_kit import (
    CONNECTIONS,
    GROWTH_BOUND_MIB_PER_MIN,
    SOAK_S,
    count_lines,
    gateway_before_nginx,
    gateway_head,
    soak,
    sqlite_counts,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]


def gateway_config(upstream: str) -> str:
    return gateway_head(upstream) + """routes:
  - name: soak
    path: "/json"
    upstream: api
    auth: {api_key: {}}
    rate_limits: [{name: never, key: consumer, rates: ["100000000/second"]}]
"""


async def test_a_saturated_gateway_keeps_flat_memory_and_audits_every_request_once(tmp_path: Path) -> None:
    async with gateway_before_nginx(tmp_path, gateway_config) as (served, nginx):
        async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
            created = await client.post(served.admin + "/keys", json={"consumer": "soak"})
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            probe = await client.get(served.base + "/json", headers={"X-API-Key": key})
            assert probe.status_code == 200, probe.text
        run = await soak(served.base + "/json", served.proc.pid, "-H", f"X-API-Key: {key}")

    gateway_dir = tmp_path / "gateway"
    audited = await asyncio.to_thread(count_lines, gateway_dir / "audit.jsonl")
    stored, distinct = await asyncio.to_thread(sqlite_counts, gateway_dir / "gateway.db")
    answered = len(await nginx.access_lines())
    run.report(f"wrk: {run.requests} requests ({run.requests / SOAK_S:.0f}/s); upstream answered {answered};"
               f" JSONL {audited}; SQLite {stored} ({distinct} distinct)")

    assert not run.non_2xx, run.output
    assert len(run.settled()) >= 5
    assert run.growth() < GROWTH_BOUND_MIB_PER_MIN
    assert audited == stored == distinct == answered
    assert run.requests + 1 <= answered <= run.requests + 1 + CONNECTIONS  # + the probe; + wrk's in flight
    leftovers = [p.name for p in await asyncio.to_thread(lambda: list(gateway_dir.iterdir())) if "spill" in p.name]
    assert leftovers == []
