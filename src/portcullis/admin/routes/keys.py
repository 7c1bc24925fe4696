"""Consumers' API keys: list and search with a cursor, read, create, rotate with a grace period,
disable and enable, revoke.

Why rotation keeps the former secret for a while: a client fleet cannot switch keys at one
instant; for ``grace_s`` both secrets work, then only the new one. Every change is heard by the
other instances over the shared events (their caches drop the key at once), and is a security
event (``admin.guard``). A ``developer`` reads only the keys of the consumers their token or
claim names; to anyone else such a key is "not found", so its existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.errors import ErrorCode
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.identity.api_keys import CONSUMER_PATTERN, SCOPE_PATTERN, ApiKeyVerifier, create_key
from portcullis.stores.base import ApiKeyRecord
from portcullis.stores.redis_events import REVOKE_EVENT

__all__ = [
    "IssuedKeyView", "KeyChange", "KeyRotation", "KeyView", "key_view", "rotate_key", "router", "set_key_disabled",
]

router = APIRouter(route_class=GuardedRoute, tags=["keys"])

_KEY_ID = r"^[a-z0-9]{12}$"
_MAX_GRACE_S = 30 * 86_400
KeyId = Annotated[str, Path(pattern=_KEY_ID, description="The 12 characters after `pcl_`.")]
Scope = Annotated[str, StringConstraints(pattern=f"^{SCOPE_PATTERN}$")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: problem_answer("No such key."), 409: problem_answer("API keys are not configured.")}


class NewKey(BaseModel):
    """``POST /keys``: the same rules as ``portcullis keys create``."""

    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(pattern=f"^{CONSUMER_PATTERN}$")
    scopes: list[Scope] = Field(default_factory=list, max_length=64)
    roles: list[Scope] = Field(default_factory=list, max_length=64)
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86_400)


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float = Field(86_400, ge=0, le=_MAX_GRACE_S,
                           description="How long the former secret keeps working (default one day).")


class KeyView(BaseModel):
    key_id: str
    consumer: str
    scopes: list[str]
    roles: list[str]
    state: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    former_secret_valid_until: float | None


class KeyList(BaseModel):
    keys: list[KeyView]
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class IssuedKeyView(BaseModel):
    key: str = Field(description="The key itself: shown in this answer only.")
    key_id: str
    consumer: str
    scopes: list[str]
    roles: list[str]
    expires_at: float | None


class KeyChange(BaseModel):
    key_id: str
    status: str
    broadcast: bool


def key_view(record: ApiKeyRecord, now: float) -> KeyView:
    grace = record.previous_valid_until
    return KeyView(key_id=record.key_id, consumer=record.consumer_id, scopes=sorted(record.scopes),
                   roles=sorted(record.roles), state=record.state, created_at=record.created_at,
                   expires_at=record.expires_at, last_used_at=record.last_used_at,
                   former_secret_valid_until=grace if grace is not None and grace > now else None)


async def _broadcast(runtime: GatewayRuntime, key_id: str) -> bool:
    shared = runtime.services.shared
    return shared is not None and await shared.events.publish(REVOKE_EVENT, key_id=key_id)


@dataclass(frozen=True, slots=True)
class KeyRotation:
    issued: IssuedKeyView
    broadcast: bool


async def rotate_key(
    runtime: GatewayRuntime, verifier: ApiKeyVerifier, key_id: str, grace_s: float
) -> KeyRotation | None:
    """A new secret for the key, heard by every instance; None when there is no such (unrevoked) key."""
    new_key = await verifier.rotate(key_id, grace_s)
    record = await runtime.services.store.get(key_id) if new_key is not None else None
    if new_key is None or record is None:
        return None
    return KeyRotation(IssuedKeyView(key=new_key, key_id=key_id, consumer=record.consumer_id,
                                     scopes=sorted(record.scopes), roles=sorted(record.roles),
                                     expires_at=record.expires_at), await _broadcast(runtime, key_id))


async def set_key_disabled(
    runtime: GatewayRuntime, verifier: ApiKeyVerifier, key_id: str, disabled: bool
) -> KeyChange | None:
    """Disable or enable a key everywhere; None when there is no such (unrevoked) key."""
    if not await verifier.set_disabled(key_id, disabled):
        return None
    broadcast = await _broadcast(runtime, key_id)
    return KeyChange(key_id=key_id, status="disabled" if disabled else "active", broadcast=broadcast)


@router.get("/keys", summary="List keys in key-id order, by consumer or consumer prefix, a page at a time.",
            response_model=KeyList, **needs(Permission.KEYS_READ_OWN))
async def list_keys(
    request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
    consumer: Annotated[str | None, Query(pattern=f"^{CONSUMER_PATTERN}$")] = None,
    consumer_prefix: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(pattern=_KEY_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    if not operator.may(Permission.KEYS_READ) and (consumer is None or consumer not in operator.consumers):
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, "Name one of your own consumers with `consumer`.")
    page = await runtime.services.store.page(consumer_id=consumer, consumer_prefix=consumer_prefix, after=after,
                                             limit=limit)
    now = runtime.clock.wall()
    return JSONResponse(KeyList(keys=[key_view(k, now) for k in page.keys], next_after=page.next_after).model_dump())


@router.get("/keys/{key_id}", summary="One key (never its secret).", response_model=KeyView,
            **needs(Permission.KEYS_READ_OWN, answers=_NOT_FOUND))
async def get_key(request: Request, key_id: KeyId, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    record = await runtime.services.store.get(key_id)
    if record is None or not operator.may_read(Permission.KEYS_READ, Permission.KEYS_READ_OWN, record.consumer_id):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such key.")
    return JSONResponse(key_view(record, runtime.clock.wall()).model_dump())


@router.post("/keys", status_code=201, summary="Create an API key; the key is in this answer only.",
             response_model=IssuedKeyView, **needs(Permission.KEYS_WRITE, action="key.create", answers=_NOT_FOUND))
async def create(request: Request, body: NewKey, runtime: CurrentRuntime) -> Response:
    if runtime.config.keys is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "API keys need a `keys:` section with a pepper.")
    issued = await create_key(
        runtime.services.store, body.consumer, body.scopes, pepper=runtime.config.keys.pepper.get_secret_value()
        .encode(), clock=runtime.clock, expires_in_s=body.expires_in_s, roles=body.roles,
    )
    record = issued.record
    note_event(request, key_id=record.key_id, consumer=record.consumer_id, scopes=sorted(record.scopes),
               roles=sorted(record.roles))
    view = IssuedKeyView(key=issued.key, key_id=record.key_id, consumer=record.consumer_id,
                         scopes=sorted(record.scopes), roles=sorted(record.roles), expires_at=record.expires_at)
    return JSONResponse(view.model_dump(), status_code=201)


@router.post("/keys/{key_id}/rotate", summary="A new secret for the key; the former one works for `grace_s` more. "
             "The new key is in this answer only.", response_model=IssuedKeyView,
             **needs(Permission.KEYS_WRITE, action="key.rotate", answers=_NOT_FOUND))
async def rotate(request: Request, key_id: KeyId, body: Rotation, runtime: CurrentRuntime) -> Response:
    verifier = runtime.key_verifier
    if verifier is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "API keys are not configured.")
    rotation = await rotate_key(runtime, verifier, key_id, body.grace_s)
    if rotation is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such key, or it is revoked.")
    note_event(request, grace_s=body.grace_s, broadcast=rotation.broadcast)
    return JSONResponse(rotation.issued.model_dump())


async def _set_disabled(request: Request, key_id: KeyId, runtime: GatewayRuntime, disabled: bool) -> Response:
    verifier = runtime.key_verifier
    if verifier is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "API keys are not configured.")
    change = await set_key_disabled(runtime, verifier, key_id, disabled)
    if change is None:
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such key, or it is revoked.")
    return JSONResponse(change.model_dump())


@router.post("/keys/{key_id}/disable", summary="Refuse the key until it is enabled again.", response_model=KeyChange,
             **needs(Permission.KEYS_WRITE, action="key.disable", answers=_NOT_FOUND))
async def disable(request: Request, key_id: KeyId, runtime: CurrentRuntime) -> Response:
    return await _set_disabled(request, key_id, runtime, True)


@router.post("/keys/{key_id}/enable", summary="Accept a disabled key again (a revoked one stays revoked).",
             response_model=KeyChange, **needs(Permission.KEYS_WRITE, action="key.enable", answers=_NOT_FOUND))
async def enable(request: Request, key_id: KeyId, runtime: CurrentRuntime) -> Response:
    return await _set_disabled(request, key_id, runtime, False)


@router.post("/keys/{key_id}/revoke", summary="Revoke an API key for good; every instance refuses it within a second.",
             response_model=KeyChange, **needs(Permission.KEYS_WRITE, action="key.revoke", answers=_NOT_FOUND))
async def revoke(request: Request, key_id: KeyId, runtime: CurrentRuntime) -> Response:
    verifier = runtime.key_verifier
    if verifier is None:
        return problem(ErrorCode.ADMIN_CONFLICT, request, "API keys are not configured.")
    if not await verifier.revoke(key_id):
        return problem(ErrorCode.ADMIN_NOT_FOUND, request, "No such key.")
    return JSONResponse(KeyChange(key_id=key_id, status="revoked", broadcast=await _broadcast(runtime, key_id))
                        .model_dump())


