"""What a detection becomes: a security audit event, a metric, and an entry operators review.

Why a service beside the detector: the detector is arithmetic on an injected clock; this owns the
once-a-window timer (real time, an operational timer like the audit writer's: a test calls
``tick`` instead), the bounded list the admin API serves (``recent``, newest first, at most
``_KEPT``), and the hand-off to the audit trail. It lives in ``Services``, so baselines survive
reloads.

By default it only observes. With ``anomaly.response`` it also acts on a volume spike, through the
incident controls an operator would use: ``throttle`` puts an emergency limit on the route or
consumer, ``block`` blocks the consumer (a route is throttled: there is no route block). Each
response is bounded in time (``response_for``; the controls expire it on every instance), made
once per subject while it lasts, and recorded as a security event with the actor
``anomaly:auto``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portcullis.anomaly.detector import Anomaly, AnomalyDetector, DetectorSettings
from portcullis.anomaly.webhook import WebhookNotifier
from portcullis.audit.security_event import security_event
from portcullis.background import stop_task
from portcullis.clock import Clock
from portcullis.controls.model import BlockKind, EmergencyScope
from portcullis.controls.service import IncidentControls
from portcullis.errors import InvalidControl, StoreUnavailable

__all__ = ["AnomalyService", "AutoResponse"]

log = logging.getLogger("portcullis.anomaly")

_KEPT = 500
_ACTOR = "anomaly:auto"


@dataclass(frozen=True, slots=True)
class AutoResponse:
    """What to do about a volume spike: ``throttle`` or ``block``, for ``duration_s``."""

    action: str
    duration_s: float
    factor: float
    restore_s: float


class AnomalyService:
    def __init__(self, settings: DetectorSettings, clock: Clock, *, submit: Callable[[Any], None],
                 count: Callable[[str], None], controls: IncidentControls | None = None,
                 response: AutoResponse | None = None, webhook: WebhookNotifier | None = None) -> None:
        self.detector = AnomalyDetector(settings)
        self._clock = clock
        self._submit = submit
        self._count = count
        self._controls = controls
        self._response = response
        self.webhook = webhook
        self._responding_until: dict[str, float] = {}
        self._recent: deque[Anomaly] = deque(maxlen=_KEPT)
        self._task: asyncio.Task[None] | None = None

    def observe(self, route: str | None, consumer: str | None, status: int, latency_s: float,
                auth_failed: bool) -> None:
        self.detector.observe(route, consumer, status, latency_s, auth_failed)

    def tick(self) -> list[Anomaly]:
        """Close the current window: report what departs from its baseline."""
        found = self.detector.close_window(self._clock.wall())
        for anomaly in found:
            self._recent.appendleft(anomaly)
            self._count(anomaly.kind)
            if self.webhook is not None:
                self.webhook.notify(anomaly)
            self._submit(security_event(
                clock=self._clock, action="anomaly.detected", outcome=anomaly.kind, actor="detector", role=None,
                target=anomaly.subject, client_ip="", request_id="", status=0,
                details={"observed": anomaly.observed, "expected": round(anomaly.expected, 4)},
            ))
            log.warning("anomaly: %s on %s (observed %.4g, expected %.4g)", anomaly.kind, anomaly.subject,
                        anomaly.observed, anomaly.expected)
        return found

    async def respond(self, found: list[Anomaly]) -> None:
        """The automatic response to each volume spike, when configured (see the module docstring)."""
        response, controls = self._response, self._controls
        if response is None or controls is None:
            return
        now = self._clock.wall()
        self._responding_until = {s: t for s, t in self._responding_until.items() if t > now}
        for anomaly in found:
            if anomaly.kind != "volume_spike" or anomaly.subject in self._responding_until:
                continue
            kind, _, name = anomaly.subject.partition(":")
            reason = f"automatic: {anomaly.kind} ({anomaly.observed:g} against {anomaly.expected:.4g})"
            try:
                if response.action == "block" and kind == "consumer":
                    made = await controls.add_block(BlockKind.CONSUMER, name, reason=reason, actor=_ACTOR,
                                                    expires_in_s=response.duration_s)
                    act, made_id = "block.create", made.block_id
                else:
                    scope = EmergencyScope.CONSUMER if kind == "consumer" else EmergencyScope.ROUTE
                    emergency = await controls.add_emergency(
                        scope, name, response.factor, duration_s=response.duration_s, restore_s=response.restore_s,
                        reason=reason, actor=_ACTOR)
                    act, made_id = "emergency.create", emergency.emergency_id
            except (StoreUnavailable, InvalidControl) as exc:
                log.warning("anomaly: the automatic response to %s on %s failed (%s)", anomaly.kind,
                            anomaly.subject, exc)
                continue
            self._responding_until[anomaly.subject] = now + response.duration_s
            self._submit(security_event(
                clock=self._clock, action=act, outcome="ok", actor=_ACTOR, role=None, target=anomaly.subject,
                client_ip="", request_id="", status=0, reason=reason,
                details={"control_id": made_id, "expires_in_s": response.duration_s},
            ))

    def recent(self) -> list[Anomaly]:
        return list(self._recent)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._every_window(), name="portcullis-anomaly")

    async def _every_window(self) -> None:
        while True:
            await asyncio.sleep(self.detector.settings.window_s)
            try:
                await self.respond(self.tick())
            except Exception:  # a detection bug must not stop the next windows
                log.exception("anomaly detection failed for this window")

    async def aclose(self) -> None:
        if self.webhook is not None:
            await self.webhook.aclose()
        task, self._task = self._task, None
        await stop_task(task)
