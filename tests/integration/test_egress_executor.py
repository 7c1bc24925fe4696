"""Egress calls end to end against a fake third-party API on 127.0.0.1.

The provider is a real aiohttp server; it is reachable only because each route here names it
through a fixed resolver and carries an explicit 127.0.0.0/8 network exception (the guard refuses
loopback otherwise). Waits between retries go through an injected sleep that records them, so no
test sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from portcullis.config.egress import EgressConfig
from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import CallContext
from portcullis.egress.executor import EgressExecutor, EgressRequest
from portcullis.egress.resolver import StaticResolver
from portcullis.errors import (
    BudgetExhausted,
    CircuitOpen,
    DependencyUnavailable,
    EgressDenied,
    ErrorCode,
    RateLimited,
    StoreUnavailable,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.stores.memory_budgets import MemoryBudgetStore
from portcullis.stores.sqlite import SqliteStore
from portcullis.testing import ManualClock, catch_all, serve_app
from portcullis.vault import MasterKeys, Vault, generate_master_key

SECRET = "ghp_" + "S3cr3tT0k3n" * 3
CTX = CallContext(execution_id="ex-1", workflow_id="wf-1", user="alice")


@dataclass
class Provider:
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)  # answers in turn; then 200

    stall: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        if self.stall:
            await self.release.wait()  # a provider that does not answer until the test ends
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                          "body": await request.read()})
        status, headers, body = self.script.pop(0) if self.script else (200, {}, b'{"ok": true}')
        return web.Response(status=status, headers={"Content-Type": "application/json", **headers}, body=body)


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    async with serve_app(catch_all(p.handle)) as p.port:
        try:
            yield p
        finally:
            p.release.set()


@dataclass
class World:
    executor: EgressExecutor
    provider: Provider
    clock: ManualClock
    sleeps: list[float]
    transitions: list[tuple[str, BreakerState, BreakerState]]
    vault: Vault

    async def call(self, path: str = "/v1/items", method: str = "GET", route: str = "partner",
                   headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
                   ctx: CallContext = CTX) -> Any:
        raw = [(k.encode(), v.encode()) for k, v in headers or []]
        return await self.executor.call(EgressRequest(route, method, path, ctx, raw, body))


Factory = Callable[..., Any]


@pytest.fixture
async def world(tmp_path: Path, provider: Provider) -> AsyncIterator[Factory]:
    made: list[tuple[EgressExecutor, SqliteStore]] = []

    async def make(route_extra: dict[str, Any] | None = None, budgets: dict[str, Any] | None = None,
                   resolve_to: str = "127.0.0.1", resolver: StaticResolver | None = None,
                   egress_extra: dict[str, Any] | None = None, budget_store: Any = None) -> World:
        route = {"name": "partner", "url": f"http://api.partner.test:{provider.port}", "allow_http": True,
                 "allow_networks": ["127.0.0.0/8"], "headers": {"Authorization": "Bearer {secret:partner_token}"},
                 "retry": {"max_attempts": 3}, **(route_extra or {})}
        config = EgressConfig.model_validate({"routes": [route], "budgets": budgets or {}, **(egress_extra or {})})
        store = await SqliteStore.connect(str(tmp_path / f"v{len(made)}.db"))
        clock = ManualClock()
        vault = Vault(store, MasterKeys([generate_master_key().encode()]), clock)
        await vault.set("partner_token", SECRET)
        sleeps: list[float] = []
        transitions: list[tuple[str, BreakerState, BreakerState]] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            clock.advance(seconds)

        executor = EgressExecutor(
            config, vault=vault, resolver=resolver or StaticResolver({
                "api.partner.test": [[ip_address(resolve_to)]], "other.partner.test": [[ip_address("127.0.0.1")]]}),
            clock=clock, sleep=sleep, on_breaker=lambda *t: transitions.append(t), budget_store=budget_store,
        )
        made.append((executor, store))
        return World(executor, provider, clock, sleeps, transitions, vault)

    try:
        yield make
    finally:
        for executor, store in made:
            await executor.aclose()
            await store.aclose()


async def test_a_call_carries_the_vault_credential_and_never_the_callers(world: Factory) -> None:
    w: World = await world()
    result = await w.call("/v1/items?limit=5", headers=[("Authorization", "Bearer caller-jwt"), ("X-API-Key", "pcl_x"),
                                                        ("Cookie", "s=1"), ("X-Workflow-Id", "wf-1"),
                                                        ("Accept", "application/json")])
    assert (result.status, result.body, result.attempts) == (200, b'{"ok": true}', 1)
    [seen] = w.provider.seen
    assert seen["path"] == "/v1/items?limit=5"
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["Host"] == f"api.partner.test:{w.provider.port}"
    for gone in ("X-API-Key", "Cookie", "X-Workflow-Id"):
        assert gone not in seen["headers"]
    assert result.budget.remaining["execution_calls"] == 99


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"route": "nope"}, "unknown_route"),
    ({"path": "/v1/../../admin"}, "path_invalid"),
    ({"path": "v1/items"}, "path_invalid"),
    ({"method": "DELETE"}, "method_not_allowed"),
])
async def test_calls_outside_the_route_are_refused_before_anything_is_sent(
    world: Factory, kwargs: dict[str, str], reason: str
) -> None:
    w: World = await world({"methods": ["GET", "POST"]})
    with pytest.raises(EgressDenied) as info:
        await w.call(**kwargs)
    assert info.value.reason == reason
    assert w.provider.seen == []


async def test_dot_segments_are_resolved_inside_the_routes_base_url(world: Factory) -> None:
    w: World = await world()
    await w.call("/v1/%2e%2e/admin")
    assert w.provider.seen[0]["path"] == "/admin"  # normalised, and still under the route's base URL


async def test_a_route_whose_name_resolves_to_a_private_address_is_refused(world: Factory) -> None:
    w: World = await world({"allow_networks": []}, resolve_to="10.1.2.3")
    with pytest.raises(EgressDenied) as info:
        await w.call()
    assert info.value.reason == "address_private"
    assert w.provider.seen == []


async def test_a_failing_get_is_retried_with_jitter_and_then_succeeds(world: Factory) -> None:
    w: World = await world()
    w.provider.script = [(503, {}, b"busy"), (502, {}, b"bad gateway")]
    result = await w.call()
    assert (result.status, result.attempts, len(w.provider.seen)) == (200, 3, 3)
    assert len(w.sleeps) == 2 and 0 <= w.sleeps[0] <= 0.1 and 0 <= w.sleeps[1] <= 0.2


async def test_retry_after_is_honoured_and_a_too_long_one_ends_the_call(world: Factory) -> None:
    w: World = await world()
    w.provider.script = [(429, {"Retry-After": "2"}, b""), (429, {"Retry-After": "3600"}, b"")]
    result = await w.call()
    assert (result.status, result.attempts) == (429, 2)  # the provider's answer, after one believed wait
    assert w.sleeps == [2.0]


async def test_a_post_is_never_retried_unless_it_carries_an_idempotency_key(world: Factory) -> None:
    w: World = await world()
    w.provider.script = [(503, {}, b""), (503, {}, b"")]
    result = await w.call(method="POST", body=b"{}")
    assert (result.status, result.attempts, len(w.provider.seen)) == (503, 1, 1)
    keyed = await w.call(method="POST", body=b"{}", headers=[("Idempotency-Key", "order-42")])
    assert (keyed.status, keyed.attempts) == (200, 2)


async def test_the_breaker_opens_and_then_fails_fast_without_calling(world: Factory) -> None:
    w: World = await world({"retry": {"max_attempts": 1}, "breaker": {"min_calls": 4, "open_for": "30s"}})
    w.provider.script = [(500, {}, b"")] * 4
    for _ in range(4):
        assert (await w.call()).status == 500
    with pytest.raises(CircuitOpen) as info:
        await w.call()
    assert info.value.retry_after_s == 30
    assert len(w.provider.seen) == 4
    assert w.transitions == [("partner", BreakerState.CLOSED, BreakerState.OPEN)]
    w.clock.advance(30)
    assert (await w.call()).status == 200  # a half-open probe goes through


async def test_a_total_outage_costs_the_provider_at_most_the_retry_budget(world: Factory) -> None:
    w: World = await world({"breaker": {"failure_rate": 1.0, "min_calls": 100000},
                            "retry": {"max_attempts": 3, "budget_ratio": 0.2, "budget_min_per_s": 0}})
    w.provider.script = [(503, {}, b"")] * 10_000
    for _ in range(100):
        await w.call()
        w.clock.advance(0.1)
    # Without the budget, 100 calls would cost 300 requests; with it, at most 100 x (1 + 0.2).
    # (The floor for quiet endpoints, budget_min_per_s, is off here so the ratio alone is measured.)
    assert 100 < len(w.provider.seen) <= 100 * 1.2


async def test_an_oversized_answer_is_cut_with_a_reason(world: Factory) -> None:
    w: World = await world({"max_response_bytes": "1KiB"})
    w.provider.script = [(200, {}, b"x" * 5000)]
    with pytest.raises(UpstreamProtocolError) as info:
        await w.call()
    assert info.value.reason == "response_too_large"
    assert SECRET not in repr(info.value) and info.value.__cause__ is None


async def test_an_exhausted_budget_answers_which_one_and_sends_nothing(world: Factory) -> None:
    w: World = await world(budgets={"execution_calls": 2})
    await w.call()
    await w.call()
    with pytest.raises(BudgetExhausted) as info:
        await w.call()
    assert info.value.reason == "budget:execution_calls"
    assert len(w.provider.seen) == 2


class UnreachableBudgets(MemoryBudgetStore):
    """A budget store with no failover rule of its own, whose backend is down."""

    async def spend(self, items: Any, now: float) -> Any:
        raise StoreUnavailable("budgets: connection refused")


async def test_a_store_that_fails_without_a_rule_of_its_own_is_a_503_never_an_internal_error(world: Factory) -> None:
    w: World = await world(budgets={"execution_calls": 2}, budget_store=UnreachableBudgets())
    with pytest.raises(DependencyUnavailable) as info:
        await w.call()
    assert (info.value.reason, info.value.retry_after_s) == ("store_unavailable", 5)
    outcome = await w.executor.run(EgressRequest("partner", "GET", "/v1/items", CTX, [], None))
    assert (outcome.status, outcome.decision, outcome.problem) == (
        503, "egress_refused:store_unavailable", ErrorCode.SERVICE_UNAVAILABLE)
    assert (b"retry-after", b"5") in outcome.headers
    assert w.provider.seen == []


async def test_a_store_failing_after_an_llm_reservation_gives_the_reservation_back(world: Factory) -> None:
    # The tokens are held before the call budgets are spent; the call never left, so nothing is charged.
    llm = {"provider": "openai", "prices": {"gpt-4o": {"input_per_million": 2.5, "output_per_million": 10}},
           "budgets": {"execution_tokens": 1000}}
    w: World = await world(budgets={"execution_calls": 2}, budget_store=UnreachableBudgets(), route_extra={"llm": llm})
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":50}'
    with pytest.raises(DependencyUnavailable):
        await w.call("/v1/chat/completions", method="POST", body=body)
    assert (await w.executor.budgets_remaining(CTX, "partner"))["llm_execution_tokens"] == 1000
    assert w.provider.seen == []


async def test_redirects_are_not_followed(world: Factory) -> None:
    w: World = await world()
    w.provider.script = [(302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")]
    result = await w.call()
    assert result.status == 302 and len(w.provider.seen) == 1


async def test_endpoint_rate_limits_refuse_with_retry_after_and_send_nothing(world: Factory) -> None:
    w: World = await world({"rate_limits": ["2/second", "100/hour"]})
    await w.call()
    await w.call()
    with pytest.raises(RateLimited) as info:
        await w.call()
    assert info.value.retry_after_s == pytest.approx(0.5)
    assert len(w.provider.seen) == 2
    w.clock.advance(0.5)
    assert (await w.call()).status == 200


async def test_per_workflow_rate_limits_count_each_workflow_apart(world: Factory) -> None:
    w: World = await world({"rate_limits": ["1/second"], "rate_limit_per_workflow": True})
    await w.call()
    other = CallContext(execution_id="ex-9", workflow_id="wf-2", user="alice")
    assert (await w.call(ctx=other)).status == 200
    with pytest.raises(RateLimited):
        await w.call()


async def test_a_provider_that_never_answers_times_out_and_leaks_nothing(
    world: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    w: World = await world({"read_timeout": "200ms", "retry": {"max_attempts": 1}})
    w.provider.stall = True
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamTimeout) as info:
        await w.call()
    assert info.value.reason == "egress_timeout" and info.value.__cause__ is None
    assert SECRET not in caplog.text and SECRET not in repr(info.value)


async def test_an_unreachable_provider_is_unavailable_and_leaks_nothing(
    world: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    w: World = await world({"url": "http://api.partner.test:1", "retry": {"max_attempts": 1}})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamUnavailable) as info:
        await w.call()
    assert info.value.reason == "egress_unreachable"
    assert SECRET not in caplog.text and SECRET not in repr(info.value)


async def test_a_route_may_follow_redirects_each_guarded_and_within_its_hop_limit(world: Factory) -> None:
    w: World = await world({"max_redirects": 1})
    w.provider.script = [(302, {"Location": "/v1/moved"}, b"")]
    result = await w.call()
    assert (result.status, [c["path"] for c in w.provider.seen]) == (200, ["/v1/items", "/v1/moved"])
    assert w.provider.seen[1]["headers"]["Authorization"] == f"Bearer {SECRET}"  # same origin: kept
    w.provider.script = [(302, {"Location": "/a"}, b""), (302, {"Location": "/b"}, b"")]
    assert (await w.call()).status == 302  # the second hop is over the limit: returned as it is


async def test_a_vault_value_beyond_ascii_reaches_the_provider_as_utf8(world: Factory) -> None:
    w: World = await world({"headers": {"Authorization": "Bearer {secret:partner_token}",
                                        "X-Note": "\u2713 {secret:note}"}})
    await w.vault.set("note", "caf\xe9")
    assert (await w.call()).status == 200
    [seen] = w.provider.seen
    # aiohttp reads header bytes as UTF-8 (surrogateescape): a latin-1 byte would read as "\udce9".
    assert seen["headers"]["x-note"] == "\u2713 caf\xe9"
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"


async def test_a_redirect_to_metadata_or_a_foreign_host_is_refused(world: Factory) -> None:
    w: World = await world({"max_redirects": 3})
    for location, reason in [
        ("http://169.254.169.254/latest/meta-data/", "redirect_port_not_allowed"),
        (f"http://169.254.169.254:{w.provider.port}/latest/meta-data/", "redirect_host_not_allowed"),
        (f"http://api.partner.test.evil.example:{w.provider.port}/", "redirect_host_not_allowed"),
    ]:
        w.provider.script = [(302, {"Location": location}, b"")]
        with pytest.raises(EgressDenied) as info:
            await w.call()
        assert info.value.reason == reason
    assert len(w.provider.seen) == 3  # only the first hop of each was sent


async def test_leaving_the_origin_drops_the_injected_credential(world: Factory) -> None:
    # CVE-2018-1000007 (curl) and CVE-2018-18074 (requests): credentials followed a redirect to another host.
    w: World = await world({"max_redirects": 1, "allow_hosts": ["other.partner.test"]})
    w.provider.script = [(307, {"Location": f"http://other.partner.test:{w.provider.port}/v1/there"}, b"")]
    result = await w.call(headers=[("Accept", "application/json")])
    assert result.status == 200
    second = w.provider.seen[1]
    assert second["headers"]["Host"] == f"other.partner.test:{w.provider.port}"
    assert "Authorization" not in second["headers"] and second["headers"]["Accept"] == "application/json"


async def test_a_303_after_a_post_continues_as_a_get_without_the_body(world: Factory) -> None:
    w: World = await world({"max_redirects": 1})
    w.provider.script = [(303, {"Location": "/v1/result/1"}, b"")]
    result = await w.call(method="POST", body=b'{"x": 1}')
    assert result.status == 200
    assert [(c["method"], c["body"]) for c in w.provider.seen] == [("POST", b'{"x": 1}'), ("GET", b"")]


async def test_only_the_routes_path_patterns_are_reachable(world: Factory) -> None:
    w: World = await world({"paths": ["/v1/items", "/v1/repos/*/issues", "/v1/files/**"]})
    for path in ("/v1/items", "/v1/repos/app/issues", "/v1/files/a/b/c.txt"):
        assert (await w.call(path)).status == 200
    for path in ("/v1/admin", "/v1/repos/app/pulls", "/v1/repos/app/issues/1", "/v1/files", "/v1/items/../admin"):
        with pytest.raises(EgressDenied) as info:
            await w.call(path)
        assert info.value.reason == "path_not_allowed"
    assert len(w.provider.seen) == 3


async def test_costs_follow_the_first_matching_rule(world: Factory) -> None:
    w: World = await world({"cost": 0.01, "costs": [
        {"path": "/v1/chat/**", "methods": ["POST"], "cost": 0.5},
        {"path": "/v1/embeddings", "cost": 0.1},
    ]}, budgets={"execution_calls": None, "execution_cost": 1.0})
    assert (await w.call("/v1/chat/completions", method="POST", body=b"{}")).cost == 0.5
    assert (await w.call("/v1/embeddings")).cost == 0.1
    assert (await w.call("/v1/chat/completions")).cost == 0.01  # GET: the rule is for POST only
    result = await w.call("/v1/other")
    assert result.budget.remaining["execution_cost"] == pytest.approx(1.0 - 0.5 - 0.1 - 0.01 - 0.01)


def _answers(*answers: str) -> StaticResolver:
    return StaticResolver({"api.partner.test": [[ip_address(a)] for a in answers]})


async def test_a_routes_host_is_resolved_once_per_origin_check_ttl_not_on_every_call(world: Factory) -> None:
    resolver = _answers("127.0.0.1")
    w: World = await world(resolver=resolver)
    for _ in range(3):
        assert (await w.call()).status == 200
    # one early check for the three calls, and one for the one connection they shared
    assert resolver.lookups == ["api.partner.test"] * 2
    w.clock.advance(1.0)  # egress.origin_check_ttl, 1s by default: the next call refreshes it
    assert (await w.call()).status == 200
    assert resolver.lookups == ["api.partner.test"] * 3


async def test_after_the_ttl_a_host_now_resolving_private_is_refused_before_anything_is_spent(
    world: Factory,
) -> None:
    # the early check and the connection see the excepted test server; the refreshed check, private
    resolver = _answers("127.0.0.1", "127.0.0.1", "10.0.0.7")
    w: World = await world(resolver=resolver)
    assert (await w.call()).budget.remaining["execution_calls"] == 99
    w.clock.advance(1.0)
    # this call goes on the last verdict (over the connection checked then) and refreshes it
    assert (await w.call()).budget.remaining["execution_calls"] == 98
    with pytest.raises(EgressDenied) as refused:
        await w.call()
    assert refused.value.reason == "address_private"
    assert len(w.provider.seen) == 2
    assert (await w.executor.budgets_remaining(CTX, "partner"))["execution_calls"] == 98  # nothing spent


async def test_with_an_origin_check_ttl_of_zero_every_call_resolves_its_host(world: Factory) -> None:
    resolver = _answers("127.0.0.1")
    w: World = await world(resolver=resolver, egress_extra={"origin_check_ttl": 0})
    for _ in range(2):
        assert (await w.call()).status == 200
    assert resolver.lookups == ["api.partner.test"] * 3  # two early checks, one connection
