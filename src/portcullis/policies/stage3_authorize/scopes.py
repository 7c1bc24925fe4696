"""Authorization: route scopes (all-of, any-of), roles, and rules (attribute equality or CEL expressions).

Why attribute rules: most broken-object-level-authorization bugs (OWASP API1) are a path parameter
the caller does not own. ``{user_id}`` must equal the token's ``sub`` is a one-line rule here
instead of a check every backend must remember. Expression rules (``portcullis.expressions``) say
the rest: run-mode caps, office hours, an address range per consumer, claims and roles together.

Rules that read the JSON body run later, once the body is read and checked
(``stage5_validate/body_rules``); the others run here, before any rate limit is spent.

Refusals are 403 ``authz.forbidden``; which scope or rule failed goes to the audit only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

from portcullis.clock import Clock
from portcullis.config.model import AttributeRule, AuthorizeConfig, ExpressionRule
from portcullis.errors import ErrorCode
from portcullis.expressions import CompiledExpression, compile_expression, principal_variables, request_time
from portcullis.http.context import RequestContext
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["AuthorizePolicy", "CelRule", "RuleInputs", "compile_rules"]

AMBIGUOUS = "forbidden:rule:ambiguous_input"


class Rule(Protocol):
    name: str

    def allows(self, ctx: RequestContext, inputs: RuleInputs) -> bool: ...


class _Equality:
    """``{param, claim}``: a path parameter equals a principal attribute (no CEL: a dict lookup)."""

    def __init__(self, rule: AttributeRule) -> None:
        self.name = rule.param
        self._param, self._claim = rule.param, rule.claim

    def allows(self, ctx: RequestContext, inputs: RuleInputs) -> bool:
        principal = ctx.principal
        assert principal is not None
        expected = principal.consumer_id if self._claim == "consumer_id" else principal.claims.get(self._claim)
        actual = ctx.params.get(self._param)
        return expected is not None and actual is not None and str(expected) == actual


class CelRule:
    """``{name, when}``: a CEL expression over the request, the principal and the context."""

    def __init__(self, name: str, expression: CompiledExpression) -> None:
        self.name = name
        self.expression = expression

    def allows(self, ctx: RequestContext, inputs: RuleInputs) -> bool:
        variables = inputs.variables(ctx)
        return variables is not None and self.expression.allows(variables)


class RuleInputs:
    """What a route's rules may read, built once per request and only when a CEL rule runs."""

    def __init__(self, headers: Sequence[str], query: Sequence[str], clock: Clock) -> None:
        self._clock = clock
        self._headers = tuple((name, name.encode("latin-1")) for name in headers)
        self._query = frozenset(query)
        self._cache: tuple[RequestContext, dict[str, Any] | None] | None = None

    def variables(self, ctx: RequestContext) -> dict[str, Any] | None:
        """The rule variables for ``ctx``, or None when a listed header or query parameter came twice.
        Built once per request: rules run without an await between them, so the last request's
        variables are still this one's when the next rule asks."""
        cached = self._cache
        if cached is not None and cached[0] is ctx:
            return cached[1]
        built = self._build(ctx)
        self._cache = (ctx, built)
        return built

    def _build(self, ctx: RequestContext) -> dict[str, Any] | None:
        headers: dict[str, str] = {}
        for name, raw in self._headers:
            values = [v for k, v in ctx.headers if k == raw]
            if len(values) > 1:
                return None
            if values:
                headers[name] = values[0].decode("latin-1")
        query: dict[str, str] = {}
        if self._query and ctx.query:
            for key, value in parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True, encoding="utf-8",
                                        errors="replace"):
                if key in self._query:
                    if key in query:
                        return None
                    query[key] = value
        principal = ctx.principal
        assert principal is not None
        return {
            "request": {"method": ctx.method, "path": ctx.path, "host": ctx.host or "", "scheme": ctx.scheme,
                        "headers": headers, "query": query},
            "params": dict(ctx.params),
            "principal": principal_variables(principal),
            "context": {"client_ip": ctx.client_ip, "route": ctx.route_name or ""},
            "now": request_time(self._clock.wall()),
        }


def compile_rules(config: AuthorizeConfig) -> tuple[list[Rule], list[CelRule]]:
    """The route's rules, split: those that run at authorization, and those that need the body."""
    now: list[Rule] = []
    later: list[CelRule] = []
    for rule in config.rules:
        if isinstance(rule, ExpressionRule):
            compiled = compile_expression(rule.when)
            (later if compiled.uses_body else now).append(CelRule(rule.name, compiled))
        else:
            now.append(_Equality(rule))
    return now, later


class AuthorizePolicy(PolicyBase):
    name = "authz.scopes"
    stage = Stage.AUTHORIZE

    def __init__(self, config: AuthorizeConfig, rules: Sequence[Rule], inputs: RuleInputs) -> None:
        """``rules``: those of ``compile_rules(config)`` that run here (the first list)."""
        self._all = frozenset(config.scopes_all)
        self._any = frozenset(config.scopes_any)
        self._roles = frozenset(config.roles_any)
        self._rules = tuple(rules)
        self._inputs = inputs
        needed = sorted(self._all | self._any)
        challenge = f'Bearer realm="portcullis", error="insufficient_scope", scope="{" ".join(needed)}"'
        self._challenge = ((b"www-authenticate", challenge.encode()),) if needed else ()

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        principal = ctx.principal
        if principal is None:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:no_principal")
        scopes = principal.scopes
        if self._all and not self._all <= scopes:
            missing = ",".join(sorted(self._all - scopes))
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, f"forbidden:scope:{missing}", self._challenge)
        if self._any and not self._any & scopes:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:scope_any", self._challenge)
        if self._roles and not self._roles & principal.roles:
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, "forbidden:role")
        return check_rules(self._rules, ctx, self._inputs)


def check_rules(rules: Sequence[Rule], ctx: RequestContext, inputs: RuleInputs) -> Reject | None:
    """The first rule that does not hold, as a refusal; an ambiguous input refuses every CEL rule."""
    for rule in rules:
        if not rule.allows(ctx, inputs):
            if isinstance(rule, CelRule) and inputs.variables(ctx) is None:
                return Reject(ErrorCode.AUTHZ_FORBIDDEN, AMBIGUOUS)
            return Reject(ErrorCode.AUTHZ_FORBIDDEN, f"forbidden:rule:{rule.name}")
    return None
