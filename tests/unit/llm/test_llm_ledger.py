"""An LLM call's budget from reservation to settlement, on the memory store and through an outage."""

from __future__ import annotations

import pytest
import yaml
from tests.redis_server import PrivateRedis

from portcullis.config.egress import EgressLlmConfig
from portcullis.llm.estimate import SpendEstimate, estimate, parse_request
from portcullis.llm.ledger import LlmHold, LlmLedger
from portcullis.llm.route import LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.usage import TokenUsage
from portcullis.stores.base import ReservationRefused
from portcullis.stores.failover import Outage
from portcullis.stores.failover_reservations import FailoverReservationStore
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.stores.redis_reservations import RedisReservationStore
from portcullis.stores.shared_state import build_redis_client
from portcullis.testing import ManualClock

CONFIG = """
provider: openai
prompt_estimate: chars_div_4
prices: {gpt-4o: {input_per_million: 2.5, output_per_million: 10}}
budgets: {execution_tokens: 1000, user_cost_per_day: 0.01}
"""
CALLER = LlmCaller("ex-1", "wf-1", "alice")


def route(text: str = CONFIG) -> LlmRoute:
    return LlmRoute.build("openai", EgressLlmConfig.model_validate(yaml.safe_load(text)), total_timeout_s=60.0)


def spend_of(max_tokens: int, text: str = "hi") -> SpendEstimate:
    body = b'{"model": "gpt-4o", "max_tokens": %d, "messages": [{"role": "user", "content": "%s"}]}' % (
        max_tokens, text.encode())
    request = parse_request(body, max_bytes=1 << 20)
    assert not isinstance(request, ReservationRefused)
    result = estimate(request, route().estimate_rules)  # type: ignore[arg-type]
    assert isinstance(result, SpendEstimate)
    return result


async def test_a_call_that_does_not_fit_is_refused_naming_the_budget() -> None:
    ledger = LlmLedger(route(), MemoryReservationStore(), ManualClock())
    held = await ledger.reserve(CALLER, spend_of(600))
    assert isinstance(held, LlmHold)
    refused = await ledger.reserve(CALLER, spend_of(600))
    assert isinstance(refused, ReservationRefused) and refused.name == "llm_execution_tokens"


async def test_settling_to_the_reported_usage_gives_back_the_rest() -> None:
    store = MemoryReservationStore()
    ledger = LlmLedger(route(), store, ManualClock())
    held = await ledger.reserve(CALLER, spend_of(900))
    assert isinstance(held, LlmHold)
    charge = await ledger.settle(held, TokenUsage(20, 30))
    assert charge.spend == LlmSpend(50, 350) and not charge.over_reserved  # 20 x 2.5 + 30 x 10 micro-units
    assert isinstance(await ledger.reserve(CALLER, spend_of(900)), LlmHold)  # the unused 850 tokens came back


async def test_unknown_usage_charges_the_whole_reservation() -> None:
    ledger = LlmLedger(route(), MemoryReservationStore(), ManualClock())
    held = await ledger.reserve(CALLER, spend_of(900))
    assert isinstance(held, LlmHold)
    charge = await ledger.settle(held, None)
    assert charge.usage is None and charge.spend == held.reserved
    assert isinstance(await ledger.reserve(CALLER, spend_of(100)), ReservationRefused)


async def test_more_usage_than_reserved_is_charged_and_said() -> None:
    ledger = LlmLedger(route(), MemoryReservationStore(), ManualClock())
    held = await ledger.reserve(CALLER, spend_of(10))
    assert isinstance(held, LlmHold)
    charge = await ledger.settle(held, TokenUsage(400, 10))
    assert charge.over_reserved and charge.spend.tokens == 410


async def test_a_released_call_charges_nothing_and_a_hold_ends_once() -> None:
    ledger = LlmLedger(route(), MemoryReservationStore(), ManualClock())
    held = await ledger.reserve(CALLER, spend_of(900))
    assert isinstance(held, LlmHold)
    await ledger.release(held)
    with pytest.raises(RuntimeError):
        await ledger.settle(held, TokenUsage(1, 1))
    assert isinstance(await ledger.reserve(CALLER, spend_of(900)), LlmHold)


async def test_a_route_without_budgets_holds_nothing() -> None:
    ledger = LlmLedger(route("provider: openai"), MemoryReservationStore(), ManualClock())
    held = await ledger.reserve(CALLER, spend_of(10))
    assert isinstance(held, LlmHold) and held.reservation is None
    assert (await ledger.settle(held, TokenUsage(5, 5))).spend == LlmSpend(10, 63)  # 62.5 micro-units, rounded up


@pytest.mark.faults
async def test_an_unreachable_redis_refuses_reservations_or_holds_a_local_share(private_redis: PrivateRedis) -> None:
    clock = ManualClock()
    client = await build_redis_client(f"redis://127.0.0.1:{private_redis.port}", timeout_s=0.5)
    try:
        shared = RedisReservationStore(client, key_prefix="t:", server_time=False)
        closed = LlmLedger(route(), FailoverReservationStore(shared, Outage(clock), instances=2), clock)
        opened = LlmLedger(route(), FailoverReservationStore(shared, Outage(clock), instances=2, on_failure="open"),
                           clock)
        held = await closed.reserve(CALLER, spend_of(100))
        assert isinstance(held, LlmHold)
        await private_redis.kill()
        refused = await closed.reserve(CALLER, spend_of(100))
        assert isinstance(refused, ReservationRefused) and (refused.index, refused.name) == (-1, "shared_state")
        local = await opened.reserve(CALLER, spend_of(400))  # a local share: 1000 tokens / 2 instances
        assert isinstance(local, LlmHold)
        assert isinstance(await opened.reserve(CALLER, spend_of(100)), ReservationRefused)
        await opened.settle(local, TokenUsage(10, 10))
        assert isinstance(await opened.reserve(CALLER, spend_of(400)), LlmHold)
    finally:
        await client.aclose()
