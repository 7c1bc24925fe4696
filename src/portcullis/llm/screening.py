"""Prompt screening and caps: control and invisible characters, message count and length, patterns.

Why: a prompt is text a model will obey, and some of it comes from people or documents the
workflow does not control. The gateway can cheaply refuse what is plainly malformed (control
characters, Unicode "tag" characters that smuggle instructions a human reviewer cannot see, bidi
overrides), cap what would exhaust a budget or a context window (message count, per-message and
total length), and refuse text matching patterns the operator lists.

What pattern screening can do: stop known phrasings verbatim, and their case and Unicode
compatibility variants (text is NFKC-normalised and matched case-insensitively). What it cannot
do: stop prompt injection. A paraphrase, a translation, a typo, an encoding (base64, leetspeak) or
an instruction inside a fetched document passes any fixed list, and the shipped list is an example
to adapt, not a protection. Treat model output as untrusted whatever screening says.

Where text is found: OpenAI chat ``messages[].content`` (a string or ``text`` parts), the Responses
API's ``input`` and ``instructions``, Anthropic's ``system`` and ``messages[].content`` blocks
(``tool_result`` content included), legacy ``prompt``. Every string under those fields is read
except values of keys that hold no prose (``type``, ``role``, ids, URLs, base64 ``data``).

What it refuses to do: run a pattern on unbounded text. Patterns are Python regular expressions
(backtracking), compiled once at load; every string is length-capped before any pattern runs
(``max_message_chars``, ``max_total_chars``), which bounds the time a badly written pattern can
take, and a pattern with nested repetition such as ``(a+)+`` is refused at load
(``config.egress.nested_repetition``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from portcullis.llm.refusal import LlmReason, LlmRefusal

__all__ = ["EXAMPLE_PATTERNS", "CharRule", "ScreenRules", "Screened", "screen"]

CharRule = Literal["refuse", "strip", "allow"]

# The example list: phrasings from the project's threat model, not a defence (see the docstring).
EXAMPLE_PATTERNS: tuple[str, ...] = (
    r"ignore\s+(?:all\s+)?previous\s+instructions",
    r"system\s+prompt",
    r"reveal\s+your\s+instructions",
)

MAX_DEPTH = 32  # no provider's message format nests deeper; the rewrite below recurses this far at most
PROMPT_FIELDS = ("messages", "system", "input", "instructions", "prompt")
_SKIP_KEYS = frozenset({"type", "role", "id", "tool_call_id", "tool_use_id", "media_type", "detail", "url",
                        "image_url", "data", "file_id", "file_data", "cache_control", "signature", "name"})
# C0 controls but TAB, LF and CR; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode tag characters (invisible ASCII look-alikes used to smuggle instructions) and bidi
# embeddings, overrides and isolates (text that reads differently than it is stored).
_INVISIBLE = re.compile("[\U000e0000-\U000e007f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True, slots=True)
class ScreenRules:
    """One route's screening rules, built from config at load (patterns compiled here, once)."""

    control_chars: CharRule = "refuse"
    invisible_chars: CharRule = "refuse"
    patterns: tuple[re.Pattern[str], ...] = ()
    max_messages: int | None = None
    max_message_chars: int | None = None
    max_total_chars: int | None = None

    @classmethod
    def compile(cls, patterns: Sequence[str], *, case_sensitive: bool = False, **caps: Any) -> ScreenRules:
        """Rules with ``patterns`` compiled (``re.error`` for a bad one: a config error at load)."""
        flags = 0 if case_sensitive else re.IGNORECASE
        return cls(patterns=tuple(re.compile(p, flags) for p in patterns), **caps)


@dataclass(frozen=True, slots=True)
class Screened:
    """A request that passed. ``body`` is the rewritten body when characters were stripped, else None."""

    body: Mapping[str, Any] | None
    stripped: int  # characters removed


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages: list[Any] = []
    for field in ("messages", "input"):
        value = body.get(field)
        if isinstance(value, list):
            messages.extend(value)
    return messages


class _TooDeep(Exception):
    pass


def _strings(value: Any) -> Iterator[str]:
    """Every prose string under ``value``, in order; ``_TooDeep`` past ``MAX_DEPTH`` levels."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        if depth >= MAX_DEPTH and isinstance(item, list | dict):
            raise _TooDeep
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in reversed(item))
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for k, v in reversed(item.items()) if k not in _SKIP_KEYS)


def _rewrite(value: Any, clean: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_rewrite(v, clean) for v in value]
    if isinstance(value, dict):
        return {k: v if k in _SKIP_KEYS else _rewrite(v, clean) for k, v in value.items()}
    return value


def screen(body: Mapping[str, Any], rules: ScreenRules) -> Screened | LlmRefusal:
    """Check one request body against ``rules``: the first rule broken refuses it."""
    try:
        return _screen(body, rules)
    except _TooDeep:
        return LlmRefusal(LlmReason.BODY_INVALID, "depth")


def _screen(body: Mapping[str, Any], rules: ScreenRules) -> Screened | LlmRefusal:
    if rules.max_messages is not None and len(_messages(body)) > rules.max_messages:
        return LlmRefusal(LlmReason.TOO_MANY_MESSAGES, str(rules.max_messages))
    total = 0
    strip = rules.control_chars == "strip" or rules.invisible_chars == "strip"
    stripped = 0
    texts = []
    for field in PROMPT_FIELDS:
        for text in _strings(body.get(field)):
            if rules.max_message_chars is not None and len(text) > rules.max_message_chars:
                return LlmRefusal(LlmReason.MESSAGE_TOO_LONG, str(rules.max_message_chars))
            total += len(text)
            if rules.max_total_chars is not None and total > rules.max_total_chars:
                return LlmRefusal(LlmReason.PROMPT_TOO_LONG, str(rules.max_total_chars))
            if rules.control_chars != "allow" and _CONTROL.search(text):
                if rules.control_chars == "refuse":
                    return LlmRefusal(LlmReason.CONTROL_CHARS)
                before = len(text)
                text = _CONTROL.sub("", text)
                stripped += before - len(text)
            if rules.invisible_chars != "allow" and _INVISIBLE.search(text):
                if rules.invisible_chars == "refuse":
                    return LlmRefusal(LlmReason.INVISIBLE_CHARS)
                before = len(text)
                text = _INVISIBLE.sub("", text)
                stripped += before - len(text)
            texts.append(text)
    if rules.patterns:
        for text in texts:
            normal = unicodedata.normalize("NFKC", text)
            for index, pattern in enumerate(rules.patterns):
                if pattern.search(normal):
                    return LlmRefusal(LlmReason.PATTERN, str(index))
    if strip and stripped:
        return Screened(_strip_body(body, rules), stripped)
    return Screened(None, 0)


def _strip_body(body: Mapping[str, Any], rules: ScreenRules) -> dict[str, Any]:
    def clean(text: str) -> str:
        if rules.control_chars == "strip":
            text = _CONTROL.sub("", text)
        if rules.invisible_chars == "strip":
            text = _INVISIBLE.sub("", text)
        return text
    return {k: _rewrite(v, clean) if k in PROMPT_FIELDS else v for k, v in body.items()}
