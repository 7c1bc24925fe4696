"""Soak: the egress door at saturation keeps flat memory and audits every call once.

Why: the door keeps more per-caller state than the front door (budget counters per execution,
workflow and user, the budget gauges' table, the breaker's window, the vault's cache, the
route origin's check, ``secret.read`` throttling, the send phase's pool), and a leak in any of
them shows only under sustained load. This runs ``portcullis serve`` (one worker) with the door in
front of nginx: API-key callers, every budget on (never spent), the provider key injected from the
vault, audit to JSONL and SQLite. wrk drives ``GET /egress/soak/json`` at saturation for
``PORTCULLIS_SOAK_SECONDS`` (default 60), rotating the call's execution id over 1,000 values (an
agent platform's many runs at once), while the gateway's RSS is sampled. It asserts:

- after a warm-up, RSS grows by less than ``GROWTH_BOUND_MIB_PER_MIN`` (the Theil-Sen slope);
- every call was answered 200, and after a graceful stop the call records in the JSONL file ==
  rows in SQLite (distinct ids) == requests the upstream answered;
- the vault reads are at most one ``secret.read`` event per execution a minute (not one per call).

The route's breaker keeps its default 60 s window, in buckets: when it held one entry per call, the
soak saw it as growth until the window was full (about 20 MiB at this rate). The flood of fresh
execution ids past the stores' caps is the unit tests' (entry counts, not RSS):
``tests/unit/stores/test_memory_egress_store_bounds.py``. Everything listens on 127.0.0.1; wrk and
nginx run bounded and are stopped by PID.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest
from tests.cluster import AdminAuth
from tests.soak_kit import (
    BIG_BUDGET,
    BIG_CALL_BUDGETS,
    CONNECTIONS,
    GROWTH_BOUND_MIB_PER_MIN,
    SOAK_S,
    count_lines,
    gateway_before_nginx,
    gateway_head,
    rotating_executions,
    soak,
    sqlite_counts,
)

from portcullis.vault import SECRET_KEY_ENV, generate_master_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]

EXECUTIONS = 1000
WARMUP_S = 25  # the door's pools, caches and counters fill in about 16 s here; the front door's in less
ROTATE = rotating_executions(EXECUTIONS)


def door_config(upstream: str) -> str:
    return gateway_head(upstream) + f"""routes:
  - {{name: unused, path: "/unused", upstream: api, auth: {{api_key: {{}}}}}}
egress:
  entry:
    auth: {{api_key: {{}}}}
    rate_limits: [{{name: never, key: consumer, rates: ["100000000/second"]}}]
{BIG_CALL_BUDGETS}    execution_cost: {BIG_BUDGET}
    user_cost_per_day: {BIG_BUDGET}
  routes:
    - name: soak
      url: "{upstream}"
      allow_http: true
      allow_networks: ["127.0.0.0/8"]
      headers: {{Authorization: "Bearer {{secret:soak_token}}"}}
      rate_limits: ["100000000/second"]
      cost: 0.001
"""


def secret_reads(path: Path) -> int:
    with path.open("rb") as f:
        return sum(b'"action":"secret.read"' in line for line in f)


async def test_a_saturated_egress_door_keeps_flat_memory_and_audits_every_call_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_KEY_ENV, generate_master_key())
    script = tmp_path / "rotate.lua"
    await asyncio.to_thread(script.write_text, ROTATE)
    async with gateway_before_nginx(tmp_path, door_config) as (served, nginx):
        async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
            stored = await client.put(served.admin + "/secrets/soak_token", json={"value": "sk-soak-provider"})
            assert stored.status_code == 200, stored.text
            created = await client.post(served.admin + "/keys", json={"consumer": "agent"})
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            headers = {"X-API-Key": key, "X-Workflow-Id": "soak", "X-Execution-Id": "probe"}
            probe = await client.get(served.base + "/egress/soak/json", headers=headers)
            assert probe.status_code == 200, probe.text
        run = await soak(served.base + "/egress/soak/json", served.proc.pid, "-s", str(script),
                         "-H", f"X-API-Key: {key}", "-H", "X-Workflow-Id: soak", warmup_s=WARMUP_S)

    gateway_dir = tmp_path / "gateway"
    audited = await asyncio.to_thread(count_lines, gateway_dir / "audit.jsonl")
    rows, distinct = await asyncio.to_thread(sqlite_counts, gateway_dir / "gateway.db")
    answered = len(await nginx.access_lines())
    reads = await asyncio.to_thread(secret_reads, gateway_dir / "audit.jsonl")
    run.report(f"wrk: {run.requests} calls ({run.requests / SOAK_S:.0f}/s); upstream answered {answered};"
               f" JSONL {audited}; SQLite {rows} ({distinct} distinct); secret.read events {reads}")

    assert not run.non_2xx, run.output
    assert len(run.settled()) >= 5
    assert run.growth() < GROWTH_BOUND_MIB_PER_MIN
    assert audited == rows == distinct == answered
    assert run.requests + 1 <= answered <= run.requests + 1 + CONNECTIONS  # + the probe; + wrk's in flight
    assert 1 <= reads <= (EXECUTIONS + 1) * (math.ceil(SOAK_S / 60) + 1)  # one per execution a minute at most
