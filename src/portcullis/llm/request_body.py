"""The body an LLM route sends: the parsed request, re-serialised, with the output cap it reserved.

Why re-serialise rather than forward the caller's bytes: the gateway estimated and screened the
document as orjson read it. A body with duplicate keys reads differently in parsers that keep the
first value than in those that keep the last (CVE-2017-12635 is that class of bug); sending the
gateway's own serialisation of what it checked leaves the provider nothing else to read.

Why add a cap: a body without one lets the provider generate up to the model's own maximum, while
the gateway reserved ``default_max_output_tokens``. Writing that number into the request makes
the provider enforce what was reserved. The field is the one each API reads: Anthropic
``max_tokens``; OpenAI chat ``max_completion_tokens`` (``max_tokens`` is refused by reasoning
models), the Responses API (a body with ``input``) ``max_output_tokens``, legacy completions
(``prompt``) ``max_tokens``.

``add_stream_usage``: an OpenAI chat stream reports usage only when asked
(``stream_options.include_usage``); a route may ask on the caller's behalf, and the caller then
receives one more final chunk, with an empty ``choices`` list and the usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from portcullis.llm.estimate import LlmRequest, SpendEstimate
from portcullis.llm.usage import Provider

__all__ = ["cap_field", "outgoing_body"]


def cap_field(provider: Provider, body: Mapping[str, Any]) -> str:
    """The output-cap field the API of ``body`` reads."""
    if provider == "anthropic":
        return "max_tokens"
    if "messages" in body:
        return "max_completion_tokens"
    if "input" in body:
        return "max_output_tokens"
    return "max_tokens"


def outgoing_body(request: LlmRequest, spend: SpendEstimate, provider: Provider, *,
                  screened: Mapping[str, Any] | None = None, add_stream_usage: bool = False) -> bytes:
    """The body to send: ``screened`` (characters stripped) or the request's, with the reserved cap."""
    body = dict(screened if screened is not None else request.body)
    if spend.output_cap_added is not None:
        body[cap_field(provider, body)] = spend.output_cap_added
    if add_stream_usage and provider == "openai" and request.stream and "messages" in body:
        options = body.get("stream_options")
        if options is None or isinstance(options, dict):
            body["stream_options"] = {**(options or {}), "include_usage": True}
    return orjson.dumps(body)
