"""Usage is read from each provider's answer shape; anything malformed means unknown, never zero."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.llm.usage import Provider, TokenUsage, usage_from_answer


@pytest.mark.parametrize(("provider", "answer", "usage"), [
    # OpenAI chat completions (cached tokens are part of prompt_tokens)
    ("openai", {"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}, TokenUsage(12, 30)),
    ("openai", {"usage": {"prompt_tokens": 1200, "completion_tokens": 3,
                          "prompt_tokens_details": {"cached_tokens": 1024}}}, TokenUsage(1200, 3, cache_read_tokens=1024)),
    # OpenAI Responses API
    ("openai", {"usage": {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 2}}}, TokenUsage(9, 4)),
    # Anthropic messages: cache counters are beside input_tokens, so they are added in
    ("anthropic", {"usage": {"input_tokens": 10, "output_tokens": 25}}, TokenUsage(10, 25)),
    ("anthropic", {"usage": {"input_tokens": 10, "output_tokens": 25, "cache_creation_input_tokens": 100,
                             "cache_read_input_tokens": 2000}},
     TokenUsage(2110, 25, cache_read_tokens=2000, cache_write_tokens=100)),
    # OpenAI embeddings: no completion_tokens, and a total equal to the prompt
    ("openai", {"usage": {"prompt_tokens": 8, "total_tokens": 8}}, TokenUsage(8, 0)),
], ids=["openai-chat", "openai-chat-cached", "openai-responses", "anthropic", "anthropic-cache", "openai-embeddings"])
def test_usage_is_read_from_each_providers_answer(provider: Provider, answer: Any, usage: TokenUsage) -> None:
    assert usage_from_answer(provider, answer) == usage


@pytest.mark.parametrize(("provider", "answer"), [
    ("openai", {}),
    ("openai", {"usage": None}),
    ("openai", {"usage": {"prompt_tokens": 12}}),
    ("openai", {"usage": {"prompt_tokens": 12, "total_tokens": 30}}),
    ("openai", {"usage": {"prompt_tokens": -1, "completion_tokens": 3}}),
    ("openai", {"usage": {"prompt_tokens": 1.5, "completion_tokens": 3}}),
    ("openai", {"usage": {"prompt_tokens": True, "completion_tokens": 3}}),
    ("openai", {"usage": {"prompt_tokens": "12", "completion_tokens": 3}}),
    ("openai", {"usage": {"prompt_tokens": 1 << 60, "completion_tokens": 3}}),
    ("anthropic", {"usage": {"input_tokens": 10}}),
    ("anthropic", {"usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": -5}}),
    ("anthropic", ["not", "an", "object"]),
], ids=["no-usage", "null-usage", "missing-count", "missing-completion", "negative", "float", "bool", "string", "absurd",
        "anthropic-missing-output", "anthropic-negative-cache", "not-an-object"])
def test_a_malformed_usage_is_unknown(provider: Provider, answer: Any) -> None:
    assert usage_from_answer(provider, answer) is None
