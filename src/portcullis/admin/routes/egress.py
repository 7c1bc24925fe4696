"""Egress circuit breakers and budgets, as operators see and move them during an incident."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from portcullis.admin.context import CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.egress.breaker import BreakerState, CircuitBreaker
from portcullis.egress.budgets import CallContext
from portcullis.errors import ErrorCode
from portcullis.identity.admin_roles import Permission

__all__ = ["BreakerAction", "BreakerView", "apply_breaker_action", "breaker_view", "router"]

router = APIRouter(route_class=GuardedRoute, tags=["egress"])

_ID = Annotated[str, Query(min_length=1, max_length=128)]
RouteName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$", description="An egress route's name.")]
_NO_ROUTE: dict[int | str, dict[str, Any]] = {404: problem_answer("Egress is not configured, or no such route."),
                                              503: problem_answer("The shared state store did not answer.")}


class BreakerView(BaseModel):
    route: str
    state: str
    retry_after_s: float


BreakerAction = Literal["open", "close", "reset"]


def breaker_view(route: str, breaker: CircuitBreaker) -> BreakerView:
    return BreakerView(route=route, state=breaker.state.value, retry_after_s=round(breaker.retry_after_s(), 3))


def apply_breaker_action(breaker: CircuitBreaker, action: BreakerAction) -> None:
    """What an operator's ``open``, ``close`` or ``reset`` does to a breaker (the API and the console)."""
    if action == "open":
        breaker.force(BreakerState.FORCED_OPEN)
    elif action == "close":
        breaker.force(BreakerState.FORCED_CLOSED)
    else:
        breaker.reset()


_SUBJECT_ID = Field(min_length=1, max_length=128)


class ExecutionBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = _SUBJECT_ID
    execution_id: str = _SUBJECT_ID


class WorkflowBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str = _SUBJECT_ID


class UserBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = _SUBJECT_ID


class BudgetResetView(BaseModel):
    counters_reset: int


class BudgetsView(BaseModel):
    route: str
    remaining: dict[str, float]


@router.get("/egress/breakers", summary="Every egress route's circuit breaker state.",
            response_model=list[BreakerView], **needs(Permission.BREAKERS_READ, answers=_NO_ROUTE))
async def breakers(request: Request, runtime: CurrentRuntime) -> Response:
    executor = runtime.egress
    if executor is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "Egress is not configured.")
    return JSONResponse([breaker_view(name, b).model_dump() for name, b in executor.breakers().items()])


@router.post("/egress/breakers/{route}/{action}", summary="Force a breaker open or closed, or reset it.",
             response_model=BreakerView, **needs(Permission.BREAKERS_WRITE, action="breaker.force", answers=_NO_ROUTE))
async def breaker_action(request: Request, route: RouteName, action: BreakerAction,
                         runtime: CurrentRuntime) -> Response:
    executor = runtime.egress
    breaker = executor.breakers().get(route) if executor is not None else None
    if breaker is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such egress route.")
    apply_breaker_action(breaker, action)
    return JSONResponse(breaker_view(route, breaker).model_dump())


@router.get("/egress/budgets", summary="What is left of each budget a call would spend from.",
            response_model=BudgetsView, **needs(Permission.BUDGETS_READ, answers=_NO_ROUTE))
async def budgets(request: Request, runtime: CurrentRuntime, route: _ID, workflow_id: _ID, execution_id: _ID,
                  user: _ID) -> Response:
    executor = runtime.egress
    if executor is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "Egress is not configured.")
    try:
        left = await executor.budgets_remaining(CallContext(execution_id, workflow_id, user), route)
    except KeyError:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such egress route.")
    return JSONResponse(BudgetsView(route=route, remaining=left).model_dump())


@router.post("/egress/budgets/reset", summary="Reset one execution's (give its workflow), one workflow's or one "
             "user's budget counters on every instance sharing state.", response_model=BudgetResetView,
             **needs(Permission.BUDGETS_WRITE, action="budget.reset", answers=_NO_ROUTE))
async def reset_budgets(request: Request, body: ExecutionBudget | WorkflowBudget | UserBudget,
                        runtime: CurrentRuntime) -> Response:
    executor = runtime.egress
    if executor is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "Egress is not configured.")
    subject = body.model_dump()
    keys = await executor.reset_budgets(**subject)
    note_event(request, **subject)
    return JSONResponse(BudgetResetView(counters_reset=len(keys)).model_dump())
