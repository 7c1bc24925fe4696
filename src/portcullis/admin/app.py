"""The admin listener: health probes, Prometheus metrics, reload, key revocation, egress breakers.

Why a separate listener (default 127.0.0.1): operational endpoints must never be reachable on the
public API port. ``/healthz`` says the process is alive; ``/readyz`` says it can serve (config
loaded, store answering within a deadline); ``/metrics`` is the Prometheus text format.
Admin credentials and roles come with the admin-API issue; until then keep this listener on
loopback or a private interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import CallContext
from portcullis.errors import StoreUnavailable
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.reload import Reloader
from portcullis.ingress.shared_events import RELOAD_EVENT, REVOKE_EVENT

__all__ = ["create_admin_app"]

_READY_DEADLINE_S = 1.0


def create_admin_app(gateway: GatewayApp, reloader: Reloader | None = None) -> FastAPI:
    app = FastAPI(title="Portcullis admin", version="0.1.0", docs_url=None, redoc_url=None)

    @app.get("/healthz", summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: config loaded and store reachable.")
    async def readyz() -> JSONResponse:
        runtime = gateway.runtime
        checks: dict[str, str] = {"config": "ok"}
        ping: Callable[[], Awaitable[None]] = runtime.services.store.ping
        try:
            await asyncio.wait_for(ping(), _READY_DEADLINE_S)
            checks["store"] = "ok"
        except (StoreUnavailable, TimeoutError):
            checks["store"] = "unavailable"
        shared = runtime.services.shared
        if shared is not None:
            # Degraded still serves (local share or fail closed): report it, stay ready. The probe
            # itself asks Redis, so an idle instance notices an outage (and a recovery) too.
            try:
                await asyncio.wait_for(shared.client.ping(), _READY_DEADLINE_S)
                shared.outage.recovered()
            except (RedisError, OSError, TimeoutError) as exc:
                shared.outage.failed(exc)
            checks["shared_state"] = "degraded" if shared.degraded else "ok"
        ready = all(v in ("ok", "degraded") for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics.")
    async def metrics() -> Response:
        return Response(gateway.runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/reload", summary="Reload the config file; the old config keeps serving on error.")
    async def reload() -> JSONResponse:
        if reloader is None:
            return JSONResponse({"status": "unsupported"}, status_code=409)
        result = await reloader.reload()
        if not result.ok:
            return JSONResponse({"status": "rejected", "error": result.error}, status_code=422)
        shared = gateway.runtime.services.shared
        broadcast = shared is not None and await shared.events.publish(RELOAD_EVENT)
        return JSONResponse({"status": "reloaded", "restart_needed": list(result.restart_needed),
                             "broadcast": broadcast})

    @app.get("/egress/breakers", summary="Every egress route's circuit breaker state.")
    async def breakers() -> JSONResponse:
        executor = gateway.runtime.egress
        if executor is None:
            return JSONResponse({"code": "egress.not_configured"}, status_code=404)
        return JSONResponse([
            {"route": name, "state": b.state.value, "retry_after_s": round(b.retry_after_s(), 3)}
            for name, b in executor.breakers().items()
        ])

    @app.post("/egress/breakers/{route}/{action}", summary="Force a breaker open or closed, or reset it.")
    async def breaker_action(route: str, action: str) -> JSONResponse:
        executor = gateway.runtime.egress
        breaker = executor.breakers().get(route) if executor is not None else None
        if breaker is None:
            return JSONResponse({"code": "egress.unknown_route"}, status_code=404)
        if action == "open":
            breaker.force(BreakerState.FORCED_OPEN)
        elif action == "close":
            breaker.force(BreakerState.FORCED_CLOSED)
        elif action == "reset":
            breaker.reset()
        else:
            return JSONResponse({"code": "request.malformed", "detail": "action is open, close or reset"},
                                status_code=400)
        return JSONResponse({"route": route, "state": breaker.state.value})

    @app.get("/egress/budgets", summary="What is left of each budget a call would spend from.")
    async def budgets(route: str, workflow_id: str, execution_id: str, user: str) -> JSONResponse:
        executor = gateway.runtime.egress
        if executor is None:
            return JSONResponse({"code": "egress.not_configured"}, status_code=404)
        try:
            left = await executor.budgets_remaining(CallContext(execution_id, workflow_id, user), route)
        except KeyError:
            return JSONResponse({"code": "egress.unknown_route"}, status_code=404)
        return JSONResponse({"route": route, "remaining": left})

    @app.post("/keys/{key_id}/revoke", summary="Revoke an API key; it stops working at once here.")
    async def revoke(key_id: str) -> JSONResponse:
        verifier = gateway.runtime.key_verifier
        if verifier is None:
            return JSONResponse({"status": "no_keys_configured"}, status_code=409)
        found = await verifier.revoke(key_id)
        if not found:
            return JSONResponse({"status": "not_found"}, status_code=404)
        shared = gateway.runtime.services.shared
        broadcast = shared is not None and await shared.events.publish(REVOKE_EVENT, key_id=key_id)
        return JSONResponse({"status": "revoked", "key_id": key_id, "broadcast": broadcast})

    return app
