"""Why an LLM call is refused before it is sent: one fixed reason code per rule, for the audit.

The codes are a closed set (``LlmReason``) so audit queries and metrics can count them; the
``detail`` says which rule or pattern (by index or name, never the prompt text, which may hold
personal data) refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LlmReason", "LlmRefusal"]


class LlmReason(StrEnum):
    BODY_INVALID = "llm.body_invalid"  # not one JSON object, or a field of the wrong type
    BODY_TOO_LARGE = "llm.body_too_large"
    UNKNOWN_MODEL = "llm.unknown_model"  # no price for the model and no default price
    OUTPUT_CAP = "llm.output_cap"  # max_tokens (or n x it) above the route's cap
    CONTROL_CHARS = "llm.control_chars"
    INVISIBLE_CHARS = "llm.invisible_chars"
    PATTERN = "llm.pattern"
    TOO_MANY_MESSAGES = "llm.too_many_messages"
    MESSAGE_TOO_LONG = "llm.message_too_long"
    PROMPT_TOO_LONG = "llm.prompt_too_long"


@dataclass(frozen=True, slots=True)
class LlmRefusal:
    """A refused request: the reason code and a detail safe for the audit (no prompt text)."""

    reason: LlmReason
    detail: str = ""

    @property
    def audit_reason(self) -> str:
        return f"{self.reason}:{self.detail}" if self.detail else str(self.reason)
