"""One LLM route's rules, built once at config load: estimation, screening, and its budget lines.

Why here: the ``llm:`` block of an egress route (``config.egress.EgressLlmConfig``) says what a
call may spend and what a prompt may hold; this turns it into the frozen objects the hot path
uses (compiled patterns, integer prices) and plans which budget lines a call reserves from. The
same object serves an ingress policy that fronts an LLM.

Budget lines are per route and keyed by subject: ``llm:<route>:x:<workflow>:<execution>:tokens``,
``…:w:<workflow>:tokens:d``, ``…:u:<user>:cost:d``, ``…:r:tokens:m`` and so on. Token lines are
charged input plus output tokens; cost lines micro-units of currency. A reservation expires
``RESERVATION_SLACK_S`` after the longest a call may last (the route's total timeout or its stream
duration, whichever is longer), so a crashed instance's holds end soon after its calls would have.

A line's name (in a 429, the audit, ``X-Budget-Remaining`` and the budget gauges) is its config
key with ``llm_`` before it (``llm_execution_tokens``; the route-wide ones ``llm_route_…``): the
call budgets have an ``execution_cost`` and a ``user_cost_per_day`` of their own, and one name
must never stand for two budgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.config.egress import EgressLlmConfig, LlmPriceConfig, LlmScreeningConfig
from portcullis.llm.estimate import EstimateRules, SpendEstimate
from portcullis.llm.prices import MICRO, ModelPrice, PriceTable
from portcullis.llm.screening import ScreenRules
from portcullis.llm.usage import Provider, TokenUsage
from portcullis.stores.base import BudgetLine

__all__ = ["RESERVATION_SLACK_S", "LlmCaller", "LlmRoute", "LlmSpend", "screen_rules"]

RESERVATION_SLACK_S = 60.0
_MINUTE = 60.0
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class LlmCaller:
    """Who a call is for (the egress call context's names)."""

    execution_id: str
    workflow_id: str
    user: str


@dataclass(frozen=True, slots=True)
class LlmSpend:
    """What a call spends, in each unit a budget line counts."""

    tokens: int
    cost_micros: int

    @classmethod
    def of_estimate(cls, spend: SpendEstimate) -> LlmSpend:
        return cls(spend.total_tokens, spend.cost_micros)

    @classmethod
    def of_usage(cls, usage: TokenUsage, price: ModelPrice | None) -> LlmSpend:
        return cls(usage.total_tokens, price.cost_micros(usage) if price is not None else 0)


@dataclass(frozen=True, slots=True)
class _LineRule:
    name: str
    subject: str  # "x", "w", "u" or "r"
    unit: str  # "tokens" or "cost"
    limit: int
    window_s: float | None
    suffix: str


def screen_rules(config: LlmScreeningConfig) -> ScreenRules:
    """Screening rules from an ``llm.screening`` (or an ingress route's ``prompt_screening``) block."""
    return ScreenRules.compile(
        config.patterns, case_sensitive=config.case_sensitive, control_chars=config.control_chars,
        invisible_chars=config.invisible_chars, max_messages=config.max_messages,
        max_message_chars=config.max_message_chars, max_total_chars=config.max_total_chars)


def _price(config: LlmPriceConfig) -> ModelPrice:
    return ModelPrice.per_million(config.input_per_million, config.output_per_million,
                                  cache_read_per_million=config.cache_read_per_million,
                                  cache_write_per_million=config.cache_write_per_million)


@dataclass(frozen=True, slots=True)
class LlmRoute:
    """Everything the data path needs to know about one LLM route."""

    name: str
    provider: Provider
    estimate_rules: EstimateRules
    screen_rules: ScreenRules | None
    max_request_bytes: int
    max_stream_bytes: int
    max_stream_duration_s: float
    max_event_chars: int
    reservation_ttl_s: float
    add_stream_usage: bool
    _lines: tuple[_LineRule, ...]

    @classmethod
    def build(cls, name: str, config: EgressLlmConfig, *, total_timeout_s: float) -> LlmRoute:
        prices = None
        if config.prices or config.default_price is not None:
            prices = PriceTable.build({model: _price(p) for model, p in config.prices.items()},
                                      _price(config.default_price) if config.default_price is not None else None)
        screening = None if config.screening is None else screen_rules(config.screening)
        b = config.budgets
        rules = [
            ("llm_execution_tokens", "x", "tokens", b.execution_tokens, b.execution_window, "tokens"),
            ("llm_execution_cost", "x", "cost", b.execution_cost, b.execution_window, "cost"),
            ("llm_workflow_tokens_per_day", "w", "tokens", b.workflow_tokens_per_day, _DAY, "tokens:d"),
            ("llm_workflow_cost_per_day", "w", "cost", b.workflow_cost_per_day, _DAY, "cost:d"),
            ("llm_user_tokens_per_day", "u", "tokens", b.user_tokens_per_day, _DAY, "tokens:d"),
            ("llm_user_cost_per_day", "u", "cost", b.user_cost_per_day, _DAY, "cost:d"),
            ("llm_route_tokens_per_minute", "r", "tokens", b.tokens_per_minute, _MINUTE, "tokens:m"),
            ("llm_route_tokens_per_day", "r", "tokens", b.tokens_per_day, _DAY, "tokens:d"),
            ("llm_route_cost_per_day", "r", "cost", b.cost_per_day, _DAY, "cost:d"),
        ]
        lines = tuple(
            _LineRule(n, subject, unit, round(limit * MICRO) if unit == "cost" else int(limit), window, suffix)
            for n, subject, unit, limit, window, suffix in rules if limit is not None
        )
        return cls(
            name=name, provider=config.provider,
            estimate_rules=EstimateRules(provider=config.provider,
                                         default_max_output_tokens=config.default_max_output_tokens,
                                         max_output_tokens=config.max_output_tokens,
                                         prompt_rule=config.prompt_estimate, prices=prices),
            screen_rules=screening, max_request_bytes=config.max_request_bytes,
            max_stream_bytes=config.max_stream_bytes, max_stream_duration_s=config.max_stream_duration,
            max_event_chars=config.max_event_bytes,
            reservation_ttl_s=max(total_timeout_s, config.max_stream_duration) + RESERVATION_SLACK_S,
            add_stream_usage=config.add_stream_usage, _lines=lines,
        )

    def _key(self, rule: _LineRule, caller: LlmCaller) -> str:
        subject = {"x": f"x:{caller.workflow_id}:{caller.execution_id}", "w": f"w:{caller.workflow_id}",
                   "u": f"u:{caller.user}", "r": "r"}[rule.subject]
        return f"llm:{self.name}:{subject}:{rule.suffix}"

    def lines(self, caller: LlmCaller, spend: LlmSpend) -> list[BudgetLine]:
        """The budget lines a call reserves ``spend`` from (empty: the route has no budgets)."""
        return [BudgetLine(r.name, self._key(r, caller), r.limit, r.window_s,
                           spend.tokens if r.unit == "tokens" else spend.cost_micros) for r in self._lines]

    def amounts(self, lines: Sequence[BudgetLine], spend: LlmSpend) -> list[int]:
        """What each of ``lines`` is charged for ``spend`` (the settlement's ``actual``)."""
        units = {r.name: r.unit for r in self._lines}
        return [spend.tokens if units[line.name] == "tokens" else spend.cost_micros for line in lines]

    def shown(self, line: BudgetLine, left: int) -> float:
        """What is left of ``line`` as an operator reads it: tokens, or currency units for costs."""
        return left / MICRO if self.is_cost(line.name) else float(left)

    def subject_keys(self, *, workflow_id: str | None = None, execution_id: str | None = None,
                     user: str | None = None) -> list[str]:
        """The lines an operator's reset of one execution (with its workflow), workflow or user clears."""
        if execution_id is not None:
            caller, subject = LlmCaller(execution_id, workflow_id or "", ""), "x"
        elif workflow_id is not None:
            caller, subject = LlmCaller("", workflow_id, ""), "w"
        elif user is not None:
            caller, subject = LlmCaller("", "", user), "u"
        else:
            return []
        return [self._key(r, caller) for r in self._lines if r.subject == subject]

    def is_cost(self, name: str) -> bool:
        """Whether the line named ``name`` counts money (micro-units) rather than tokens."""
        return any(r.name == name and r.unit == "cost" for r in self._lines)
