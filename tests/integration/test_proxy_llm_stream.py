"""An LLM route's streamed answer through the proxy door: unbuffered, settled, and cut when the provider cuts.

The fake provider (``tests/llm_provider.py``) speaks OpenAI's server-sent events on 127.0.0.1; the
client is httpx with the proxy door as its proxy, as an agent that honours ``HTTP_PROXY`` would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import GatewayFactory
from tests.llm_provider import FakeProvider, fake_provider
from tests.proxy_kit import ProxyGateway, proxy_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}], "stream": True,
        "stream_options": {"include_usage": True}}


def _route(port: int) -> dict[str, Any]:
    return {"name": "openai", "url": f"http://llm.test:{port}/v1", "allow_http": True,
            "allow_networks": ["127.0.0.0/8"], "headers": {"authorization": "Bearer {secret:openai-key}"},
            "llm": {"provider": "openai", "default_max_output_tokens": 50,
                    "prices": {"gpt-4o": {"input_per_million": 2.5, "output_per_million": 10}},
                    "budgets": {"execution_tokens": 100_000}}}


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    async with fake_provider(input_tokens=40, output_tokens=9) as fake:
        yield fake


@pytest.fixture
async def door(make_gateway: GatewayFactory, provider: FakeProvider) -> AsyncIterator[ProxyGateway]:
    async with proxy_gateway(make_gateway, [_route(provider.port)], answers={"llm.test": [["127.0.0.1"]]},
                             secrets={"openai-key": "sk-provider"}) as pg:
        yield pg


async def test_a_stream_reaches_the_client_through_the_proxy_while_the_provider_is_still_sending(
    door: ProxyGateway, provider: FakeProvider,
) -> None:
    provider.stall_after = 2  # two chunks, then the provider waits
    received = b""
    async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client, \
            client.stream("POST", f"http://llm.test:{provider.port}/v1/chat/completions", json=CHAT) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.aiter_raw()
        while received.count(b"\n\n") < 2:
            received += await anext(chunks)  # through the door while the provider holds the rest
        assert b"[DONE]" not in received
        provider.release.set()
        async for chunk in chunks:
            received += chunk
    assert received.endswith(b"data: [DONE]\n\n")
    call = await door.call()
    assert call.egress is not None
    llm = call.egress["llm"]
    assert (call.decision, llm["stream_end"], llm["usage"], llm["charged_tokens"]) == ("allowed", "complete",
                                                                                     "reported", 49)
    assert call.bytes_out == len(received)
    assert provider.requests[0]["max_completion_tokens"] == 50  # the reservation's cap, written in


async def test_a_stream_the_provider_breaks_cuts_the_proxy_client_too(door: ProxyGateway,
                                                                      provider: FakeProvider) -> None:
    provider.break_after = 2
    async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client, \
            client.stream("POST", f"http://llm.test:{provider.port}/v1/chat/completions", json=CHAT) as response:
        with pytest.raises(httpx.RemoteProtocolError):  # never a clean end
            await response.aread()
    call = await door.call()
    assert call.decision.startswith("upstream_error:response_truncated")
    assert call.egress is not None and call.egress["llm"]["charged_tokens"] == call.egress["llm"]["reserved_tokens"]
