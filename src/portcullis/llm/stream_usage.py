"""Token usage read from a streamed LLM answer, chunk by chunk, as the chunks pass through.

Why: a streamed answer reports usage only in its events, at the start (Anthropic's
``message_start`` carries the input tokens) and near the end (OpenAI's last chunk when the request
asked ``stream_options: {include_usage: true}``; the Responses API's ``response.completed``;
Anthropic's ``message_delta`` with the cumulative output tokens). The gateway forwards each chunk
unchanged and feeds a copy here; only events that can carry usage are decoded as JSON.

The answer is ``StreamUsage``: ``usage`` is set only when the stream reported it in full. When it
did not (the stream broke, the provider sent none, an event was malformed or too large), ``usage``
is None and ``reason`` says why; the caller then charges the **whole reservation**. That is the
choice that can never under-charge: a broken stream may still have been billed by the provider
for every token it generated, and the reservation is the most the call could cost. An Anthropic
stream that broke after ``message_start`` is also charged in full: its input count is known but
its output is not, and guessing low would let a caller who cuts streams short spend for free.

What it refuses: to hold a stream. Memory is bounded by the SSE parser's event bound; after an
oversized or undecodable event the tracker stops parsing (the chunks still flow) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from portcullis.llm.sse import DEFAULT_MAX_EVENT_CHARS, SseEvent, SseEventTooLarge, SseParser
from portcullis.llm.usage import MAX_TOKENS_REPORTED, Provider, TokenUsage, usage_from_object

__all__ = ["StreamUsage", "StreamUsageTracker", "UsageReason"]

UsageReason = Literal["reported", "not_reported", "incomplete", "malformed", "event_too_large"]


@dataclass(frozen=True, slots=True)
class StreamUsage:
    """What a stream said it used. ``usage`` None: unknown, charge the whole reservation."""

    usage: TokenUsage | None
    reason: UsageReason
    events: int  # events parsed, for the audit


class StreamUsageTracker:
    """Feed every chunk of one streamed answer; ask ``result()`` when it ends or breaks."""

    __slots__ = ("_broken", "_events", "_input", "_output", "_parser", "_provider", "_read", "_usage", "_write")

    def __init__(self, provider: Provider, *, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        self._provider = provider
        self._parser = SseParser(max_event_chars=max_event_chars)
        self._broken: UsageReason | None = None
        self._events = 0
        self._usage: TokenUsage | None = None
        # Anthropic's usage arrives in parts: message_start, then cumulative message_delta counts.
        self._input: int | None = None
        self._output: int | None = None
        self._write = 0
        self._read = 0

    def feed(self, chunk: bytes) -> None:
        """Read one chunk of the answer. Never raises: a bad stream only ends the tracking."""
        if self._broken is not None or not chunk:
            return
        try:
            events = self._parser.feed(chunk)
        except SseEventTooLarge:
            self._broken = "event_too_large"
            return
        for event in events:
            self._events += 1
            if not self._read_event(event):
                self._broken = "malformed"
                return

    def result(self) -> StreamUsage:
        """The usage reported so far: complete, or None with the reason (charge the reservation)."""
        if self._broken is not None:
            return StreamUsage(None, self._broken, self._events)
        if self._provider == "anthropic":
            if self._input is None and self._output is None:
                return StreamUsage(None, "not_reported", self._events)
            if self._input is None or self._output is None:
                return StreamUsage(None, "incomplete", self._events)
            usage = TokenUsage(self._input + self._write + self._read, self._output,
                               cache_read_tokens=self._read, cache_write_tokens=self._write)
            return StreamUsage(usage, "reported", self._events)
        if self._usage is None:
            return StreamUsage(None, "not_reported", self._events)
        return StreamUsage(self._usage, "reported", self._events)

    def _read_event(self, event: SseEvent) -> bool:
        """False when an event that carries usage cannot be read."""
        data = event.data
        if '"usage"' not in data:  # most events: content deltas, pings, "[DONE]"
            return True
        try:
            body: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(body, dict):
            return True
        if self._provider == "anthropic":
            return self._anthropic(body)
        return self._openai(body)

    def _openai(self, body: dict[str, Any]) -> bool:
        usage = body.get("usage")
        if usage is None and isinstance(body.get("response"), dict):  # Responses API: response.completed
            usage = body["response"].get("usage")
        if usage is None:  # chat chunks before the last carry "usage": null
            return True
        parsed = usage_from_object("openai", usage)
        if parsed is None:
            return False
        self._usage = parsed
        return True

    def _anthropic(self, body: dict[str, Any]) -> bool:
        kind = body.get("type")
        if kind == "message_start":
            message = body.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif kind == "message_delta":
            usage = body.get("usage")
        else:
            return True
        if not isinstance(usage, dict):
            return usage is None
        counts = {}
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = usage.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_TOKENS_REPORTED:
                return False
            counts[key] = value
        # Counts are cumulative (a later message_delta repeats and raises them): keep the largest.
        if "input_tokens" in counts:
            self._input = max(self._input or 0, counts["input_tokens"])
        if kind == "message_delta" and "output_tokens" in counts:
            self._output = max(self._output or 0, counts["output_tokens"])
        self._write = max(self._write, counts.get("cache_creation_input_tokens", 0))
        self._read = max(self._read, counts.get("cache_read_input_tokens", 0))
        return True
