"""Adaptive retry end to end: a provider that keeps failing gets fewer and fewer retries, one that
recovers gets them back. A real provider on 127.0.0.1, a seeded random source, waits recorded
instead of slept.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.egress.resolver import StaticResolver
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import MasterKeys, Vault, generate_master_key

CALLS = 40


class Provider:
    def __init__(self) -> None:
        self.status = 503
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({}, status=self.status)


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, int]]:
    p = Provider()
    async with serve_app(catch_all(p.handle)) as port:
        yield p, port


async def executor(tmp_path: Path, port: int, adaptive_after: int | None) -> tuple[EgressExecutor, SqliteStore]:
    config = EgressConfig.model_validate({
        "budgets": {"execution_calls": 0},
        "routes": [{"name": "flaky", "url": f"http://api.partner.test:{port}", "allow_http": True,
                    "allow_networks": ["127.0.0.0/8"], "breaker": {"min_calls": 1000},
                    "retry": {"max_attempts": 2, "budget_min_per_s": 100, "adaptive_after": adaptive_after}}],
    })
    store = await SqliteStore.connect(str(tmp_path / f"{adaptive_after}.db"))
    clock = ManualClock()

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return EgressExecutor(
        config, vault=Vault(store, MasterKeys([generate_master_key().encode()]), clock),
        resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}), clock=clock, sleep=sleep,
        rng=random.Random(45),
    ), store


async def statuses(ex: EgressExecutor, n: int) -> list[Any]:
    ctx = CallContext("ex-1", "wf-1", "alice")
    return [(await ex.run(EgressRequest("flaky", "GET", "/v1/x", ctx))).status for _ in range(n)]


@pytest.mark.parametrize("adaptive_after", [None, 5], ids=["off", "after-5"])
async def test_a_provider_that_keeps_failing_gets_fewer_retries(
    tmp_path: Path, provider: tuple[Provider, int], adaptive_after: int | None,
) -> None:
    p, port = provider
    ex, store = await executor(tmp_path, port, adaptive_after)
    try:
        assert await statuses(ex, CALLS) == [503] * CALLS
    finally:
        await ex.aclose()
        await store.aclose()
    retries = p.hits - CALLS
    if adaptive_after is None:
        assert retries == CALLS  # every call retried once
    else:
        # The first three calls are retried for sure (the streak is 1, 3, 5 when each first attempt
        # fails); beyond five failures in a row each retry is a 1/failures draw, and the sum of 1/k
        # over the rest of the streak stays far below one retry per call.
        assert 3 <= retries < CALLS // 4


async def test_one_success_ends_the_streak_and_retries_come_back(tmp_path: Path, provider: tuple[Provider, int]) -> None:
    p, port = provider
    ex, store = await executor(tmp_path, port, 1)
    try:
        await statuses(ex, 30)  # a long streak: retries are rare now
        p.status = 200
        assert await statuses(ex, 1) == [200]
        p.status, before = 503, p.hits
        assert await statuses(ex, 1) == [503]
        assert p.hits - before == 2  # the streak started again at 1: the retry went without a draw
    finally:
        await ex.aclose()
        await store.aclose()
