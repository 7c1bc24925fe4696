"""Console pages over the audit trail: search (a request by its id included) and chain verification.

The same permissions and the same rules as ``admin/routes/audit.py``, through its functions:
``audit.read`` searches request records and, with ``audit.read_security``, every class
(``default_class``, ``search_refusal``: a search asking for more than the operator may read is
refused, never narrowed); ``audit.read_own`` (a developer) reads their own consumers' request
records at ``/console/audit/consumers/{consumer}``; ``audit.verify`` checks the chains
(``verify_trail``). A search is a security event (``audit.search``), as over the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from portcullis.admin.console.door import PREFIX, ConsoleDoor, ConsoleRoute, console_session
from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import Operator, needs, note_event
from portcullis.admin.routes.audit import Filters, default_class, search_refusal, to_search, verify_trail
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.identity.api_keys import CONSUMER_PATTERN

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_PAGE = 100
_Text = Annotated[str, Query(max_length=256)]
_FIELDS = ("request_id", "consumer", "route", "decision", "status", "class")


def _door(request: Request) -> ConsoleDoor:
    door: ConsoleDoor = request.app.state.console
    return door


def _filters(query: dict[str, str], record_class: str | None) -> Filters | None:
    status = query.get("status", "")
    if status and not (status.isdigit() and 100 <= int(status) <= 599):
        return None
    return Filters.model_validate({
        "consumer": query.get("consumer") or None, "route": query.get("route") or None,
        "decision": query.get("decision") or None, "status": int(status) if status else None,
        "request_id": query.get("request_id") or None, "class": record_class,
    })


async def _results(request: Request, runtime: GatewayRuntime, operator: Operator, query: dict[str, str],
                   f: Filters | None, *, action: str) -> Response:
    records: list[dict[str, Any]] | None = None
    refusal: str | None
    if f is None:
        status, refusal = 400, "Status must be a number from 100 to 599."
    elif (refusal := search_refusal(operator, f)) is not None:
        status = 403  # asked for more than the operator may read: refused, never narrowed
    else:
        status = 200
        if any(query.values()):
            records = (await runtime.services.store.search_audit(to_search(f, limit=_PAGE))).records
            note_event(request, returned=len(records))
    return _door(request).pages.page(request, "audit.html", status=status, operator=operator,
                           csrf_token=console_session(request).csrf_token, query=query, records=records,
                           message=refusal, action=action,
                           may_choose_class=operator.may(Permission.AUDIT_READ_SECURITY),
                           may_verify=operator.may(Permission.AUDIT_VERIFY), report=None)


@router.get(f"{PREFIX}/audit", **needs(Permission.AUDIT_READ, action="audit.search"))
async def search(request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
                 request_id: _Text = "", consumer: _Text = "", route: _Text = "", decision: _Text = "",
                 status: Annotated[str, Query(max_length=3)] = "",
                 record_class: Annotated[str, Query(alias="class", max_length=32)] = "") -> Response:
    query = {"request_id": request_id, "consumer": consumer, "route": route, "decision": decision,
             "status": status, "class": record_class}
    f = _filters(query, default_class(operator, record_class or None))
    return await _results(request, runtime, operator, query, f, action=f"{PREFIX}/audit")


@router.get(PREFIX + "/audit/consumers/{consumer}", **needs(Permission.AUDIT_READ_OWN, action="audit.search"))
async def consumer_records(request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
                           consumer: Annotated[str, Path(pattern=f"^{CONSUMER_PATTERN}$")],
                           request_id: _Text = "", route: _Text = "", decision: _Text = "",
                           status: Annotated[str, Query(max_length=3)] = "") -> Response:
    if not operator.may_read(Permission.AUDIT_READ, Permission.AUDIT_READ_OWN, consumer):
        return _door(request).pages.page(request, "refused.html", status=403, operator=operator,
                                         csrf_token=console_session(request).csrf_token,
                                         message="Only the consumers your token names.")
    query = {"request_id": request_id, "consumer": consumer, "route": route, "decision": decision,
             "status": status, "class": "request"}
    return await _results(request, runtime, operator, query, _filters(query, "request"),
                          action=f"{PREFIX}/audit/consumers/{consumer}")


@router.post(f"{PREFIX}/audit/verify", **needs(Permission.AUDIT_VERIFY, action="audit.verify"))
async def verify(request: Request, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    reports = await verify_trail(runtime)
    note_event(request, ok=all(r["ok"] for r in reports.values()),
               problems=sum(len(r["problems"]) for r in reports.values()))
    return _door(request).pages.page(
        request, "audit.html", operator=operator, csrf_token=console_session(request).csrf_token,
        query=dict.fromkeys(_FIELDS, ""), records=None, message=None, action=f"{PREFIX}/audit",
        may_choose_class=operator.may(Permission.AUDIT_READ_SECURITY), may_verify=True, report=reports)
