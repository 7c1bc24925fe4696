"""Run modes of an egress call: ``validate_only``, ``test_run`` and ``full_run``, and who may use which.

Why (seed 001, run-mode caps; its RBAC gives ``workflow:run:test`` to everyone who builds and
``workflow:run:full`` only to some): a workflow in development or under review should not spend a
provider's money or quota, and a test should not spend the budget a production run needs.

- ``validate_only``: nothing is sent and nothing is spent. The call passes every check it would
  meet (route, destination, breaker, limits, budgets, lifetime, run-mode permission) without
  consuming anything, and the answer is a 200 JSON document saying what would have happened:
  the route, the URL (without its query), which limits and budgets it would spend and whether
  they fit, and the headers and secrets the gateway would inject, **by name only**.
- ``test_run``: accepted only by routes marked ``test_run: true``; such calls spend their own
  budget counters (same caps, separate keys), so tests cannot exhaust a production budget and
  production cannot starve tests. Rate limits stay shared: they protect the provider, and a test
  call reaches the same provider.
- ``full_run`` (the default, unless ``egress.run_modes.default`` says ``test_run``): when the route
  (or ``egress.run_modes``) has ``full_run_requires``, the caller needs one of its scopes, one of
  its roles, and every CEL rule to hold (the rule language of ingress authorization, with the
  egress call's context).

The mode comes from the ``X-Run-Mode`` header at the HTTP and proxy doors and from the context of
the httpx transport; it is never forwarded to the provider. An unknown or repeated value is
refused (400): a typo must not silently become a full run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from portcullis.config.egress import EgressRouteConfig, EgressRunModesConfig, FullRunRequirement
from portcullis.egress.budgets import CallContext
from portcullis.errors import ErrorCode, MalformedRequest, RunModeDenied
from portcullis.expressions import CompiledExpression, compile_expression, principal_variables, request_time
from portcullis.identity.principal import Principal

__all__ = [
    "RUN_MODE_HEADER",
    "TEST_RUN_KEY_PREFIX",
    "DryRunReport",
    "PlannedCheck",
    "PlannedSpend",
    "RouteRunModes",
    "RunMode",
    "RunModeCall",
    "RunModeDecision",
    "parse_run_mode",
]

RUN_MODE_HEADER = "x-run-mode"
TEST_RUN_KEY_PREFIX = "t:"  # test_run budget counters live beside, never inside, the full runs' ones


class RunMode(StrEnum):
    VALIDATE_ONLY = "validate_only"
    TEST_RUN = "test_run"
    FULL_RUN = "full_run"


def parse_run_mode(values: Sequence[str], default: RunMode = RunMode.FULL_RUN) -> RunMode:
    """The mode named by the caller's ``X-Run-Mode`` values (none: ``default``). Case and surrounding
    blanks are forgiven; anything else, or two values, is ``MalformedRequest`` (``run_mode_invalid``)."""
    if not values:
        return default
    if len(values) > 1:
        raise MalformedRequest("run_mode_invalid")
    try:
        return RunMode(values[0].strip().lower())
    except ValueError:
        raise MalformedRequest("run_mode_invalid") from None


@dataclass(frozen=True, slots=True)
class RunModeCall:
    """What a ``full_run`` requirement may read about the call (the door fills it)."""

    route: str
    method: str
    path: str  # relative to the route's base URL, without the query
    host: str  # the provider's host
    scheme: str
    workflow_id: str
    execution_id: str
    user: str
    client_ip: str = "in-process"


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class RunModeDecision:
    """The mode a call runs in, and what follows from it."""

    mode: RunMode
    budget_prefix: str  # prefix of the budget counter keys this call spends from ("" for full runs)
    full_run_permitted: bool  # for a validate_only answer: would the same call be allowed as a full run?

    @property
    def sends(self) -> bool:
        """False for ``validate_only``: nothing leaves the gateway."""
        return self.mode is not RunMode.VALIDATE_ONLY

    def budget_context(self, ctx: CallContext) -> CallContext:
        """The context whose counters this call spends: a test run's workflow and user are prefixed, so
        every budget key (``x:<workflow>:…``, ``w:<workflow>:…``, ``u:<user>:…``) is its own, with the
        same caps, and an operator resets them as workflow ``t:<id>`` or user ``t:<name>``."""
        if not self.budget_prefix:
            return ctx
        return CallContext(execution_id=ctx.execution_id, workflow_id=self.budget_prefix + ctx.workflow_id,
                           user=self.budget_prefix + ctx.user)


_FULL_RUN = RunModeDecision(RunMode.FULL_RUN, "", True)
_TEST_RUN = RunModeDecision(RunMode.TEST_RUN, TEST_RUN_KEY_PREFIX, False)
_VALIDATE_ONLY = RunModeDecision(RunMode.VALIDATE_ONLY, "", True)
_VALIDATE_ONLY_NOT_FULL = RunModeDecision(RunMode.VALIDATE_ONLY, "", False)


class _Requirement:
    """A compiled ``full_run_requires``."""

    def __init__(self, config: FullRunRequirement) -> None:
        self._scopes = frozenset(config.scopes_any)
        self._roles = frozenset(config.roles_any)
        self._rules: tuple[tuple[str, CompiledExpression], ...] = tuple(
            (rule.name, compile_expression(rule.when)) for rule in config.rules)

    def refusal(self, principal: Principal | None, call: Callable[[], RunModeCall], now_wall: float) -> str | None:
        """``None`` when the requirement holds; else the audit reason. ``call`` is asked for only
        when a CEL rule runs."""
        if principal is None:
            return "run_mode:full_run_no_principal"
        if self._scopes and not self._scopes & principal.scopes:
            return "run_mode:full_run_scope"
        if self._roles and not self._roles & principal.roles:
            return "run_mode:full_run_role"
        if self._rules:
            variables = _variables(principal, call(), now_wall)
            for name, rule in self._rules:
                if not rule.allows(variables):
                    return f"run_mode:full_run_rule:{name}"
        return None


def _variables(principal: Principal, call: RunModeCall, now_wall: float) -> dict[str, Any]:
    """The CEL variables: the same names as ingress rules, filled from the egress call."""
    return {
        "request": {"method": call.method, "path": call.path, "host": call.host, "scheme": call.scheme,
                    "headers": {}, "query": {}},
        "params": {},
        "principal": principal_variables(principal),
        "context": {"route": call.route, "workflow_id": call.workflow_id, "execution_id": call.execution_id,
                    "user": call.user, "client_ip": call.client_ip, "run_mode": RunMode.FULL_RUN.value},
        "now": request_time(now_wall),
    }


class RouteRunModes:
    """One route's run-mode rules, compiled at load."""

    def __init__(self, route: EgressRouteConfig, modes: EgressRunModesConfig) -> None:
        self.route = route.name
        self.default = RunMode(modes.default)
        self._validate_only = modes.allow_validate_only
        self._test_run = route.test_run
        requirement = route.full_run_requires or modes.full_run_requires
        self._full_run = _Requirement(requirement) if requirement is not None else None

    def decide(
        self, mode: RunMode, principal: Principal | None, call: Callable[[], RunModeCall], now_wall: float,
    ) -> RunModeDecision:
        """The decision for ``mode``, or ``RunModeDenied`` with the reason for the audit.

        A ``validate_only`` call is never refused for the full-run requirement: its answer says
        whether a full run would be permitted (``full_run_permitted``)."""
        if mode is RunMode.TEST_RUN:
            if not self._test_run:
                raise RunModeDenied("run_mode:test_run_not_allowed")
            return _TEST_RUN
        refusal = self._full_run.refusal(principal, call, now_wall) if self._full_run is not None else None
        if mode is RunMode.VALIDATE_ONLY:
            if not self._validate_only:
                raise RunModeDenied("run_mode:validate_only_off")
            return _VALIDATE_ONLY if refusal is None else _VALIDATE_ONLY_NOT_FULL
        if refusal is not None:
            raise RunModeDenied(refusal)
        return _FULL_RUN


