"""Usage is read from streamed answers as they pass; a stream that ends without it is unknown usage."""

from __future__ import annotations

import orjson
import pytest

from portcullis.llm.stream_usage import StreamUsageTracker
from portcullis.llm.usage import TokenUsage


def sse(*events: tuple[str | None, object]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + (data.encode() if isinstance(data, str) else orjson.dumps(data)) + b"\n\n"
    return out


# OpenAI chat completions with stream_options.include_usage: every chunk has "usage": null but the last.
OPENAI_CHAT = sse(
    (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hel"}}],
            "usage": None}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "lo"}}],
            "usage": None}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}),
    (None, "[DONE]"),
)
OPENAI_RESPONSES = sse(
    ("response.created", {"type": "response.created", "response": {"id": "r1", "usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
    ("response.completed", {"type": "response.completed",
                            "response": {"id": "r1", "usage": {"input_tokens": 8, "output_tokens": 5}}}),
)
ANTHROPIC = sse(
    ("message_start", {"type": "message_start", "message": {"id": "m1", "usage": {
        "input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
    ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
)


@pytest.mark.parametrize(("provider", "stream", "usage"), [
    ("openai", OPENAI_CHAT, TokenUsage(11, 2)),
    ("openai", OPENAI_RESPONSES, TokenUsage(8, 5)),
    ("anthropic", ANTHROPIC, TokenUsage(125, 15, cache_read_tokens=100)),
], ids=["openai-chat-include-usage", "openai-responses", "anthropic-message-deltas"])
def test_usage_is_read_from_a_whole_stream_in_any_chunk_size(provider: str, stream: bytes, usage: TokenUsage) -> None:
    for size in (1, 7, 64, len(stream)):
        tracker = StreamUsageTracker(provider)  # type: ignore[arg-type]
        for i in range(0, len(stream), size):
            tracker.feed(stream[i:i + size])
        result = tracker.result()
        assert (result.usage, result.reason) == (usage, "reported")


@pytest.mark.parametrize(("provider", "stream", "reason"), [
    ("openai", OPENAI_CHAT[:OPENAI_CHAT.index(b'"usage":{')], "not_reported"),  # broke before the last chunk
    ("openai", sse((None, {"choices": [{"delta": {"content": "x"}}]}), (None, "[DONE]")), "not_reported"),
    ("anthropic", ANTHROPIC[:ANTHROPIC.index(b"event: message_delta")], "incomplete"),  # input known, output not
    ("anthropic", b"", "not_reported"),
    ("openai", sse((None, '{"usage": {"prompt_tokens": 1, "completion_'), ), "malformed"),
    ("openai", sse((None, {"usage": {"prompt_tokens": -4, "completion_tokens": 1}})), "malformed"),
    ("anthropic", sse(("message_delta", {"type": "message_delta", "usage": {"output_tokens": "many"}})), "malformed"),
], ids=["openai-broken", "openai-no-include-usage", "anthropic-broken-mid-answer", "empty", "truncated-json",
        "negative", "anthropic-bad-count"])
def test_a_stream_without_full_usage_says_usage_is_unknown(provider: str, stream: bytes, reason: str) -> None:
    tracker = StreamUsageTracker(provider)  # type: ignore[arg-type]
    tracker.feed(stream)
    result = tracker.result()
    assert (result.usage, result.reason) == (None, reason)


def test_a_hostile_stream_stops_the_tracking_without_growing_memory() -> None:
    tracker = StreamUsageTracker("openai", max_event_chars=1024)
    tracker.feed(b"data: ")
    for _ in range(1000):
        tracker.feed(b"x" * 100)  # one event that never ends
    tracker.feed(b"\n\n" + OPENAI_CHAT)  # usage after the flood is not believed either
    assert (tracker.result().usage, tracker.result().reason) == (None, "event_too_large")
