"""An LLM call's phases against the fake provider on a real socket: prepare, send, settle or relay."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from tests.llm_provider import FakeProvider, fake_provider

from portcullis.config.egress import EgressLlmConfig
from portcullis.llm.call import LlmCalls, PreparedCall, is_stream
from portcullis.llm.refusal import LlmReason, LlmRefusal
from portcullis.llm.route import LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.stream_relay import StreamCut
from portcullis.llm.usage import TokenUsage
from portcullis.stores.base import BudgetLine, ReservationRefused
from portcullis.stores.memory_reservations import MemoryReservationStore
from portcullis.testing import ManualClock

CALLER = LlmCaller("ex-1", "wf-1", "alice")
CONFIG = """
provider: {provider}
default_max_output_tokens: 100
prices: {{gpt-4o: {{input_per_million: 2, output_per_million: 8}}, claude: {{input_per_million: 3, output_per_million: 15}}}}
budgets: {{execution_tokens: 2000}}
screening: {{patterns: ['ignore previous instructions']}}
max_stream_bytes: {max_stream_bytes}
"""
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
MODELS = {"openai": "gpt-4o", "anthropic": "claude"}


def calls(provider: str, store: MemoryReservationStore, *, max_stream_bytes: str = "1MiB") -> LlmCalls:
    config = EgressLlmConfig.model_validate(yaml.safe_load(
        CONFIG.format(provider=provider, max_stream_bytes=max_stream_bytes)))
    return LlmCalls(LlmRoute.build("r", config, total_timeout_s=60.0), store, ManualClock())


def chat(provider: str, **extra: Any) -> bytes:
    return orjson.dumps({"model": MODELS[provider], "messages": [{"role": "user", "content": "hello"}], **extra})


async def used(store: MemoryReservationStore) -> tuple[int, int]:
    [usage] = await store.usage([BudgetLine("llm_execution_tokens", "llm:r:x:wf-1:ex-1:tokens", 2000, 86400.0, 0)], 1000.0)
    return usage.used, usage.reserved


async def send(fake: FakeProvider, provider: str, call: PreparedCall, *, stream_to: list[bytes] | None = None) -> int:
    async with aiohttp.ClientSession() as session, \
            session.post(fake.url + PATHS[provider], data=call.body,
                         headers={"content-type": "application/json"}) as response:
        if is_stream(response.headers.get("content-type"), call.request.stream, response.status):
            relay = call.relay(response.content.iter_any())
            try:
                async for chunk in relay:
                    assert stream_to is not None
                    stream_to.append(chunk)
            finally:
                await relay.aclose()
        else:
            await call.settle_answer(response.status, await response.read())
        return response.status


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_json_answer_settles_to_its_usage(provider: str) -> None:
    store = MemoryReservationStore()
    async with fake_provider(input_tokens=30, output_tokens=7) as fake:
        call = await calls(provider, store).prepare(CALLER, chat(provider))
        assert isinstance(call, PreparedCall)
        assert (await used(store))[1] == call.spend.total_tokens  # held while in flight
        assert await send(fake, provider, call) == 200
    assert fake.requests[0]["max_tokens" if provider == "anthropic" else "max_completion_tokens"] == 100
    assert call.charge is not None and call.charge.usage == TokenUsage(30, 7)
    assert await used(store) == (37, 0)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_streamed_answer_is_relayed_whole_and_settled_when_it_ends(provider: str) -> None:
    store = MemoryReservationStore()
    extra = {"stream": True, "stream_options": {"include_usage": True}} if provider == "openai" else {"stream": True}
    async with fake_provider(input_tokens=40, output_tokens=9, chunks=20) as fake:
        call = await calls(provider, store).prepare(CALLER, chat(provider, **extra))
        assert isinstance(call, PreparedCall)
        chunks: list[bytes] = []
        await send(fake, provider, call, stream_to=chunks)
    assert b"w19" in b"".join(chunks)
    assert call.stream_end is not None and call.stream_end.reason == "complete"
    assert await used(store) == (49, 0)


async def test_a_stream_the_provider_breaks_is_charged_its_whole_reservation() -> None:
    store = MemoryReservationStore()
    async with fake_provider(chunks=20, break_after=5) as fake:
        call = await calls("openai", store).prepare(
            CALLER, chat("openai", stream=True, stream_options={"include_usage": True}))
        assert isinstance(call, PreparedCall)
        with pytest.raises(aiohttp.ClientPayloadError):
            await send(fake, "openai", call, stream_to=[])
    assert call.stream_end is not None and call.stream_end.reason == "upstream_error"
    assert await used(store) == (call.spend.total_tokens, 0)


async def test_a_stream_past_its_byte_limit_is_cut_and_charged_in_full() -> None:
    store = MemoryReservationStore()
    async with fake_provider(chunks=200) as fake:
        call = await calls("openai", store, max_stream_bytes="2KiB").prepare(CALLER, chat("openai", stream=True))
        assert isinstance(call, PreparedCall)
        with pytest.raises(StreamCut):
            await send(fake, "openai", call, stream_to=[])
    assert await used(store) == (call.spend.total_tokens, 0)


async def test_refusals_hold_nothing() -> None:
    store = MemoryReservationStore()
    route = calls("openai", store)
    assert await route.prepare(CALLER, chat("openai", messages=[{"role": "user", "content": "Ignore previous "
                                                                 "instructions"}])) == \
        LlmRefusal(LlmReason.PATTERN, "0")
    refused = await route.prepare(CALLER, chat("openai", max_tokens=5000))
    assert isinstance(refused, ReservationRefused) and refused.name == "llm_execution_tokens"
    assert await used(store) == (0, 0)


async def test_a_call_never_sent_gives_its_reservation_back() -> None:
    store = MemoryReservationStore()
    call = await calls("openai", store).prepare(CALLER, chat("openai"))
    assert isinstance(call, PreparedCall)
    await call.not_sent()
    await call.not_sent()
    assert await used(store) == (0, 0)


async def test_a_provider_error_without_usage_is_not_charged() -> None:
    store = MemoryReservationStore()
    call = await calls("openai", store).prepare(CALLER, chat("openai"))
    assert isinstance(call, PreparedCall)
    charge = await call.settle_answer(429, b'{"error": {"type": "rate_limit_exceeded"}}')
    assert charge.spend == LlmSpend(0, 0) and await used(store) == (0, 0)
