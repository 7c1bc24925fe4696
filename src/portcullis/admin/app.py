"""The admin listener: health probes, Prometheus metrics, reload, API keys, egress breakers and budgets.

Why a separate listener (default 127.0.0.1): operational endpoints must never be reachable on the
public API port. ``/healthz`` says the process is alive; ``/readyz`` says it can serve (config
loaded, store answering within a deadline, shared state reachable or degraded); ``/metrics`` is the
Prometheus text format. Admin credentials and roles come with the admin-API issue; until then keep
this listener on loopback or a private interface.

Errors are RFC 9457 problem documents, like the API listener's, with an error code and a request
id. An unreachable store is a 503 ``store.unavailable`` with Retry-After: with PostgreSQL down, keys
cannot be created or revoked, while the gateway keeps serving the keys it has cached.

Readiness and the store: a SQLite file that cannot be read makes the instance not ready. A shared
PostgreSQL that is down is reported as ``degraded`` and the instance stays ready, because every
instance sees the same outage: taking them all out of the load balancer would turn a database
outage into a full one, while they can still serve cached keys and spill the audit trail. The
checks (``config``, ``store``, which holds keys and the audit table alike, and ``shared_state``)
run side by side, and ``/readyz`` answers within ``_READY_DEADLINE_S`` whatever they do
(``observability/readiness.py``): a check that does not answer in time counts as down (``store``:
``degraded`` or ``unavailable`` as above; ``shared_state``: ``degraded``) and is named in
``timed_out``::

    {"status": "ready", "checks": {"config": "ok", "store": "degraded", "shared_state": "ok"},
     "timed_out": ["store"]}
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException

from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import CallContext
from portcullis.errors import ErrorCode, StoreUnavailable
from portcullis.http.problem import render_problem
from portcullis.identity.api_keys import CONSUMER_PATTERN, SCOPE_PATTERN, create_key
from portcullis.ids import random_hex
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.reload import ReloadBusy, Reloader
from portcullis.ingress.runtime import Runtime
from portcullis.observability.readiness import Check, CheckStatus, ReadinessProbe
from portcullis.stores.redis_events import RELOAD_EVENT, REVOKE_EVENT

__all__ = ["create_admin_app"]

log = logging.getLogger("portcullis.admin")

_READY_DEADLINE_S = 1.0  # what /readyz answers within, whatever the stores do
_CHECK_TIMEOUT_S = 0.8  # each check's own; the rest of the deadline is for answering
_STORE_RETRY_AFTER_S = 5


def problem(code: ErrorCode, detail: str | None = None, *, retry_after_s: int | None = None) -> Response:
    extra = [(b"retry-after", str(retry_after_s).encode())] if retry_after_s is not None else []
    status, headers, body = render_problem(code, random_hex(128), detail=detail, extra_headers=extra)
    return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})


class NewKey(BaseModel):
    """``POST /keys``: the same rules as ``portcullis keys create``."""

    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(pattern=f"^{CONSUMER_PATTERN}$")
    scopes: list[Annotated[str, StringConstraints(pattern=f"^{SCOPE_PATTERN}$")]] = Field(
        default_factory=list, max_length=64)
    expires_in_s: float | None = Field(None, gt=0)


def _readiness_checks(runtime: Runtime) -> list[Check]:
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


def create_admin_app(gateway: GatewayApp, reloader: Reloader | None = None) -> FastAPI:
    app = FastAPI(title="Portcullis admin", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StoreUnavailable)
    async def store_down(_: Request, exc: StoreUnavailable) -> Response:
        log.warning("admin: store unavailable (%s)", exc)
        return problem(ErrorCode.STORE_UNAVAILABLE, retry_after_s=_STORE_RETRY_AFTER_S)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> Response:
        return problem(ErrorCode.REQUEST_MALFORMED, "; ".join(
            ".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in exc.errors()
        )[:500])

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return problem(ErrorCode.METHOD_NOT_ALLOWED)
        return problem(ErrorCode.ADMIN_NOT_FOUND if exc.status_code == 404 else ErrorCode.REQUEST_MALFORMED)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> Response:
        log.error("admin: unexpected error", exc_info=exc)
        return problem(ErrorCode.INTERNAL)

    @app.get("/healthz", summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    probe = ReadinessProbe(deadline_s=_READY_DEADLINE_S)

    @app.get("/readyz", summary="Readiness: config loaded, store and shared state answering within a deadline.")
    async def readyz() -> JSONResponse:
        report = await probe.run(_readiness_checks(gateway.runtime))
        return JSONResponse(report.to_json(), status_code=200 if report.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics.")
    async def metrics() -> Response:
        return Response(gateway.runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/reload", summary="Reload the config file here and on every instance sharing state; one at a time, "
              "at most once per reload.min_interval (429 with Retry-After otherwise).")
    async def reload() -> Response:
        if reloader is None:
            return problem(ErrorCode.ADMIN_CONFLICT, "This gateway was not started from a config file.")
        result = await reloader.reload()
        if isinstance(result, ReloadBusy):
            return problem(ErrorCode.ADMIN_RELOAD_BUSY, result.detail, retry_after_s=math.ceil(result.retry_after_s))
        if not result.ok:
            return problem(ErrorCode.ADMIN_CONFIG_REJECTED, result.error)
        shared = gateway.runtime.services.shared
        broadcast = shared is not None and await shared.events.publish(RELOAD_EVENT)
        return JSONResponse({"status": "reloaded", "restart_needed": list(result.restart_needed),
                             "broadcast": broadcast})

    @app.get("/egress/breakers", summary="Every egress route's circuit breaker state.")
    async def breakers() -> Response:
        executor = gateway.runtime.egress
        if executor is None:
            return problem(ErrorCode.ADMIN_NOT_FOUND, "Egress is not configured.")
        return JSONResponse([
            {"route": name, "state": b.state.value, "retry_after_s": round(b.retry_after_s(), 3)}
            for name, b in executor.breakers().items()
        ])

    @app.post("/egress/breakers/{route}/{action}", summary="Force a breaker open or closed, or reset it.")
    async def breaker_action(route: str, action: str) -> Response:
        executor = gateway.runtime.egress
        breaker = executor.breakers().get(route) if executor is not None else None
        if breaker is None:
            return problem(ErrorCode.ADMIN_NOT_FOUND, "No such egress route.")
        if action == "open":
            breaker.force(BreakerState.FORCED_OPEN)
        elif action == "close":
            breaker.force(BreakerState.FORCED_CLOSED)
        elif action == "reset":
            breaker.reset()
        else:
            return problem(ErrorCode.REQUEST_MALFORMED, "The action is open, close or reset.")
        return JSONResponse({"route": route, "state": breaker.state.value})

    @app.get("/egress/budgets", summary="What is left of each budget a call would spend from.")
    async def budgets(route: str, workflow_id: str, execution_id: str, user: str) -> Response:
        executor = gateway.runtime.egress
        if executor is None:
            return problem(ErrorCode.ADMIN_NOT_FOUND, "Egress is not configured.")
        try:
            left = await executor.budgets_remaining(CallContext(execution_id, workflow_id, user), route)
        except KeyError:
            return problem(ErrorCode.ADMIN_NOT_FOUND, "No such egress route.")
        return JSONResponse({"route": route, "remaining": left})

    @app.post("/keys", status_code=201, summary="Create an API key; the key is in this answer only.")
    async def new_key(body: NewKey) -> Response:
        runtime = gateway.runtime
        if runtime.config.keys is None:
            return problem(ErrorCode.ADMIN_CONFLICT, "API keys need a `keys:` section with a pepper.")
        issued = await create_key(
            runtime.services.store, body.consumer, body.scopes, pepper=runtime.config.keys.pepper.get_secret_value()
            .encode(), clock=runtime.clock, expires_in_s=body.expires_in_s,
        )
        record = issued.record
        return JSONResponse({"key": issued.key, "key_id": record.key_id, "consumer": record.consumer_id,
                             "scopes": sorted(record.scopes), "expires_at": record.expires_at},
                            status_code=201, headers={"Cache-Control": "no-store"})

    @app.post("/keys/{key_id}/revoke", summary="Revoke an API key; every instance refuses it within a second.")
    async def revoke(key_id: str) -> Response:
        verifier = gateway.runtime.key_verifier
        if verifier is None:
            return problem(ErrorCode.ADMIN_CONFLICT, "API keys are not configured.")
        found = await verifier.revoke(key_id)
        if not found:
            return problem(ErrorCode.ADMIN_NOT_FOUND, "No such key.")
        shared = gateway.runtime.services.shared
        broadcast = shared is not None and await shared.events.publish(REVOKE_EVENT, key_id=key_id)
        return JSONResponse({"status": "revoked", "key_id": key_id, "broadcast": broadcast})

    return app
