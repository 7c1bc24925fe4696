"""Run modes: parsing ``X-Run-Mode``, which routes take ``test_run``, what ``full_run`` requires, and the
``validate_only`` report (names, never values)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from portcullis.config.egress import EgressConfig
from portcullis.egress.budgets import BudgetLimits, Budgets, CallContext, MemoryBudgetStore
from portcullis.egress.run_mode import (
    TEST_RUN_KEY_PREFIX,
    DryRunReport,
    PlannedCheck,
    PlannedSpend,
    RouteRunModes,
    RunMode,
    RunModeCall,
    parse_run_mode,
)
from portcullis.errors import ErrorCode, MalformedRequest, RunModeDenied
from portcullis.identity.principal import Principal
from portcullis.testing import ManualClock

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CALL = RunModeCall(route="llm", method="POST", path="/v1/chat/completions", host="api.example.com",
                   scheme="https", workflow_id="wf-1", execution_id="ex-1", user="alice")
BUILDER = Principal("alice", "api_key", scopes=frozenset({"workflow:run:test"}), roles=frozenset({"student"}))
RESEARCHER = Principal("bob", "jwt", scopes=frozenset({"workflow:run:full"}), roles=frozenset({"researcher"}),
                       claims={"sub": "bob", "team": "lab"})


def modes(route: dict[str, Any] | None = None, run_modes: dict[str, Any] | None = None) -> RouteRunModes:
    config = EgressConfig.model_validate({
        "routes": [{"name": "llm", "url": "https://api.example.com", **(route or {})}],
        "run_modes": run_modes or {},
    })
    return RouteRunModes(config.routes[0], config.run_modes)


@pytest.mark.parametrize(("values", "expected"), [
    ([], RunMode.FULL_RUN), (["full_run"], RunMode.FULL_RUN), (["test_run"], RunMode.TEST_RUN),
    (["validate_only"], RunMode.VALIDATE_ONLY), ([" Validate_Only "], RunMode.VALIDATE_ONLY),
])
def test_the_header_names_the_mode_and_its_absence_means_the_default(values: list[str], expected: RunMode) -> None:
    assert parse_run_mode(values) is expected


@pytest.mark.parametrize("values", [["full"], ["validate-only"], [""], ["test_run", "full_run"],
                                    ["validate_only", "validate_only"]],
                         ids=["abbreviation", "dash", "empty", "two-modes", "repeated"])
def test_an_unknown_or_repeated_mode_is_refused_rather_than_read_as_a_full_run(values: list[str]) -> None:
    with pytest.raises(MalformedRequest) as refused:
        parse_run_mode(values)
    assert refused.value.reason == "run_mode_invalid"


def test_the_configured_default_applies_when_no_mode_is_named() -> None:
    assert modes(run_modes={"default": "test_run"}).default is RunMode.TEST_RUN
    assert parse_run_mode([], RunMode.TEST_RUN) is RunMode.TEST_RUN


def test_test_run_is_refused_on_a_route_not_marked_for_tests() -> None:
    with pytest.raises(RunModeDenied) as refused:
        modes().decide(RunMode.TEST_RUN, BUILDER, lambda: CALL, NOW)
    assert refused.value.reason == "run_mode:test_run_not_allowed"
    assert refused.value.code is ErrorCode.EGRESS_RUN_MODE_DENIED


def test_test_run_on_a_marked_route_spends_its_own_budget_counters() -> None:
    decision = modes({"test_run": True}).decide(RunMode.TEST_RUN, BUILDER, lambda: CALL, NOW)
    assert decision.sends and decision.budget_prefix == TEST_RUN_KEY_PREFIX
    full = modes({"test_run": True}).decide(RunMode.FULL_RUN, BUILDER, lambda: CALL, NOW)
    assert full.sends and full.budget_prefix == ""


def test_a_full_run_needs_nothing_when_no_requirement_is_configured() -> None:
    assert modes().decide(RunMode.FULL_RUN, None, lambda: CALL, NOW).sends


@pytest.mark.parametrize(("requirement", "principal", "reason"), [
    ({"scopes_any": ["workflow:run:full"]}, BUILDER, "run_mode:full_run_scope"),
    ({"roles_any": ["researcher", "admin"]}, BUILDER, "run_mode:full_run_role"),
    ({"rules": [{"name": "lab-only", "when": 'principal.claims.team == "lab"'}]}, BUILDER,
     "run_mode:full_run_rule:lab-only"),
    ({"scopes_any": ["workflow:run:full"]}, None, "run_mode:full_run_no_principal"),
], ids=["seed-001-scope", "role", "cel-rule", "no-principal"])
def test_a_full_run_without_what_the_route_requires_is_refused(
    requirement: dict[str, Any], principal: Principal | None, reason: str,
) -> None:
    with pytest.raises(RunModeDenied) as refused:
        modes({"full_run_requires": requirement}).decide(RunMode.FULL_RUN, principal, lambda: CALL, NOW)
    assert refused.value.reason == reason


@pytest.mark.parametrize("requirement", [
    {"scopes_any": ["workflow:run:full"]},
    {"roles_any": ["researcher"]},
    {"rules": [{"name": "lab", "when": 'principal.claims.team == "lab" && context.route == "llm"'}]},
    {"rules": [{"name": "own-workflow", "when": 'context.workflow_id.startsWith("wf-") && request.method == "POST"'}]},
    {"rules": [{"name": "office-hours", "when": 'now.getHours("UTC") >= 8'}]},
], ids=["scope", "role", "claim-and-route", "workflow-and-method", "time"])
def test_a_caller_with_what_the_route_requires_may_run_in_full(requirement: dict[str, Any]) -> None:
    assert modes({"full_run_requires": requirement}).decide(RunMode.FULL_RUN, RESEARCHER, lambda: CALL, NOW).sends


def test_a_route_requirement_replaces_the_egress_wide_one() -> None:
    everywhere = {"full_run_requires": {"scopes_any": ["workflow:run:full"]}}
    assert not _allowed(modes(run_modes=everywhere), BUILDER)
    assert _allowed(modes({"full_run_requires": {"roles_any": ["student"]}}, everywhere), BUILDER)


def _allowed(route: RouteRunModes, principal: Principal) -> bool:
    try:
        route.decide(RunMode.FULL_RUN, principal, lambda: CALL, NOW)
    except RunModeDenied:
        return False
    return True


def test_validate_only_sends_nothing_and_says_whether_a_full_run_would_be_allowed() -> None:
    route = modes({"full_run_requires": {"scopes_any": ["workflow:run:full"]}})
    denied = route.decide(RunMode.VALIDATE_ONLY, BUILDER, lambda: CALL, NOW)
    assert not denied.sends and not denied.full_run_permitted and denied.budget_prefix == ""
    assert route.decide(RunMode.VALIDATE_ONLY, RESEARCHER, lambda: CALL, NOW).full_run_permitted


def test_validate_only_can_be_switched_off() -> None:
    with pytest.raises(RunModeDenied) as refused:
        modes(run_modes={"allow_validate_only": False}).decide(RunMode.VALIDATE_ONLY, RESEARCHER, lambda: CALL, NOW)
    assert refused.value.reason == "run_mode:validate_only_off"


@pytest.mark.parametrize(("requirement", "message"), [
    ({}, "name scopes_any, roles_any or rules"),
    ({"rules": [{"name": "x", "when": "principal.nope +"}]}, "not a valid rule"),
    ({"rules": [{"name": "x", "when": "body.amount < 10"}]}, "cannot read `body`"),
    ({"rules": [{"name": "x", "when": '"a"'}]}, "true or false"),
], ids=["empty", "syntax", "body", "not-a-bool"])
def test_a_requirement_that_cannot_be_checked_is_refused_at_load(requirement: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        modes({"full_run_requires": requirement})


def test_the_report_names_headers_and_secrets_and_says_what_would_be_spent() -> None:
    spends = (PlannedSpend("execution_calls", 1, 3.0, True), PlannedSpend("execution_cost", 0.1, 0.05, False))
    report = DryRunReport(
        route="llm", method="POST", url="https://api.example.com/v1/chat/completions", run_mode=RunMode.VALIDATE_ONLY,
        checks=(PlannedCheck("destination", True), PlannedCheck("breaker", True)),
        spends=(PlannedSpend("rate_limit:egress:llm", 1, None, True), *spends),
        headers_injected=("authorization",), secrets=("openai",), full_run_permitted=True,
    )
    assert not report.would_send  # the cost budget does not fit
    assert orjson.loads(report.body()) == {
        "run_mode": "validate_only", "would_send": False, "route": "llm", "method": "POST",
        "url": "https://api.example.com/v1/chat/completions",
        "checks": [{"name": "destination", "ok": True}, {"name": "breaker", "ok": True}],
        "spends": [{"name": "rate_limit:egress:llm", "amount": 1, "remaining": None, "fits": True},
                   {"name": "execution_calls", "amount": 1, "remaining": 3.0, "fits": True},
                   {"name": "execution_cost", "amount": 0.1, "remaining": 0.05, "fits": False}],
        "headers_injected": ["authorization"], "secrets": ["openai"], "full_run_permitted": True,
    }


def test_a_failed_check_shows_the_public_code_only() -> None:
    report = DryRunReport(
        route="llm", method="GET", url="https://api.example.com/", run_mode=RunMode.VALIDATE_ONLY,
        checks=(PlannedCheck("breaker", False, ErrorCode.CIRCUIT_OPEN),), spends=(), headers_injected=(),
        secrets=(), full_run_permitted=True,
    )
    assert report.document()["checks"] == [{"name": "breaker", "ok": False, "code": "upstream.circuit_open"}]
    assert not report.would_send


async def test_test_runs_spend_their_own_counters_with_the_same_caps() -> None:
    budgets = Budgets(BudgetLimits(execution_calls=2, user_calls_per_day=3), MemoryBudgetStore(), ManualClock())
    ctx = CallContext(execution_id="ex-1", workflow_id="wf-1", user="alice")
    route = modes({"test_run": True})
    test = route.decide(RunMode.TEST_RUN, BUILDER, lambda: CALL, NOW).budget_context(ctx)
    full = route.decide(RunMode.FULL_RUN, BUILDER, lambda: CALL, NOW).budget_context(ctx)
    assert full == ctx
    assert [(await budgets.consume(test, "llm")).allowed for _ in range(3)] == [True, True, False]
    assert await budgets.remaining(full, "llm") == {"execution_calls": 2.0, "user_calls_per_day": 3.0}
    assert [(await budgets.consume(full, "llm")).allowed for _ in range(3)] == [True, True, False]
    assert await budgets.reset(user="t:alice") == ["u:t:alice:d", "u:t:alice:cost"]
