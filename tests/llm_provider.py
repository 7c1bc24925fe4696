"""A fake LLM provider on 127.0.0.1: OpenAI chat completions and Anthropic messages, JSON or streamed.

Why: LLM routes are tested against a real HTTP server speaking the providers' wire formats (JSON
answers with ``usage``; server-sent event streams with OpenAI's ``include_usage`` final chunk and
Anthropic's ``message_start`` / ``message_delta``), so the gateway's parsing, relaying and
settlement meet real bytes on a real socket, and the providers' own SDKs can talk to it.

Knobs (``FakeProvider`` fields): the usage it reports, how many content chunks a stream has, a
stream that breaks (the connection is dropped) after N chunks, a stream that stalls after N chunks
(until ``release`` is set), and no usage at all. ``requests`` records every body received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from portcullis.testing.loopback import serve_app

__all__ = ["FakeProvider", "fake_provider"]


@dataclass
class FakeProvider:
    input_tokens: int = 12
    output_tokens: int = 5
    chunks: int = 5
    break_after: int | None = None  # drop the connection after this many content chunks
    stall_after: int | None = None  # wait for ``release`` after this many content chunks
    omit_usage: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        return app

    async def _stream(self, request: web.Request, events: list[bytes], tail: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for i, event in enumerate(events):
            if self.break_after is not None and i == self.break_after:
                assert request.transport is not None
                request.transport.abort()  # the provider's connection dies mid-answer
                return response
            if self.stall_after is not None and i == self.stall_after:
                await self.release.wait()
            await response.write(event)
        for event in tail:
            await response.write(event)
        await response.write_eof()
        return response

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        usage = {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                 "total_tokens": self.input_tokens + self.output_tokens}
        base = {"id": "chatcmpl-1", "created": 1_700_000_000, "model": body.get("model", "gpt-4o")}
        if not body.get("stream"):
            answer = {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}]}
            if not self.omit_usage:
                answer["usage"] = usage
            return web.json_response(answer, dumps=lambda v: orjson.dumps(v).decode())
        include = bool((body.get("stream_options") or {}).get("include_usage")) and not self.omit_usage

        def chunk(choices: list[Any], usage_value: Any) -> bytes:
            data = {**base, "object": "chat.completion.chunk", "choices": choices}
            if include:
                data["usage"] = usage_value
            return b"data: " + orjson.dumps(data) + b"\n\n"

        events = [chunk([{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}], None)
                  for i in range(self.chunks)]
        tail = [chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], None)]
        if include:
            tail.append(chunk([], usage))
        tail.append(b"data: [DONE]\n\n")
        return await self._stream(request, events, tail)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(body)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model", "claude"),
                   "stop_reason": None, "stop_sequence": None}
        if not body.get("stream"):
            answer = {**message, "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn"}
            if not self.omit_usage:
                answer["usage"] = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
            return web.json_response(answer, dumps=lambda v: orjson.dumps(v).decode())

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"

        start_usage = {} if self.omit_usage else {"usage": {"input_tokens": self.input_tokens, "output_tokens": 1}}
        events = [event("message_start", {"message": {**message, "content": [], **start_usage}}),
                  event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
        events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"w{i} "}})
                   for i in range(self.chunks)]
        end_usage = {} if self.omit_usage else {"usage": {"output_tokens": self.output_tokens}}
        tail = [event("content_block_stop", {"index": 0}),
                event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, **end_usage}),
                event("message_stop", {})]
        return await self._stream(request, events, tail)


@asynccontextmanager
async def fake_provider(**knobs: Any) -> AsyncIterator[FakeProvider]:
    """A ``FakeProvider`` serving on 127.0.0.1 until the block ends."""
    provider = FakeProvider(**knobs)
    async with serve_app(provider.app()) as port:
        provider.port = port
        yield provider
