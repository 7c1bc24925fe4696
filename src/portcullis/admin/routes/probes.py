"""Liveness, readiness, metrics, the OpenAPI document and a status summary.

Readiness and the store: a SQLite file that cannot be read makes the instance not ready. A shared
PostgreSQL that is down is reported as ``degraded`` and the instance stays ready, because every
instance sees the same outage: taking them all out of the load balancer would turn a database
outage into a full one, while they can still serve cached keys and spill the audit trail. The
checks (``config``, ``store``, which holds keys and the audit table alike, and ``shared_state``)
run side by side, and ``/readyz`` answers within ``READY_DEADLINE_S`` whatever they do
(``observability/readiness.py``): a check that does not answer in time counts as down (``store``:
``degraded`` or ``unavailable`` as above; ``shared_state``: ``degraded``) and is named in
``timed_out``::

    {"status": "ready", "checks": {"config": "ok", "store": "degraded", "shared_state": "ok"},
     "timed_out": ["store"]}

``/healthz`` and ``/readyz`` are public (orchestrators probe them without credentials);
``/metrics`` is public only with ``admin.metrics_public``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from portcullis import __version__
from portcullis.admin.context import CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs, public
from portcullis.errors import StoreUnavailable
from portcullis.gateway.runtime import GatewayRuntime
from portcullis.identity.admin_roles import Permission
from portcullis.observability.readiness import Check, CheckStatus, ReadinessProbe

__all__ = ["READY_DEADLINE_S", "probes_router", "status_summary"]

READY_DEADLINE_S = 1.0  # what /readyz answers within, whatever the stores do
_CHECK_TIMEOUT_S = 0.8  # each check's own; the rest of the deadline is for answering


def _readiness_checks(runtime: GatewayRuntime) -> list[Check]:
    """What ``/readyz`` asks. Degraded still serves: a shared PostgreSQL or Redis that is down is
    down for every instance alike (cached keys, spilled audit, local limit shares), so it is
    reported and the instance stays ready."""
    store = runtime.services.store
    store_down = CheckStatus.DEGRADED if runtime.config.store.is_postgres else CheckStatus.UNAVAILABLE

    async def config() -> CheckStatus:
        return CheckStatus.OK  # a runtime exists only for a config that loaded

    async def store_answers() -> CheckStatus:
        try:
            await store.ping()
        except StoreUnavailable:
            return store_down
        return CheckStatus.OK

    checks = [Check("config", config, _CHECK_TIMEOUT_S, on_timeout=CheckStatus.OK),
              Check("store", store_answers, _CHECK_TIMEOUT_S, on_timeout=store_down, on_error=store_down)]
    shared = runtime.services.shared
    if shared is not None:
        async def shared_state_answers() -> CheckStatus:
            return CheckStatus.OK if await shared.probe() else CheckStatus.DEGRADED

        checks.append(Check("shared_state", shared_state_answers, _CHECK_TIMEOUT_S,
                            on_timeout=CheckStatus.DEGRADED, on_error=CheckStatus.DEGRADED))
    return checks


async def status_summary(runtime: GatewayRuntime, probe: ReadinessProbe) -> dict[str, Any]:
    """What ``/status`` answers (and the console's overview shows)."""
    report = await probe.run(_readiness_checks(runtime))
    audit = runtime.services.audit.stats
    egress = runtime.egress
    return {
        "version": __version__,
        "ready": report.ready,
        "checks": report.to_json()["checks"],
        "routes": len(runtime.routes),
        "egress_routes": len(egress.breakers()) if egress is not None else 0,
        "open_breakers": sorted(n for n, b in (egress.breakers() if egress else {}).items()
                                if b.state.value != "closed"),
        "audit": {"queued": audit.queued, "written": audit.written, "spilled": audit.spilled,
                  "lost": audit.lost},
    }


def probes_router(*, metrics_public: bool) -> APIRouter:
    router = APIRouter(route_class=GuardedRoute)
    probe = ReadinessProbe(deadline_s=READY_DEADLINE_S)

    @router.get("/healthz", summary="Liveness: the process answers.", **public())
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: config loaded, store and shared state answering within a deadline.",
                responses={503: {"description": "Not ready."}}, **public())
    async def readyz(runtime: CurrentRuntime) -> JSONResponse:
        report = await probe.run(_readiness_checks(runtime))
        return JSONResponse(report.to_json(), status_code=200 if report.ready else 503)

    async def metrics(runtime: CurrentRuntime) -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    declared = public() if metrics_public else needs(Permission.METRICS_READ)
    router.get("/metrics", summary="Prometheus metrics.", response_class=Response, **declared)(metrics)

    @router.get("/openapi.json", summary="This API's OpenAPI document.", **needs(Permission.STATUS_READ))
    async def openapi(request: Request) -> dict[str, Any]:
        document: dict[str, Any] = request.app.openapi()
        return document

    @router.get("/status", summary="A summary: version, routes, readiness, audit writer, breakers.",
                **needs(Permission.STATUS_READ))
    async def status(runtime: CurrentRuntime) -> dict[str, Any]:
        return await status_summary(runtime, probe)

    return router
