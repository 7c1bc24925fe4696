"""Incident controls over the admin API: blocks and emergency limits (the ``security`` role's tools).

Why routes this thin: everything an act means (the store row, this instance's snapshot swapped at
once, the event that makes every other instance re-read within a second) lives in
``portcullis.controls.IncidentControls``; a route checks the body, calls it, and answers. The route
class records each act as a security event (``block.create``, ``block.lift``, ``emergency.create``,
``emergency.lift``), with the new control's id added by ``note_event``.

Reading needs ``blocks.read`` (emergency limits included: both are the incident's state); making and
lifting blocks needs ``blocks.write``, emergency limits ``emergency.write``.

Refusals, as on the other admin routes: a body the schema refuses (an unknown field or kind, a
control character, a factor out of range) is 400 ``request.malformed``; a body the schema accepts
but the control cannot be enforced as asked (a subject that is not an address for an address block,
a route emergency without a route) is 409 ``admin.conflict``; both details name the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.controls import Block, BlockKind, EmergencyLimit, EmergencyScope
from portcullis.controls.model import MAX_REASON_CHARS, MAX_SUBJECT_CHARS
from portcullis.errors import ErrorCode, InvalidControl
from portcullis.identity.admin_roles import Permission
from portcullis.limiting.emergency import MIN_FACTOR

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["incident controls"])

_DAY_S = 86_400.0
_TEXT = r"^[^\x00-\x1f\x7f-\x9f]+$"  # no control characters: these end up in tables, logs and the audit
_MADE: dict[int | str, dict[str, Any]] = {
    409: problem_answer("The control cannot be enforced as asked (the detail names the field)."),
}
_LIFTED: dict[int | str, dict[str, Any]] = {404: problem_answer("No such control in force.")}


class NewBlock(BaseModel):
    """``POST /blocks``."""

    model_config = ConfigDict(extra="forbid")

    kind: BlockKind = Field(description="What is blocked, and so where it is refused.")
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS, pattern=_TEXT,
                         description="An address or CIDR, or a consumer, key, workflow, user or execution id.")
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS, pattern=_TEXT,
                        description="Why (audit only; never shown to the blocked party).")
    expires_in_s: float | None = Field(None, gt=0, le=365 * _DAY_S, description="Lifetime; none: until lifted.")


class NewEmergency(BaseModel):
    """``POST /emergency-limits``."""

    model_config = ConfigDict(extra="forbid")

    scope: EmergencyScope = Field(description="gateway (every limit), route or consumer.")
    subject: str = Field("", max_length=MAX_SUBJECT_CHARS, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
                         description="The route or consumer; empty for gateway.")
    factor: float = Field(ge=MIN_FACTOR, le=1.0, description="What share of its configured rate every limit keeps.")
    duration_s: float = Field(gt=0, le=30 * _DAY_S, description="How long the factor holds.")
    restore_s: float | None = Field(None, ge=0, le=_DAY_S, description="How long the ramp back to 1 takes; none: "
                                    "controls.emergency_restore.")
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS, pattern=_TEXT, description="Why (audit only).")


class BlockView(BaseModel):
    id: str
    kind: BlockKind
    subject: str
    reason: str
    created_at: float
    created_by: str
    expires_at: float | None
    lifted_at: float | None
    lifted_by: str | None

    @classmethod
    def of(cls, block: Block) -> BlockView:
        return cls(id=block.block_id, kind=block.kind, subject=block.subject, reason=block.reason,
                   created_at=block.created_at, created_by=block.created_by, expires_at=block.expires_at,
                   lifted_at=block.lifted_at, lifted_by=block.lifted_by)


class EmergencyView(BaseModel):
    id: str
    scope: EmergencyScope
    subject: str
    factor: float
    factor_now: float = Field(description="The factor in force when this answer was made (ramping back after "
                              "`until`).")
    until: float
    restore_s: float
    reason: str
    created_at: float
    created_by: str
    lifted_at: float | None
    lifted_by: str | None

    @classmethod
    def of(cls, emergency: EmergencyLimit, now: float) -> EmergencyView:
        return cls(id=emergency.emergency_id, scope=emergency.scope, subject=emergency.subject,
                   factor=emergency.factor, factor_now=round(emergency.factor_at(now), 4), until=emergency.until,
                   restore_s=emergency.restore_s, reason=emergency.reason, created_at=emergency.created_at,
                   created_by=emergency.created_by, lifted_at=emergency.lifted_at, lifted_by=emergency.lifted_by)


class Lifted(BaseModel):
    id: str
    status: Literal["lifted"] = "lifted"


AllQuery = Annotated[bool, Query(alias="all", description="Every control ever made, lifted and expired ones too.")]


@router.get("/blocks", summary="Blocks in force (or every block made, with ?all=true).",
            response_model=list[BlockView], **needs(Permission.BLOCKS_READ))
async def list_blocks(runtime: CurrentRuntime, everything: AllQuery = False) -> Response:
    blocks = await runtime.services.controls.list_blocks(include_inactive=everything)
    return JSONResponse([BlockView.of(b).model_dump(mode="json") for b in blocks])


@router.post("/blocks", status_code=201, summary="Block a subject on every instance within a second.",
             response_model=BlockView, **needs(Permission.BLOCKS_WRITE, action="block.create", answers=_MADE))
async def add_block(request: Request, body: NewBlock, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    try:
        block = await runtime.services.controls.add_block(
            body.kind, body.subject, reason=body.reason, actor=operator.actor, expires_in_s=body.expires_in_s)
    except InvalidControl as exc:
        return problem(ErrorCode.ADMIN_CONFLICT, request, str(exc))
    note_event(request, block_id=block.block_id, kind=block.kind.value, subject=block.subject)
    return JSONResponse(BlockView.of(block).model_dump(mode="json"), status_code=201)


@router.delete("/blocks/{block_id}", summary="Lift a block on every instance within a second.",
               response_model=Lifted, **needs(Permission.BLOCKS_WRITE, action="block.lift", answers=_LIFTED))
async def lift_block(request: Request, block_id: str, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    if not await runtime.services.controls.lift_block(block_id, actor=operator.actor):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such block in force.")
    return JSONResponse(Lifted(id=block_id).model_dump())


@router.get("/emergency-limits", summary="Emergency limits in force or restoring (or all, with ?all=true).",
            response_model=list[EmergencyView], **needs(Permission.BLOCKS_READ))
async def list_emergencies(runtime: CurrentRuntime, everything: AllQuery = False) -> Response:
    now = runtime.clock.wall()
    found = await runtime.services.controls.list_emergencies(include_inactive=everything)
    return JSONResponse([EmergencyView.of(e, now).model_dump(mode="json") for e in found])


@router.post("/emergency-limits", status_code=201, summary="Scale rate limits down for a while, then restore "
             "them gradually, on every instance.", response_model=EmergencyView,
             **needs(Permission.EMERGENCY_WRITE, action="emergency.create", answers=_MADE))
async def add_emergency(request: Request, body: NewEmergency, runtime: CurrentRuntime,
                        operator: CurrentOperator) -> Response:
    restore = body.restore_s if body.restore_s is not None else runtime.config.controls.emergency_restore
    try:
        emergency = await runtime.services.controls.add_emergency(
            body.scope, body.subject, body.factor, duration_s=body.duration_s, restore_s=restore,
            reason=body.reason, actor=operator.actor)
    except InvalidControl as exc:
        return problem(ErrorCode.ADMIN_CONFLICT, request, str(exc))
    note_event(request, emergency_id=emergency.emergency_id, scope=emergency.scope.value, subject=emergency.subject,
               factor=emergency.factor)
    return JSONResponse(EmergencyView.of(emergency, runtime.clock.wall()).model_dump(mode="json"), status_code=201)


@router.delete("/emergency-limits/{emergency_id}", summary="End an emergency limit now (no ramp), everywhere.",
               response_model=Lifted,
               **needs(Permission.EMERGENCY_WRITE, action="emergency.lift", answers=_LIFTED))
async def lift_emergency(request: Request, emergency_id: str, runtime: CurrentRuntime,
                         operator: CurrentOperator) -> Response:
    if not await runtime.services.controls.lift_emergency(emergency_id, actor=operator.actor):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such emergency limit in force.")
    return JSONResponse(Lifted(id=emergency_id).model_dump())
