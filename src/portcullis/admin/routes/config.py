"""Reloading the config file, here and on every instance sharing state."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from portcullis.admin.context import CurrentRuntime, MaybeReloader
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.errors import ErrorCode
from portcullis.gateway.reload import ReloadBusy
from portcullis.identity.admin_roles import Permission
from portcullis.stores.redis_events import RELOAD_EVENT

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["config"])


class Reloaded(BaseModel):
    status: str
    restart_needed: list[str]
    broadcast: bool


@router.post("/reload", summary="Reload the config file here and on every instance sharing state; one at a time, "
             "at most once per reload.min_interval (429 with Retry-After otherwise).", response_model=Reloaded,
             **needs(Permission.CONFIG_RELOAD, action="config.reload", answers={
                 409: problem_answer("Not started from a config file."),
                        422: problem_answer("The new config was rejected; nothing changed."),
                        429: problem_answer("A reload is running or was too recent.")}))
async def reload(request: Request, runtime: CurrentRuntime, reloader: MaybeReloader) -> Response:
    if reloader is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "This gateway was not started from a config file.")
    result = await reloader.reload()
    if isinstance(result, ReloadBusy):
        return problem(ErrorCode.ADMIN_RELOAD_BUSY, request, result.detail,
                       retry_after_s=math.ceil(result.retry_after_s))
    if not result.ok:
        note_event(request, error=result.error)
        return problem(ErrorCode.ADMIN_CONFIG_REJECTED, request, result.error)
    shared = runtime.services.shared  # the runtime before the swap shares services with the new one
    broadcast = shared is not None and await shared.events.publish(RELOAD_EVENT)
    return JSONResponse(Reloaded(status="reloaded", restart_needed=list(result.restart_needed),
                                 broadcast=broadcast).model_dump())
