"""The fake provider's streams are what the real ones send: the usage tracker reads them over a socket."""

from __future__ import annotations

import aiohttp
import pytest
from tests.llm_provider import fake_provider

from portcullis.llm.stream_usage import StreamUsageTracker
from portcullis.llm.usage import TokenUsage, usage_from_answer


@pytest.mark.parametrize(("provider", "path", "body"), [
    ("openai", "/v1/chat/completions", {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "hi"}]}),
    ("anthropic", "/v1/messages", {"model": "claude", "stream": True, "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "hi"}]}),
])
async def test_streams_from_the_fake_provider_report_usage(provider: str, path: str, body: dict[str, object]) -> None:
    async with fake_provider(input_tokens=21, output_tokens=8) as fake, aiohttp.ClientSession() as session:
        async with session.post(fake.url + path, json=body) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            tracker = StreamUsageTracker(provider)  # type: ignore[arg-type]
            async for chunk in response.content.iter_any():
                tracker.feed(chunk)
        assert tracker.result().usage == TokenUsage(21, 8)
        async with session.post(fake.url + path, json={**body, "stream": False}) as response:
            assert usage_from_answer(provider, await response.json()) == TokenUsage(21, 8)  # type: ignore[arg-type]
