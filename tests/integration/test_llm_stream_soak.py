"""Soak: streamed LLM calls through the egress door, reserved in Redis, keep flat memory and never
leak a reservation.

Why: every streamed call holds a reservation from before it is sent until its stream is settled
(ended, broken, or its client gone), and the stream's relay, usage parser and settlement live as
long as the stream. A reservation that is never settled does not crash anything: it silently
shrinks every budget it was held on until calls are refused, which shows only after hours of
traffic. This runs ``portcullis serve`` (one worker, reservations in the machine's Redis under a
fresh prefix) with an LLM route in front of nginx, which answers every chat completion as an
OpenAI stream with its usage in the last chunk, and drives ``POST /egress/llm/v1/chat/completions``
(``"stream": true``) with wrk at saturation for ``PORTCULLIS_SOAK_SECONDS`` (default 60), rotating
the execution id over ``EXECUTIONS`` values. It asserts:

- after a warm-up, RSS grows by less than ``GROWTH_BOUND_MIB_PER_MIN`` (the Theil-Sen slope);
- every call was answered 200 with the stream relayed, and every completed call's record has the
  usage the stream reported;
- after a graceful stop, a restarted gateway reads from Redis exactly what the records charged:
  the user's token budget left is its limit minus the tokens every record charged, and one
  execution's is its limit minus that execution's records. A single reservation left held (or
  charged twice) breaks the equality.

Everything listens on 127.0.0.1; wrk and nginx run bounded and are stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.cluster import AdminAuth, start
from tests.integration.test_http1_against_nginx import CHAT_STREAM_USAGE
from tests.soak_kit import (
    BIG_BUDGET,
    BIG_CALL_BUDGETS,
    GROWTH_BOUND_MIB_PER_MIN,
    SOAK_S,
    gateway_before_nginx,
    gateway_head,
    rotating_executions,
    soak,
)

from portcullis.stores.audit_rows import is_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 300)]

EXECUTIONS = 1000
WARMUP_S = 25
WATCHED = "run-7"  # the execution whose own budget is checked
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}],
                   "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}},
                  separators=(",", ":"))
ROTATE = rotating_executions(EXECUTIONS, f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n'
                                         'wrk.headers["Content-Type"] = "application/json"')


def door_config(redis_prefix: str) -> Callable[[str], str]:
    def config(upstream: str) -> str:
        return gateway_head(upstream) + f"""shared_state: {{url: "redis://127.0.0.1:6379/0", key_prefix: "{redis_prefix}"}}
routes:
  - {{name: unused, path: "/unused", upstream: api, auth: none}}
egress:
  entry:
    auth: {{api_key: {{}}}}
{BIG_CALL_BUDGETS}  routes:
    - name: llm
      url: "{upstream}"
      allow_http: true
      allow_networks: ["127.0.0.0/8"]
      methods: [POST]
      paths: ["/v1/chat/completions"]
      llm:
        provider: openai
        prices: {{"gpt-4o-mini*": {{input_per_million: 0.15, output_per_million: 0.60}}}}
        budgets: {{execution_tokens: {BIG_BUDGET}, user_tokens_per_day: {BIG_BUDGET}}}
"""
    return config


def llm_records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        rows = [orjson.loads(line) for line in f if b'"llm":' in line]
    return [r for r in rows if not is_checkpoint(r) and r.get("route") == "egress"]


async def budgets_left(served: Any, execution: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
        answer = await client.get(served.admin + "/egress/budgets", params={
            "route": "llm", "workflow_id": "soak", "execution_id": execution, "user": "agent"})
    assert answer.status_code == 200, answer.text
    return answer.json()["remaining"]  # type: ignore[no-any-return]


async def test_streamed_llm_calls_at_saturation_keep_flat_memory_and_settle_every_reservation(
    tmp_path: Path, redis_space: tuple[Any, str],
) -> None:
    _, prefix = redis_space
    script = tmp_path / "stream.lua"
    await asyncio.to_thread(script.write_text, ROTATE)
    config = door_config(prefix)
    async with gateway_before_nginx(tmp_path, config) as (served, nginx):
        async with httpx.AsyncClient(timeout=10, auth=AdminAuth(served)) as client:
            created = await client.post(served.admin + "/keys", json={"consumer": "agent"})
            assert created.status_code == 201, created.text
            key = created.json()["key"]
        run = await soak(served.base + "/egress/llm/v1/chat/completions", served.proc.pid, "-s", str(script),
                         "-H", f"X-API-Key: {key}", "-H", "X-Workflow-Id: soak", warmup_s=WARMUP_S)
        upstream_url = nginx.url

    records = await asyncio.to_thread(llm_records, tmp_path / "gateway" / "audit.jsonl")
    decisions = Counter(r["decision"] for r in records)
    usage = Counter((r["egress"]["llm"].get("input_tokens"), r["egress"]["llm"].get("output_tokens"))
                    for r in records if r["decision"] == "allowed")
    charged = sum(r["egress"]["llm"]["charged_tokens"] for r in records)
    watched = sum(r["egress"]["llm"]["charged_tokens"] for r in records if r["egress"]["execution_id"] == WATCHED)
    run.report(f"wrk: {run.requests} streamed calls ({run.requests / SOAK_S:.0f}/s); records {len(records)}"
               f" {dict(decisions)}; usage {dict(usage)}; tokens charged {charged}")

    restarted = await start(tmp_path / "gateway", config(upstream_url))
    try:
        user_left = await budgets_left(restarted, WATCHED)
    finally:
        await restarted.stop()

    assert not run.non_2xx, run.output
    assert len(run.settled()) >= 5
    assert run.growth() < GROWTH_BOUND_MIB_PER_MIN
    assert run.requests <= len(records)
    assert decisions["allowed"] >= run.requests
    assert usage == {(CHAT_STREAM_USAGE["prompt_tokens"], CHAT_STREAM_USAGE["completion_tokens"]): decisions["allowed"]}
    assert user_left["llm_user_tokens_per_day"] == BIG_BUDGET - charged
    assert user_left["llm_execution_tokens"] == BIG_BUDGET - watched
