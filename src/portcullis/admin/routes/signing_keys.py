"""Consumers' request-signing keys (RFC 9421): list, read, create, rotate with an overlap, revoke.

The same permissions as API keys: a ``developer`` reads the keys of the consumers their token
names (to anyone else such a key is "not found"); operators create, rotate and revoke. An HMAC
key's secret is in the creation (or rotation) answer only; it is kept in the vault, so creating
one needs the master key (409 without it). An Ed25519 key is created from the consumer's public
key and the gateway never sees the private half. A revocation or rotation drops the key from
this instance's cache at once and is heard by the others over the shared events; every change is
a security event (``admin.guard``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.errors import ErrorCode, VaultError
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.identity.api_keys import CONSUMER_PATTERN, SCOPE_PATTERN
from portcullis.identity.signing_keys import SIGNING_KEY_ID_PATTERN, IssuedSigningKey, create_signing_key
from portcullis.stores.base import SigningKeyRecord
from portcullis.stores.redis_events import REVOKE_EVENT

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["signing-keys"])

_MAX_OVERLAP_S = 30 * 86_400
SigningKeyId = Annotated[str, Path(pattern=f"^{SIGNING_KEY_ID_PATTERN}$", description="`sig_` and 12 characters.")]
Scope = Annotated[str, StringConstraints(pattern=f"^{SCOPE_PATTERN}$")]
_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: problem_answer("No such signing key."), 409: problem_answer("The key could not be made as asked.")}


class NewSigningKey(BaseModel):
    """``POST /signing-keys``: the same rules as ``portcullis signing-keys create``."""

    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(pattern=f"^{CONSUMER_PATTERN}$")
    algorithm: Literal["hmac-sha256", "ed25519"] = "hmac-sha256"
    public_key: str | None = Field(None, max_length=4096,
                                   description="Ed25519 only: the consumer's public key, PEM or base64 of 32 bytes.")
    scopes: list[Scope] = Field(default_factory=list, max_length=64)
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86_400)


class SigningRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_s: float = Field(86_400, ge=0, le=_MAX_OVERLAP_S,
                             description="How long the former key keeps verifying (default one day).")
    public_key: str | None = Field(None, max_length=4096, description="Ed25519 only: the new public key.")


class SigningKeyView(BaseModel):
    key_id: str
    consumer: str
    algorithm: str
    scopes: list[str]
    state: str
    created_at: float
    not_before: float | None
    expires_at: float | None
    public_key: str | None = Field(description="Ed25519 keys: the public key (base64 of its 32 bytes).")


class IssuedSigningKeyView(SigningKeyView):
    secret: str | None = Field(description="HMAC keys: the shared secret (base64), in this answer only.")


class SigningKeyChange(BaseModel):
    key_id: str
    status: str
    broadcast: bool


def _view(record: SigningKeyRecord, now: float) -> dict[str, Any]:
    return SigningKeyView(
        key_id=record.key_id, consumer=record.consumer_id, algorithm=record.algorithm, scopes=sorted(record.scopes),
        state=record.state(now), created_at=record.created_at, not_before=record.not_before,
        expires_at=record.expires_at, public_key=record.public_key,
    ).model_dump()


def _issued(issued: IssuedSigningKey, now: float) -> dict[str, Any]:
    return IssuedSigningKeyView(**_view(issued.record, now), secret=issued.secret).model_dump()


async def _broadcast(runtime: GatewayRuntime, key_id: str) -> bool:
    shared = runtime.services.shared
    return shared is not None and await shared.events.publish(REVOKE_EVENT, key_id=key_id)


@router.get("/signing-keys", summary="List signing keys in key-id order (of one consumer).",
            response_model=list[SigningKeyView], **needs(Permission.KEYS_READ_OWN))
async def list_signing_keys(
    request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
    consumer: Annotated[str | None, Query(pattern=f"^{CONSUMER_PATTERN}$")] = None,
) -> Response:
    if not operator.may(Permission.KEYS_READ) and (consumer is None or consumer not in operator.consumers):
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, "Name one of your own consumers with `consumer`.")
    now = runtime.clock.wall()
    return JSONResponse([_view(r, now) for r in await runtime.services.store.list_signing_keys(consumer)])


@router.get("/signing-keys/{key_id}", summary="One signing key (never an HMAC secret).",
            response_model=SigningKeyView, **needs(Permission.KEYS_READ_OWN, answers=_ANSWERS))
async def get_signing_key(request: Request, key_id: SigningKeyId, runtime: CurrentRuntime,
                          operator: CurrentOperator) -> Response:
    record = await runtime.services.store.get_signing_key(key_id)
    if record is None or not operator.may_read(Permission.KEYS_READ, Permission.KEYS_READ_OWN, record.consumer_id):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such signing key.")
    return JSONResponse(_view(record, runtime.clock.wall()))


@router.post("/signing-keys", status_code=201, summary="Create a signing key; an HMAC secret is in this answer only.",
             response_model=IssuedSigningKeyView,
             **needs(Permission.KEYS_WRITE, action="signing_key.create", answers=_ANSWERS))
async def create(request: Request, body: NewSigningKey, runtime: CurrentRuntime) -> Response:
    try:
        issued = await create_signing_key(
            runtime.services.store, runtime.services.vault, body.consumer, body.algorithm, clock=runtime.clock,
            public_key=body.public_key, scopes=body.scopes, expires_in_s=body.expires_in_s)
    except VaultError:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "HMAC keys are kept in the vault: set PORTCULLIS_SECRET_KEY.")
    except ValueError as exc:
        return problem(ErrorCode.ADMIN_CONFLICT, request, str(exc))
    record = issued.record
    note_event(request, key_id=record.key_id, consumer=record.consumer_id, algorithm=record.algorithm,
               scopes=sorted(record.scopes))
    return JSONResponse(_issued(issued, runtime.clock.wall()), status_code=201)


@router.post("/signing-keys/{key_id}/rotate", summary="A new key for the same consumer; the former one keeps "
             "verifying for `overlap_s`. An HMAC secret is in this answer only.", response_model=IssuedSigningKeyView,
             **needs(Permission.KEYS_WRITE, action="signing_key.rotate", answers=_ANSWERS))
async def rotate(request: Request, key_id: SigningKeyId, body: SigningRotation, runtime: CurrentRuntime) -> Response:
    keyring = runtime.signing_keys
    if keyring is None:  # pragma: no cover - every runtime built by build_runtime has one
        return problem(ErrorCode.ADMIN_CONFLICT, request, "Signing keys are not available.")
    try:
        issued = await keyring.rotate(key_id, body.overlap_s, public_key=body.public_key)
    except VaultError:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "HMAC keys are kept in the vault: set PORTCULLIS_SECRET_KEY.")
    except ValueError as exc:
        return problem(ErrorCode.ADMIN_CONFLICT, request, str(exc))
    if issued is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such signing key, or it is revoked.")
    note_event(request, new_key_id=issued.record.key_id, overlap_s=body.overlap_s,
               broadcast=await _broadcast(runtime, key_id))
    return JSONResponse(_issued(issued, runtime.clock.wall()))


@router.post("/signing-keys/{key_id}/revoke", summary="Revoke a signing key for good; every instance refuses it "
             "within a second.", response_model=SigningKeyChange,
             **needs(Permission.KEYS_WRITE, action="signing_key.revoke", answers=_ANSWERS))
async def revoke(request: Request, key_id: SigningKeyId, runtime: CurrentRuntime) -> Response:
    keyring = runtime.signing_keys
    if keyring is None or not await keyring.revoke(key_id):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such signing key, or it is revoked already.")
    return JSONResponse(SigningKeyChange(key_id=key_id, status="revoked",
                                         broadcast=await _broadcast(runtime, key_id)).model_dump())
