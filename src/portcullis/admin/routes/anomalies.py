"""The anomalies the detector reported, newest first, for the security team's review."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from portcullis.admin.context import CurrentRuntime
from portcullis.admin.guard import GuardedRoute, needs
from portcullis.identity.admin_roles import Permission

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, tags=["anomalies"])


class AnomalyView(BaseModel):
    kind: str
    subject: str
    observed: float
    expected: float
    window_end: float


class AnomalyList(BaseModel):
    enabled: bool
    anomalies: list[AnomalyView]


@router.get("/anomalies", summary="Departures from each route's and consumer's baseline, newest first (the last "
            "500; every one is also a security event in the audit trail).", response_model=AnomalyList,
            **needs(Permission.ANOMALIES_READ))
async def anomalies(runtime: CurrentRuntime) -> Response:
    service = runtime.services.anomaly
    found = service.recent() if service is not None else []
    return JSONResponse(AnomalyList(enabled=service is not None, anomalies=[
        AnomalyView(kind=a.kind, subject=a.subject, observed=a.observed, expected=a.expected,
                    window_end=a.window_end) for a in found]).model_dump())
