"""An optional webhook for each detection: a JSON POST to the URL the operator configured.

Why bounded and best-effort: a chat or paging endpoint that is slow or down must cost the gateway
nothing. Detections wait in a queue of at most ``_QUEUE_MAX``; one sender posts them in order with
``timeout_s`` each and no retry (each detection is also in the audit trail, the metric and
``GET /anomalies``, which are the record; the webhook is the nudge). What cannot be queued or sent
is counted in ``dropped`` and logged once per change.

With ``secret`` the body is signed: ``X-Portcullis-Signature: sha256=<hex HMAC-SHA256 of the body>``,
so the receiver can tell the gateway from anyone who learned the URL (the scheme GitHub uses for
its webhooks).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

import aiohttp
import orjson

from portcullis.anomaly.detector import Anomaly
from portcullis.background import stop_task

__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "signature"]

log = logging.getLogger("portcullis.anomaly")

SIGNATURE_HEADER = "X-Portcullis-Signature"
_QUEUE_MAX = 100


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(self, url: str, *, timeout_s: float, secret: bytes | None = None) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._secret = secret
        self._queue: asyncio.Queue[Anomaly] = asyncio.Queue(maxsize=_QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.sent = 0
        self.dropped = 0

    def notify(self, anomaly: Anomaly) -> None:
        """Queue one detection; never blocks, never raises."""
        if self._task is None:
            self._task = asyncio.create_task(self._send_all(), name="portcullis-anomaly-webhook")
        try:
            self._queue.put_nowait(anomaly)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _send_all(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while True:
                anomaly = await self._queue.get()
                body = orjson.dumps({"event": "anomaly.detected", "kind": anomaly.kind, "subject": anomaly.subject,
                                     "observed": anomaly.observed, "expected": anomaly.expected,
                                     "window_end": anomaly.window_end})
                headers = {"Content-Type": "application/json"}
                if self._secret is not None:
                    headers[SIGNATURE_HEADER] = signature(self._secret, body)
                try:
                    async with session.post(self._url, data=body, headers=headers) as answer:
                        ok = answer.status < 300
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ok = False
                if ok:
                    self.sent += 1
                else:
                    self.dropped += 1
                if ok == self._failing:  # log once per change, not once per detection
                    self._failing = not ok
                    log.warning("anomaly webhook %s", "failing: detections are in the audit trail and "
                                "GET /anomalies" if not ok else "answering again")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
