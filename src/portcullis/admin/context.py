"""What an admin route reads from its app: the gateway, the reloader, the operator (FastAPI dependencies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portcullis.admin.guard import Operator, current_operator
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.reload import Reloader
from portcullis.ingress.runtime import Runtime

__all__ = ["CurrentOperator", "Gateway", "GatewayRuntime", "MaybeReloader"]


def _gateway(request: Request) -> GatewayApp:
    gateway: GatewayApp = request.app.state.gateway
    return gateway


def _runtime(request: Request) -> Runtime:
    return _gateway(request).runtime


def _reloader(request: Request) -> Reloader | None:
    reloader: Reloader | None = request.app.state.reloader
    return reloader


Gateway = Annotated[GatewayApp, Depends(_gateway)]
GatewayRuntime = Annotated[Runtime, Depends(_runtime)]
MaybeReloader = Annotated[Reloader | None, Depends(_reloader)]
CurrentOperator = Annotated[Operator, Depends(current_operator)]
