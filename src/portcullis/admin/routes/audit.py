"""The audit trail through the admin API: search, export, verify, retention.

Who reads what (``identity.admin_roles``): ``audit.read_own`` (a developer) reads the ``request``
records of the consumers their token names, under ``/audit/consumers/{consumer}/records``;
``audit.read`` reads every ``request`` record at ``/audit/records``; ``audit.read_security`` reads
every class there, security events included. Two routes rather than one because a route declares
one permission and the ``compliance`` role holds ``audit.read`` but not ``audit.read_own``. Export,
verify and retention have permissions of their own (the ``compliance`` role holds them). A search
that asks for more than the operator may read is refused (403), never silently narrowed, so an
answer never looks complete when it is not.

Every call is a security event (``admin.guard``): reading the trail is itself something an
auditor asks about. Export streams the answer page by page (``audit.export``), so a year of
records never sits in memory; verify reads the store (and the JSONL files, in a worker thread) as
``portcullis audit verify`` does and answers with the same report.

What it refuses: to build SQL, to change records, or to expire anything but what
``audit.retention`` says has expired.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath  # fastapi.Path is the path parameter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import GuardedRoute, Operator, needs, note_event
from portcullis.admin.problems import problem, problem_answer
from portcullis.audit.chain import read_heads
from portcullis.audit.export import export
from portcullis.audit.retention import expire
from portcullis.audit.setup import audit_signer
from portcullis.audit.verify import rotated_files, verify_files, verify_store
from portcullis.errors import CursorInvalid, ErrorCode
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.identity.api_keys import CONSUMER_PATTERN
from portcullis.stores.base import AuditSearch

__all__ = ["Filters", "default_class", "router", "search_refusal", "to_search", "verify_trail"]

router = APIRouter(route_class=GuardedRoute, tags=["audit"])

_REQUEST = "request"
_MALFORMED: dict[int | str, dict[str, Any]] = {400: problem_answer("A filter or the cursor is malformed.")}
_Text = Annotated[str | None, Query(max_length=256)]


class Filters(BaseModel):
    """The search filters, shared by search and export (query parameters)."""

    since: float | None = Field(None, description="From this time (seconds since the epoch), inclusive.")
    until: float | None = Field(None, description="Before this time (seconds since the epoch).")
    consumer: str | None = None
    key: str | None = None
    route: str | None = None
    decision: str | None = None
    status: int | None = None
    workflow: str | None = None
    execution: str | None = None
    user: str | None = None
    request_id: str | None = None
    record_class: str | None = Field(None, alias="class")


class RecordPage(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Retention(BaseModel):
    request_s: float
    security_s: float
    compliance_s: float
    debug_s: float
    run_every_s: float
    enabled: bool


class ExpiryView(BaseModel):
    deleted: dict[str, int]
    total: int
    stopped_early: bool


def _filters(
    since: float | None = None, until: float | None = None, consumer: _Text = None, key: _Text = None,
    route: _Text = None, decision: _Text = None, status: Annotated[int | None, Query(ge=100, le=599)] = None,
    workflow: _Text = None, execution: _Text = None, user: _Text = None, request_id: _Text = None,
    record_class: Annotated[str | None, Query(alias="class", max_length=32)] = None,
) -> Filters:
    return Filters.model_validate({
        "since": since, "until": until, "consumer": consumer, "key": key, "route": route, "decision": decision,
        "status": status, "workflow": workflow, "execution": execution, "user": user, "request_id": request_id,
        "class": record_class,
    })


def to_search(f: Filters, *, limit: int = 100, cursor: str | None = None) -> AuditSearch:
    return AuditSearch(
        since=f.since, until=f.until, consumer_id=f.consumer, key_id=f.key, route=f.route, decision=f.decision,
        status=f.status, workflow_id=f.workflow, execution_id=f.execution, user_id=f.user, request_id=f.request_id,
        record_class=f.record_class, limit=limit, cursor=cursor,
    )


def default_class(operator: Operator, record_class: str | None) -> str | None:
    """No class named: every class for who may read them all, request records for everyone else."""
    return record_class if record_class is not None or operator.may(Permission.AUDIT_READ_SECURITY) else _REQUEST


def search_refusal(operator: Operator, f: Filters) -> str | None:
    """Why ``operator`` may not run this search, or None; a search may only ask for what they may read."""
    if not operator.may(Permission.AUDIT_READ_SECURITY) and f.record_class != _REQUEST:
        return "Name class=request: reading other classes needs audit.read_security."
    return None


async def _page(request: Request, runtime: GatewayRuntime, f: Filters, limit: int, cursor: str | None) -> Response:
    try:
        page = await runtime.services.store.search_audit(to_search(f, limit=limit, cursor=cursor))
    except CursorInvalid:
        return problem(ErrorCode.REQUEST_MALFORMED, request, "The cursor is not one this API handed out.")
    note_event(request, returned=len(page.records))
    return JSONResponse(RecordPage(records=page.records, next_cursor=page.next_cursor).model_dump())


@router.get("/audit/consumers/{consumer}/records", summary="A consumer's request records, a page at a time.",
            response_model=RecordPage,
            **needs(Permission.AUDIT_READ_OWN, action="audit.search", answers=_MALFORMED))
async def consumer_records(
    request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
    consumer: Annotated[str, Path(pattern=f"^{CONSUMER_PATTERN}$")],
    since: float | None = None, until: float | None = None, route: _Text = None, decision: _Text = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None, request_id: _Text = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,1024}$")] = None,
) -> Response:
    if not operator.may_read(Permission.AUDIT_READ, Permission.AUDIT_READ_OWN, consumer):
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, "Only the consumers your token names.")
    f = _filters(since, until, consumer, None, route, decision, status, None, None, None, request_id, _REQUEST)
    return await _page(request, runtime, f, limit, cursor)


@router.get("/audit/records", summary="Search the audit trail a page at a time, ordered by time.",
            response_model=RecordPage,
            **needs(Permission.AUDIT_READ, action="audit.search", answers=_MALFORMED))
async def search_records(
    request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
    since: float | None = None, until: float | None = None, consumer: _Text = None, key: _Text = None,
    route: _Text = None, decision: _Text = None, status: Annotated[int | None, Query(ge=100, le=599)] = None,
    workflow: _Text = None, execution: _Text = None, user: _Text = None, request_id: _Text = None,
    record_class: Annotated[str | None, Query(alias="class", max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,1024}$")] = None,
) -> Response:
    f = _filters(since, until, consumer, key, route, decision, status, workflow, execution, user, request_id,
                 default_class(operator, record_class))
    refusal = search_refusal(operator, f)
    if refusal is not None:
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, refusal)
    return await _page(request, runtime, f, limit, cursor)


_EXTENSION = {"jsonl": "jsonl", "csv": "csv", "ocsf": "ocsf.jsonl"}


@router.get("/audit/export", summary="Every matching record, streamed as JSON lines, CSV or OCSF events (ND-JSON).",
            response_class=StreamingResponse,
            **needs(Permission.AUDIT_EXPORT, action="audit.export", answers=_MALFORMED))
async def export_records(
    request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
    fmt: Annotated[Literal["jsonl", "csv", "ocsf"], Query(
        alias="format", description="jsonl: the sealed records; csv: fixed columns; ocsf: one OCSF event a line.",
    )] = "jsonl",
    since: float | None = None, until: float | None = None, consumer: _Text = None, key: _Text = None,
    route: _Text = None, decision: _Text = None, status: Annotated[int | None, Query(ge=100, le=599)] = None,
    workflow: _Text = None, execution: _Text = None, user: _Text = None, request_id: _Text = None,
    record_class: Annotated[str | None, Query(alias="class", max_length=32)] = None,
) -> Response:
    f = _filters(since, until, consumer, key, route, decision, status, workflow, execution, user, request_id,
                 default_class(operator, record_class))
    refusal = search_refusal(operator, f)
    if refusal is not None:
        return problem(ErrorCode.AUTHZ_FORBIDDEN, request, refusal)
    note_event(request, format=fmt, filters=f.model_dump(by_alias=True, exclude_none=True))
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        export(runtime.services.store, to_search(f), fmt=fmt), media_type=media,
        headers={"content-disposition": f'attachment; filename="audit.{_EXTENSION[fmt]}"', "cache-control": "no-store"},
    )


@router.post("/audit/verify", summary="Check the hash chains and signed checkpoints of the store (and JSONL files).",
             **needs(Permission.AUDIT_VERIFY, action="audit.verify"))
async def verify(request: Request, runtime: CurrentRuntime) -> Response:
    reports = await verify_trail(runtime)
    note_event(request, ok=all(r["ok"] for r in reports.values()),
               problems=sum(len(r["problems"]) for r in reports.values()))
    return JSONResponse(reports)


async def verify_trail(runtime: GatewayRuntime) -> dict[str, Any]:
    """The hash chains and signed checkpoints of the store and the JSONL files, checked (a report per place)."""
    cfg = runtime.config.audit
    signer = audit_signer(cfg)
    heads = list((await asyncio.to_thread(read_heads, FilePath(cfg.heads_file))).values())
    reports: dict[str, Any] = {}
    if cfg.to_store:
        reports["store"] = (await verify_store(runtime.services.store, signer=signer, heads=heads)).to_dict()
    if cfg.file:
        paths = await asyncio.to_thread(rotated_files, FilePath(cfg.file))
        reports["files"] = (await asyncio.to_thread(verify_files, paths, signer=signer, heads=heads)).to_dict()
    return reports


@router.get("/audit/retention", summary="How long the store keeps each record class.", response_model=Retention,
            **needs(Permission.AUDIT_RETENTION))
async def retention(runtime: CurrentRuntime) -> Response:
    r = runtime.config.audit.retention
    return JSONResponse(Retention(request_s=r.request, security_s=r.security, compliance_s=r.compliance,
                                  debug_s=r.debug, run_every_s=r.run_every, enabled=r.enabled).model_dump())


@router.post("/audit/retention/run", summary="Remove what retention says has expired, now (bounded like the "
             "periodic run).", response_model=ExpiryView, **needs(Permission.AUDIT_RETENTION, action="audit.expire"))
async def run_retention(request: Request, runtime: CurrentRuntime) -> Response:
    r = runtime.config.audit.retention
    result = await expire(runtime.services.store, r, now=runtime.clock.wall(), batch_rows=r.batch_rows,
                          max_rows=r.max_rows_per_run)
    note_event(request, deleted=dict(result.deleted), total=result.total)
    return JSONResponse(ExpiryView(deleted=dict(result.deleted), total=result.total,
                                   stopped_early=result.stopped_early).model_dump())
