"""Token usage as a provider reports it, read from a JSON answer or a streamed event.

Why one module: OpenAI (chat completions: ``usage.prompt_tokens`` / ``completion_tokens``; the
Responses API: ``usage.input_tokens`` / ``output_tokens``) and Anthropic (``usage.input_tokens`` /
``output_tokens`` plus cache counters) spell usage three ways, and budgets must settle against one
shape: ``TokenUsage``.

``input_tokens`` is every prompt token the call was billed for. OpenAI's ``prompt_tokens`` already
includes its cached tokens (``prompt_tokens_details.cached_tokens``, a subset, kept in
``cache_read_tokens``). Anthropic reports ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` *beside* ``input_tokens``, so they are added in here; both are kept as
subsets so a price table can price them apart.

What it refuses to do: guess. A ``usage`` object with a missing, negative, non-integer or absurd
count gives ``None`` (usage unknown), and the caller then charges the whole reservation; an answer
never makes a budget smaller than a well-formed one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MAX_TOKENS_REPORTED", "Provider", "TokenUsage", "usage_from_answer", "usage_from_object"]

Provider = Literal["openai", "anthropic"]

MAX_TOKENS_REPORTED = 1 << 40  # a count above this is not a real answer's: treated as malformed


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens one call used. ``cache_read_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(obj: Mapping[str, Any], key: str, *, required: bool) -> int | None:
    """A token count, or None when absent (and not required) or malformed (-1 then)."""
    value = obj.get(key)
    if value is None:
        return -1 if required else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_REPORTED:
        return -1
    return int(value)


def usage_from_object(provider: Provider, usage: Any) -> TokenUsage | None:
    """The ``usage`` object of an answer (or a stream's usage-bearing event) as ``TokenUsage``; None if malformed."""
    if not isinstance(usage, Mapping):
        return None
    if provider == "anthropic":
        return _anthropic(usage)
    return _openai(usage)


def _openai(usage: Mapping[str, Any]) -> TokenUsage | None:
    if "prompt_tokens" in usage:  # chat completions (and legacy completions)
        prompt = _count(usage, "prompt_tokens", required=True)
        completion = _count(usage, "completion_tokens", required=True)
        if "completion_tokens" not in usage and prompt is not None and prompt >= 0 \
                and usage.get("total_tokens") == prompt:
            completion = 0  # embeddings: prompt and total only, and nothing generated
        details = usage.get("prompt_tokens_details")
    else:  # the Responses API
        prompt = _count(usage, "input_tokens", required=True)
        completion = _count(usage, "output_tokens", required=True)
        details = usage.get("input_tokens_details")
    cached = _count(details, "cached_tokens", required=False) if isinstance(details, Mapping) else None
    if prompt is None or completion is None or prompt < 0 or completion < 0 or (cached is not None and cached < 0):
        return None
    return TokenUsage(prompt, completion, cache_read_tokens=min(cached or 0, prompt))


def _anthropic(usage: Mapping[str, Any]) -> TokenUsage | None:
    fresh = _count(usage, "input_tokens", required=True)
    output = _count(usage, "output_tokens", required=True)
    write = _count(usage, "cache_creation_input_tokens", required=False)
    read = _count(usage, "cache_read_input_tokens", required=False)
    counts = (fresh, output, write, read)
    if any(c is not None and c < 0 for c in counts) or fresh is None or output is None:
        return None
    return TokenUsage(fresh + (write or 0) + (read or 0), output, cache_read_tokens=read or 0,
                      cache_write_tokens=write or 0)


def usage_from_answer(provider: Provider, answer: Any) -> TokenUsage | None:
    """The usage of a whole (non-streamed) JSON answer: its top-level ``usage`` object; None if absent or bad."""
    if not isinstance(answer, Mapping):
        return None
    return usage_from_object(provider, answer.get("usage"))