@dataclass(frozen=True, slots=True)
class PlannedCheck:
    """One check a ``validate_only`` call passed or failed; ``code``: the public error code the real
    call would have met (never the audit reason, which can name internals)."""

    name: str  # "destination", "breaker", "rate_limit", "budgets", "execution_lifetime", "full_run", "bulkhead"
    ok: bool
    code: ErrorCode | None = None


@dataclass(frozen=True, slots=True)
class PlannedSpend:
    """A budget or limit the call would spend from: how much, what is left before it, whether it fits."""

    name: str
    amount: float
    remaining: float | None  # None: not known without spending (a rate limit's windows)
    fits: bool


@dataclass(frozen=True, slots=True)
class DryRunReport:
    """The answer to a ``validate_only`` call: what would have happened, with no value of a secret."""

    route: str
    method: str
    url: str  # the provider URL without its query (the query can carry the caller's own tokens)
    run_mode: RunMode
    checks: tuple[PlannedCheck, ...]
    spends: tuple[PlannedSpend, ...]
    headers_injected: tuple[str, ...]  # header names the route sets
    secrets: tuple[str, ...]  # vault secret names those headers (or the route's OAuth client) use
    full_run_permitted: bool

    @property
    def would_send(self) -> bool:
        return all(check.ok for check in self.checks) and all(spend.fits for spend in self.spends)

    def document(self) -> dict[str, Any]:
        return {
            "run_mode": self.run_mode.value,
            "would_send": self.would_send,
            "route": self.route,
            "method": self.method,
            "url": self.url,
            "checks": [{"name": c.name, "ok": c.ok, **({"code": c.code.value} if c.code else {})}
                       for c in self.checks],
            "spends": [{"name": s.name, "amount": s.amount, "remaining": s.remaining, "fits": s.fits}
                       for s in self.spends],
            "headers_injected": list(self.headers_injected),
            "secrets": list(self.secrets),
            "full_run_permitted": self.full_run_permitted,
        }

    def body(self) -> bytes:
        return orjson.dumps(self.document())

