"""LLM awareness, neutral ground for both directions: usage, streams, spend estimates, screening.

Why a package of its own: egress routes that call an LLM provider and ingress policies that front
one need the same facts (what a request may spend, what an answer used, whether a prompt passes),
and ``portcullis.ingress`` and ``portcullis.egress`` may not import each other. This package
imports neither, nor policies, admin or the CLI (an import-linter contract), and does no I/O: the
budgets it feeds live in ``portcullis.stores`` (``ReservationStore``).
"""

from portcullis.llm.estimate import EstimateRules, LlmRequest, SpendEstimate, estimate, parse_request
from portcullis.llm.prices import ModelPrice, PriceTable
from portcullis.llm.refusal import LlmReason, LlmRefusal
from portcullis.llm.screening import EXAMPLE_PATTERNS, Screened, ScreenRules, screen
from portcullis.llm.sse import SseEvent, SseEventTooLarge, SseParser
from portcullis.llm.stream_relay import LlmStream, StreamCut, StreamEnd
from portcullis.llm.stream_usage import StreamUsage, StreamUsageTracker
from portcullis.llm.usage import Provider, TokenUsage, usage_from_answer, usage_from_object

__all__ = [
    "EXAMPLE_PATTERNS", "EstimateRules", "LlmReason", "LlmRefusal", "LlmRequest", "LlmStream", "ModelPrice",
    "PriceTable", "Provider", "ScreenRules", "Screened", "SpendEstimate", "SseEvent", "SseEventTooLarge",
    "SseParser", "StreamCut", "StreamEnd", "StreamUsage", "StreamUsageTracker", "TokenUsage", "estimate",
    "parse_request", "screen", "usage_from_answer", "usage_from_object",
]
