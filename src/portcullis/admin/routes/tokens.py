"""Admin tokens: list, create (shown once), revoke.

Why an operator can only hand out a role whose permissions they hold themselves: otherwise an
``admin`` token could mint a ``security`` token and escalate. The first token of an installation
comes from ``portcullis admin bootstrap``, which writes the store directly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from portcullis.admin.auth import admin_pepper
from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.errors import ErrorCode
from portcullis.identity.admin_roles import Permission, RoleBook, UnknownRole
from portcullis.identity.admin_tokens import NAME_PATTERN, issue_admin_token
from portcullis.identity.api_keys import CONSUMER_PATTERN
from portcullis.stores.base import AdminTokenRecord

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["admin tokens"])

_ROLE = r"^[a-z][a-z0-9_\-]{0,63}$"
TokenId = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$", description="The 12 characters after `pca_`.")]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN}$", description="Who or what holds it (a person, a pipeline).")
    role: str = Field(pattern=_ROLE)
    expires_in_s: float | None = Field(90 * 86_400, gt=0, le=2 * 365 * 86_400,
                                       description="Default 90 days; null for a token that does not expire.")
    consumers: list[Annotated[str, StringConstraints(pattern=f"^{CONSUMER_PATTERN}$")]] = Field(
        default_factory=list, max_length=256, description="What a developer token's `*_own` permissions cover.")


class TokenView(BaseModel):
    token_id: str
    name: str
    role: str
    consumers: list[str]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class IssuedTokenView(TokenView):
    token: str = Field(description="The token itself: shown in this answer only.")


def _view(record: AdminTokenRecord) -> TokenView:
    return TokenView(token_id=record.token_id, name=record.name, role=record.role,
                     consumers=sorted(record.consumers), created_at=record.created_at, created_by=record.created_by,
                     expires_at=record.expires_at, revoked_at=record.revoked_at, last_used_at=record.last_used_at)


@router.get("/admin-tokens", summary="Every admin token (never a secret).", response_model=list[TokenView],
            **needs(Permission.TOKENS_READ))
async def list_tokens(runtime: CurrentRuntime) -> Response:
    return JSONResponse([_view(t).model_dump() for t in await runtime.services.store.list_admin_tokens()])


@router.post("/admin-tokens", status_code=201, summary="Create an admin token of a role you hold; shown once.",
             response_model=IssuedTokenView,
             **needs(Permission.TOKENS_WRITE, action="token.create", answers={
                 409: problem_answer("No token pepper is configured, or no such role.")}))
async def create_token(request: Request, body: NewToken, runtime: CurrentRuntime,
                       operator: CurrentOperator) -> Response:
    pepper = admin_pepper(runtime.config)
    if pepper is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "Set admin.token_pepper or keys.pepper.")
    book = RoleBook(runtime.config.admin.roles)
    try:
        wanted = book.permissions(body.role)
    except UnknownRole:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "No such role in this configuration.")
    if not wanted <= operator.permissions:
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, "A token can only carry permissions you hold.")
    issued = issue_admin_token(name=body.name, role=body.role, created_by=operator.actor, pepper=pepper,
                               clock=runtime.clock, expires_in_s=body.expires_in_s,
                               consumers=frozenset(body.consumers))
    await runtime.services.store.create_admin_token(issued.record)
    note_event(request, token_id=issued.record.token_id, granted_role=body.role)
    view = IssuedTokenView(token=issued.token, **_view(issued.record).model_dump())
    return JSONResponse(view.model_dump(), status_code=201)


@router.post("/admin-tokens/{token_id}/revoke", summary="Revoke an admin token; its next request is refused.",
             response_model=TokenView,
             **needs(Permission.TOKENS_WRITE, action="token.revoke", answers={
                 404: problem_answer("No such token, or already revoked.")}))
async def revoke_token(request: Request, token_id: TokenId, runtime: CurrentRuntime) -> Response:
    store = runtime.services.store
    request.app.state.tokens.forget(token_id)
    if not await store.revoke_admin_token(token_id, runtime.clock.wall()):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such token, or already revoked.")
    record = await store.get_admin_token(token_id)
    if record is None:  # revoked and gone between the two statements: nothing to show
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such token.")
    return JSONResponse(_view(record).model_dump())
