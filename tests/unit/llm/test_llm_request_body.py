"""The body an LLM route sends: one unambiguous document, with the cap the gateway reserved."""

from __future__ import annotations

import orjson
import pytest

from portcullis.llm.estimate import EstimateRules, LlmRequest, SpendEstimate, estimate, parse_request
from portcullis.llm.request_body import outgoing_body
from portcullis.llm.usage import Provider


def prepare(raw: bytes, provider: Provider = "openai", **options: bool) -> dict[str, object]:
    request = parse_request(raw, max_bytes=1 << 16)
    assert isinstance(request, LlmRequest)
    spend = estimate(request, EstimateRules(provider=provider, default_max_output_tokens=77))
    assert isinstance(spend, SpendEstimate)
    out: dict[str, object] = orjson.loads(outgoing_body(request, spend, provider, **options))
    return out


def test_duplicate_keys_reach_the_provider_as_the_one_value_the_gateway_checked() -> None:
    sent = prepare(b'{"model": "cheap", "model": "gpt-4o", "max_tokens": 5, "max_tokens": 9000}')
    assert sent == {"model": "gpt-4o", "max_tokens": 9000}


@pytest.mark.parametrize(("provider", "body", "field"), [
    ("openai", {"messages": []}, "max_completion_tokens"),
    ("openai", {"input": "hi"}, "max_output_tokens"),
    ("openai", {"prompt": "hi"}, "max_tokens"),
    ("anthropic", {"messages": []}, "max_tokens"),
], ids=["openai-chat", "openai-responses", "openai-legacy", "anthropic"])
def test_a_body_without_a_cap_is_sent_with_the_reserved_one(provider: Provider, body: dict[str, object],
                                                              field: str) -> None:
    assert prepare(orjson.dumps(body), provider)[field] == 77


def test_a_body_with_a_cap_keeps_it() -> None:
    assert prepare(b'{"messages": [], "max_tokens": 12}') == {"messages": [], "max_tokens": 12}


def test_a_route_can_ask_an_openai_stream_for_its_usage() -> None:
    raw = b'{"messages": [], "max_tokens": 1, "stream": true, "stream_options": {"x": 1}}'
    assert prepare(raw, add_stream_usage=True)["stream_options"] == {"x": 1, "include_usage": True}
    assert "stream_options" not in prepare(b'{"messages": [], "max_tokens": 1, "stream": true}')
