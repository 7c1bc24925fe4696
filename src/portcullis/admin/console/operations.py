"""Console pages for running the gateway: overview, egress budgets, breakers, anomalies.

Each route declares the permission of the API route it mirrors (``GET /status``, ``GET /metrics``,
``GET /egress/budgets``, ``GET /egress/breakers``, ``POST /egress/breakers/{route}/{action}``,
``GET /anomalies``) and calls the same functions that route does; a page only shapes the answer
into HTML. The overview's traffic table needs ``metrics.read`` on top of ``status.read`` (as
``/metrics`` does), and its top consumers ``audit.read`` (as ``/audit/records`` does); a role
without them sees the status summary alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.responses import RedirectResponse

from portcullis.admin.console.door import PREFIX, ConsoleDoor, ConsoleRoute, console_session
from portcullis.admin.console.traffic import ConsumerCount, route_traffic, top_consumers
from portcullis.admin.context import CurrentOperator, CurrentRuntime
from portcullis.admin.guard import needs
from portcullis.admin.routes.egress import apply_breaker_action, breaker_view
from portcullis.admin.routes.probes import status_summary
from portcullis.egress.budgets import CallContext
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.stores.base import AuditSearch

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_TOP_CONSUMERS_WINDOW_S = 300.0
_TOP_CONSUMERS_RECORDS = 1000
_Id = Annotated[str, Query(max_length=128)]


def _door(request: Request) -> ConsoleDoor:
    door: ConsoleDoor = request.app.state.console
    return door


async def _consumers(runtime: GatewayRuntime) -> list[ConsumerCount]:
    page = await runtime.services.store.search_audit(AuditSearch(
        since=runtime.clock.wall() - _TOP_CONSUMERS_WINDOW_S, record_class="request", limit=_TOP_CONSUMERS_RECORDS))
    return top_consumers(page.records)


@router.get(f"{PREFIX}/overview", **needs(Permission.STATUS_READ))
async def overview(request: Request, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    summary = await status_summary(runtime, _door(request).probe)
    traffic = route_traffic(runtime.metrics.render().decode()) if operator.may(Permission.METRICS_READ) else None
    consumers = await _consumers(runtime) if operator.may(Permission.AUDIT_READ) else None
    return _door(request).pages.page(request, "overview.html", operator=operator,
                                     csrf_token=console_session(request).csrf_token, summary=summary,
                                     traffic=traffic, consumers=consumers)


@router.get(f"{PREFIX}/overview.json", **needs(Permission.METRICS_READ))
async def overview_numbers(runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    traffic = route_traffic(runtime.metrics.render().decode())
    consumers = await _consumers(runtime) if operator.may(Permission.AUDIT_READ) else []
    return JSONResponse({"routes": [r.to_json() for r in traffic],
                         "consumers": [{"consumer": c.consumer, "requests": c.requests} for c in consumers]})


@router.get(f"{PREFIX}/budgets", **needs(Permission.BUDGETS_READ))
async def budgets(request: Request, runtime: CurrentRuntime, operator: CurrentOperator, route: _Id = "",
                  workflow_id: _Id = "", execution_id: _Id = "", user: _Id = "") -> Response:
    executor = runtime.egress
    routes = sorted(executor.breakers()) if executor is not None else []
    remaining: dict[str, float] | None = None
    message = None
    if executor is not None and route and workflow_id and execution_id and user:
        try:
            remaining = await executor.budgets_remaining(CallContext(execution_id, workflow_id, user), route)
        except KeyError:
            message = "No such egress route."
    return _door(request).pages.page(
        request, "budgets.html", operator=operator, csrf_token=console_session(request).csrf_token,
        egress=executor is not None, routes=routes, remaining=remaining, message=message,
        query={"route": route, "workflow_id": workflow_id, "execution_id": execution_id, "user": user})


@router.get(f"{PREFIX}/breakers", **needs(Permission.BREAKERS_READ))
async def breakers(request: Request, runtime: CurrentRuntime, operator: CurrentOperator,
                   changed: Annotated[str, Query(max_length=64)] = "") -> Response:
    executor = runtime.egress
    views = [breaker_view(n, b) for n, b in sorted(executor.breakers().items())] if executor is not None else None
    return _door(request).pages.page(
        request, "breakers.html", operator=operator, csrf_token=console_session(request).csrf_token,
        breakers=views, changed=changed, may_write=operator.may(Permission.BREAKERS_WRITE))


@router.post(PREFIX + "/breakers/{route}/{action}", **needs(Permission.BREAKERS_WRITE, action="breaker.force"))
async def breaker_action(request: Request, route: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")],
                         action: Literal["open", "close", "reset"], runtime: CurrentRuntime,
                         operator: CurrentOperator) -> Response:
    executor = runtime.egress
    breaker = executor.breakers().get(route) if executor is not None else None
    if breaker is None:
        return _door(request).pages.page(request, "refused.html", status=404, operator=operator,
                                         csrf_token=console_session(request).csrf_token,
                                         message="No such egress route.")
    apply_breaker_action(breaker, action)
    return RedirectResponse(f"{PREFIX}/breakers?changed={route}", status_code=303)


@router.get(f"{PREFIX}/anomalies", **needs(Permission.ANOMALIES_READ))
async def anomalies(request: Request, runtime: CurrentRuntime, operator: CurrentOperator) -> Response:
    service = runtime.services.anomaly
    return _door(request).pages.page(
        request, "anomalies.html", operator=operator, csrf_token=console_session(request).csrf_token,
        enabled=service is not None, anomalies=service.recent() if service is not None else [])
