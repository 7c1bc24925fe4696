"""Vault secrets over the admin API: write-only.

Why no operation returns a value: a secret leaves the vault only into an outgoing egress request
(``vault.reveal``), so an admin token that leaks can overwrite or delete a credential but never
read one. Listing shows names, fingerprints (a keyed hash, to compare with a value you hold) and
times, including the last use.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from portcullis.admin.context import CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.errors import ErrorCode, SecretNotFound, VaultError
from portcullis.identity.admin_roles import Permission

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["secrets"])


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=16_384)

    def __repr__(self) -> str:  # never in a log or a traceback
        return "SecretValue(value='…')"


class SecretView(BaseModel):
    name: str
    fingerprint: str
    created_at: float
    updated_at: float
    last_used_at: float | None


SecretName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$", description="1-64 of a-z 0-9 _ . -")]
_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: problem_answer("No such secret."), 409: problem_answer("The vault is locked or refuses the value.")}


@router.get("/secrets", summary="Every secret's name, fingerprint and times; never a value.",
            response_model=list[SecretView], **needs(Permission.SECRETS_READ))
async def list_secrets(runtime: CurrentRuntime) -> Response:
    return JSONResponse([SecretView(name=s.name, fingerprint=s.fingerprint, created_at=s.created_at,
                                    updated_at=s.updated_at, last_used_at=s.last_used_at).model_dump()
                         for s in await runtime.services.vault.list()])


async def _store(request: Request, name: str, value: str, runtime: CurrentRuntime) -> Response:
    try:
        info = await runtime.services.vault.set(name, value)
    except VaultError:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "The vault is locked or refused the value.")
    note_event(request, fingerprint=info.fingerprint)
    return JSONResponse(SecretView(name=info.name, fingerprint=info.fingerprint, created_at=info.created_at,
                                   updated_at=info.updated_at, last_used_at=info.last_used_at).model_dump())


@router.put("/secrets/{name}", summary="Store or replace a secret.", response_model=SecretView,
**needs(Permission.SECRETS_WRITE, action="secret.put", answers=_ANSWERS))
async def put_secret(request: Request, name: SecretName, body: SecretValue, runtime: CurrentRuntime) -> Response:
    return await _store(request, name, body.value, runtime)


@router.post("/secrets/{name}/rotate", summary="Replace an existing secret's value.", response_model=SecretView,
             **needs(Permission.SECRETS_WRITE, action="secret.rotate", answers=_ANSWERS))
async def rotate_secret(request: Request, name: SecretName, body: SecretValue, runtime: CurrentRuntime) -> Response:
    if name not in {s.name for s in await runtime.services.vault.list()}:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such secret.")
    return await _store(request, name, body.value, runtime)


@router.delete("/secrets/{name}", status_code=204, summary="Delete a secret.", response_class=Response,
               **needs(Permission.SECRETS_WRITE, action="secret.delete", answers=_ANSWERS))
async def delete_secret(request: Request, name: SecretName, runtime: CurrentRuntime) -> Response:
    try:
        await runtime.services.vault.delete(name)
    except SecretNotFound:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such secret.")
    return Response(status_code=204)
