"""Console pages for keys and blocks: list, and the changes the operator's role permits.

Mirrors ``admin/routes/keys.py`` and ``admin/routes/controls.py`` with their permissions and
security events (``key.disable``, ``key.enable``, ``key.rotate``, ``block.create``,
``block.lift``), calling the same functions (``set_key_disabled``, ``rotate_key``, the
``IncidentControls`` service) and validating a new block with the API's own ``NewBlock`` model.
A rotated key's new secret is shown once, on the answer page, as the API shows it once.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.responses import RedirectResponse

from portcullis.admin.console.door import PREFIX, ConsoleDoor, ConsoleRoute, console_form, console_session
from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import Operator, needs, note_event
from portcullis.admin.routes.controls import BlockView, NewBlock
from portcullis.admin.routes.keys import key_view, rotate_key, set_key_disabled
from portcullis.controls import BlockKind
from portcullis.errors import InvalidControl
from portcullis.identity.admin_roles import Permission
from portcullis.identity.api_keys import CONSUMER_PATTERN

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_KeyId = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$")]
_DEFAULT_GRACE_S = 86_400.0
_CONSUMER = re.compile(CONSUMER_PATTERN)


def _door(request: Request) -> ConsoleDoor:
    door: ConsoleDoor = request.app.state.console
    return door


def _message(request: Request, operator: Operator, status: int, message: str) -> Response:
    return _door(request).pages.page(request, "refused.html", status=status, operator=operator,
                                     csrf_token=console_session(request).csrf_token, message=message)


@router.get(f"{PREFIX}/keys", **needs(Permission.KEYS_READ_OWN))
async def keys(request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
               consumer: Annotated[str, Query(max_length=64)] = "") -> Response:
    everything = operator.may(Permission.KEYS_READ)
    if not consumer and not everything:
        consumer = min(operator.consumers, default="")
    message = None
    views = []
    if consumer and not operator.may_read(Permission.KEYS_READ, Permission.KEYS_READ_OWN, consumer):
        message = "Only the consumers your token names."
    elif consumer and not _consumer_ok(consumer):
        message = "That is not a consumer name."
    elif consumer or everything:
        page = await runtime.services.store.page(consumer_id=consumer or None, consumer_prefix=None, after=None,
                                                 limit=200)
        now = runtime.clock.wall()
        views = [key_view(k, now) for k in page.keys]
    return _door(request).pages.page(
        request, "keys.html", status=403 if message and "token" in message else 200, operator=operator,
        csrf_token=console_session(request).csrf_token, keys=views, consumer=consumer, message=message,
        may_write=operator.may(Permission.KEYS_WRITE), own=sorted(operator.consumers), issued=None)


def _consumer_ok(consumer: str) -> bool:
    return _CONSUMER.fullmatch(consumer) is not None


@router.post(PREFIX + "/keys/{key_id}/disable", **needs(Permission.KEYS_WRITE, action="key.disable"))
async def disable(request: Request, key_id: _KeyId, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    return await _set_disabled(request, key_id, runtime, operator, True)


@router.post(PREFIX + "/keys/{key_id}/enable", **needs(Permission.KEYS_WRITE, action="key.enable"))
async def enable(request: Request, key_id: _KeyId, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    return await _set_disabled(request, key_id, runtime, operator, False)


async def _set_disabled(request: Request, key_id: str, runtime: CurrentRuntime, operator: Operator,
                        disabled: bool) -> Response:
    verifier = runtime.key_verifier
    if verifier is None:
        return _message(request, operator, 409, "API keys are not configured.")
    if await set_key_disabled(runtime, verifier, key_id, disabled) is None:
        return _message(request, operator, 404, "No such key, or it is revoked.")
    return RedirectResponse(f"{PREFIX}/keys", status_code=303)


@router.post(PREFIX + "/keys/{key_id}/rotate", **needs(Permission.KEYS_WRITE, action="key.rotate"))
async def rotate(request: Request, key_id: _KeyId, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    verifier = runtime.key_verifier
    if verifier is None:
        return _message(request, operator, 409, "API keys are not configured.")
    rotation = await rotate_key(runtime, verifier, key_id, _DEFAULT_GRACE_S)
    if rotation is None:
        return _message(request, operator, 404, "No such key, or it is revoked.")
    note_event(request, grace_s=_DEFAULT_GRACE_S, broadcast=rotation.broadcast)
    return _door(request).pages.page(
        request, "keys.html", operator=operator, csrf_token=console_session(request).csrf_token, keys=[],
        consumer=rotation.issued.consumer, message=None, may_write=True, own=sorted(operator.consumers),
        issued=rotation.issued)


@router.get(f"{PREFIX}/blocks", **needs(Permission.BLOCKS_READ))
async def blocks(request: Request, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    return await _blocks_page(request, runtime, operator)


async def _blocks_page(request: Request, runtime: CurrentRuntime, operator: Operator, *, status: int = 200,
                       message: str | None = None) -> Response:
    found = await runtime.services.controls.list_blocks(include_inactive=False)
    return _door(request).pages.page(
        request, "blocks.html", status=status, operator=operator, csrf_token=console_session(request).csrf_token,
        blocks=[BlockView.of(b) for b in found], kinds=[k.value for k in BlockKind], message=message,
        may_write=operator.may(Permission.BLOCKS_WRITE))


@router.post(f"{PREFIX}/blocks", **needs(Permission.BLOCKS_WRITE, action="block.create"))
async def add_block(request: Request, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    form = console_form(request)
    hours = form.get("expires_in_h", "").strip()
    try:
        body = NewBlock.model_validate({
            "kind": form.get("kind", ""), "subject": form.get("subject", ""), "reason": form.get("reason", ""),
            "expires_in_s": float(hours) * 3600 if hours else None})
    except (ValidationError, ValueError):
        return await _blocks_page(request, runtime, operator, status=400,
                                  message="Refused: check the kind, subject, reason and lifetime.")
    try:
        block = await runtime.services.controls.add_block(
            body.kind, body.subject, reason=body.reason, actor=operator.actor, expires_in_s=body.expires_in_s)
    except InvalidControl as exc:
        return await _blocks_page(request, runtime, operator, status=409, message=f"Refused: {exc}")
    note_event(request, block_id=block.block_id, kind=block.kind.value, subject=block.subject)
    return RedirectResponse(f"{PREFIX}/blocks", status_code=303)


@router.post(PREFIX + "/blocks/{block_id}/lift", **needs(Permission.BLOCKS_WRITE, action="block.lift"))
async def lift_block(request: Request, block_id: Annotated[str, Path(max_length=64)], runtime: CurrentRuntime,
                     operator: CurrentOperator) -> Response:
    if not await runtime.services.controls.lift_block(block_id, actor=operator.actor):
        return _message(request, operator, 404, "No such block in force.")
    return RedirectResponse(f"{PREFIX}/blocks", status_code=303)
