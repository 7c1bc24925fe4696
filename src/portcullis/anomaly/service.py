"""What a detection becomes: a security audit event, a metric, and an entry operators review.

Why a service beside the detector: the detector is arithmetic on an injected clock; this owns the
once-a-window timer (real time, an operational timer like the audit writer's: a test calls
``tick`` instead), the bounded list the admin API serves (``recent``, newest first, at most
``_KEPT``), and the hand-off to the audit trail. It lives in ``Services``, so baselines survive
reloads. Observe-only for now: nothing is refused because of a detection; an automatic response
(an emergency limit or a block from the incident controls) is a later step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from portcullis.anomaly.detector import Anomaly, AnomalyDetector, DetectorSettings
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock

__all__ = ["AnomalyService"]

log = logging.getLogger("portcullis.anomaly")

_KEPT = 500


class AnomalyService:
    def __init__(self, settings: DetectorSettings, clock: Clock, *, submit: Callable[[Any], None],
                 count: Callable[[str], None]) -> None:
        self.detector = AnomalyDetector(settings)
        self._clock = clock
        self._submit = submit
        self._count = count
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
            self._submit(security_event(
                clock=self._clock, action="anomaly.detected", outcome=anomaly.kind, actor="detector", role=None,
                target=anomaly.subject, client_ip="", request_id="", status=0,
                details={"observed": anomaly.observed, "expected": round(anomaly.expected, 4)},
            ))
            log.warning("anomaly: %s on %s (observed %.4g, expected %.4g)", anomaly.kind, anomaly.subject,
                        anomaly.observed, anomaly.expected)
        return found

    def recent(self) -> list[Anomaly]:
        return list(self._recent)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._every_window(), name="portcullis-anomaly")

    async def _every_window(self) -> None:
        while True:
            await asyncio.sleep(self.detector.settings.window_s)
            try:
                self.tick()
            except Exception:  # a detection bug must not stop the next windows
                log.exception("anomaly detection failed for this window")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
