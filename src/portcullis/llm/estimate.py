"""The most an LLM request can spend, worked out before it is sent: tokens in, tokens out, cost.

Why: a budget that is charged after the answer overshoots under concurrency (every parallel call
passes the check before any is charged). The gateway instead reserves the most a call can spend
and settles to the provider's reported usage afterwards; this module computes that most.

- **The body** is parsed once, after a size check (``parse_request``); screening reads the same
  parsed body. Duplicate keys keep the last value, as the providers' JSON parsers do.
- **Output tokens**: the largest of ``max_tokens``, ``max_completion_tokens`` and
  ``max_output_tokens`` in the body, times ``n`` (OpenAI returns ``n`` choices, each up to the
  cap). A body with none gets the route's ``default_max_output_tokens`` and
  ``SpendEstimate.output_cap_added`` tells the caller to write that cap into the request, so the
  provider enforces the number reserved. A request asking more than the route's
  ``max_output_tokens`` is refused.
- **Input tokens**, without a tokenizer (none can be downloaded here, and a tokenizer per model
  family would be a dependency per provider): rule ``utf8_bytes`` (the default) counts one token
  per byte of the request body. Byte-level BPE tokenizers (OpenAI's, Anthropic's) never make more
  tokens than bytes of text, so for text this is an upper bound, about 4x the real count for
  English. Rule ``chars_div_4`` (``ceil(characters / 4)``) is near the real count for English
  and low for other scripts and for code; when the real count is higher the settlement charges
  it, so budgets can then end slightly over their limit. Neither rule sees what an image, audio or
  file part referenced by URL costs.
- **Cost**: tokens x the model's price (``prices.PriceTable``); a model with no price and no
  default price is refused. A route without a price table counts tokens only (cost 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from portcullis.llm.prices import ModelPrice, PriceTable
from portcullis.llm.refusal import LlmReason, LlmRefusal
from portcullis.llm.usage import MAX_TOKENS_REPORTED, Provider

__all__ = ["OUTPUT_FIELDS", "EstimateRules", "LlmRequest", "PromptRule", "SpendEstimate", "estimate", "parse_request"]

PromptRule = Literal["utf8_bytes", "chars_div_4"]
OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_MAX_CHOICES = 128  # OpenAI's own limit on n


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """A request body, parsed once: what estimation and screening read."""

    body: Mapping[str, Any]
    size: int  # bytes of the body as sent
    chars: int  # characters of the body
    model: str | None
    stream: bool
    output_tokens: int | None  # the largest output cap the body asks, per choice; None: none asked
    choices: int


@dataclass(frozen=True, slots=True)
class EstimateRules:
    """One route's estimation rules, built from its ``llm:`` config at load."""

    provider: Provider
    default_max_output_tokens: int
    max_output_tokens: int | None = None  # the most a request may ask (x n); None: no cap beyond the provider's
    prompt_rule: PromptRule = "utf8_bytes"
    prices: PriceTable | None = None  # None: tokens only, no cost


@dataclass(frozen=True, slots=True)
class SpendEstimate:
    """The most a request can spend. ``cost_micros`` in micro-units of currency (0 without prices)."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cost_micros: int
    price: ModelPrice | None
    output_cap_added: int | None  # write this as the body's output cap: the body had none

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TOKENS_REPORTED:
        return None
    return int(value)


def parse_request(raw: bytes, *, max_bytes: int) -> LlmRequest | LlmRefusal:
    """Parse an LLM request body (a JSON object) of at most ``max_bytes``."""
    if len(raw) > max_bytes:
        return LlmRefusal(LlmReason.BODY_TOO_LARGE)
    try:
        body = orjson.loads(raw)
        chars = len(raw.decode("utf-8"))
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return LlmRefusal(LlmReason.BODY_INVALID, "json")
    if not isinstance(body, dict):
        return LlmRefusal(LlmReason.BODY_INVALID, "json")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return LlmRefusal(LlmReason.BODY_INVALID, "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        return LlmRefusal(LlmReason.BODY_INVALID, "stream")
    asked: list[int] = []
    for field in OUTPUT_FIELDS:
        if body.get(field) is not None:
            value = _positive_int(body[field])
            if value is None:
                return LlmRefusal(LlmReason.BODY_INVALID, field)
            asked.append(value)
    choices = 1
    if body.get("n") is not None:
        n = _positive_int(body["n"])
        if n is None or n > _MAX_CHOICES:
            return LlmRefusal(LlmReason.BODY_INVALID, "n")
        choices = n
    return LlmRequest(body, len(raw), chars, model, stream, max(asked) if asked else None, choices)


def estimate(request: LlmRequest, rules: EstimateRules) -> SpendEstimate | LlmRefusal:
    """The most ``request`` can spend under ``rules``, or why it is refused."""
    per_choice = request.output_tokens
    added = None
    if per_choice is None:
        per_choice = added = rules.default_max_output_tokens
    output = per_choice * request.choices
    if rules.max_output_tokens is not None and output > rules.max_output_tokens:
        return LlmRefusal(LlmReason.OUTPUT_CAP, str(rules.max_output_tokens))
    prompt = request.size if rules.prompt_rule == "utf8_bytes" else -(-request.chars // 4)
    price = None
    cost = 0
    if rules.prices is not None:
        price = rules.prices.price(request.model)
        if price is None:
            return LlmRefusal(LlmReason.UNKNOWN_MODEL)
        cost = price.most_micros(prompt, output)
    return SpendEstimate(request.model, prompt, output, cost, price, added)
