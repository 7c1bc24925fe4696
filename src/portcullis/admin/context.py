"""What an admin route reads from its app: the gateway, the reloader, the operator (FastAPI dependencies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portcullis.admin.guard import Operator, current_operator
from portcullis.gateway.reload import Reloader
from portcullis.gateway.runtime import GatewayRuntime, serving_runtime
from portcullis.ingress.app import GatewayApp

__all__ = ["CurrentOperator", "CurrentRuntime", "Gateway", "MaybeReloader"]


def _gateway(request: Request) -> GatewayApp:
    gateway: GatewayApp = request.app.state.gateway
    return gateway


def _runtime(request: Request) -> GatewayRuntime:
    return serving_runtime(_gateway(request))


def _reloader(request: Request) -> Reloader | None:
    reloader: Reloader | None = request.app.state.reloader
    return reloader


Gateway = Annotated[GatewayApp, Depends(_gateway)]
CurrentRuntime = Annotated[GatewayRuntime, Depends(_runtime)]
MaybeReloader = Annotated[Reloader | None, Depends(_reloader)]
CurrentOperator = Annotated[Operator, Depends(current_operator)]
