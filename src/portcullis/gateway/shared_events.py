"""What an instance does when another one says something: forget a revoked key (API or signing), reload, move a breaker,
re-read the incident controls.

One handler per process, attached to the shared-state event bus. It always acts on the runtime
serving now (``app.runtime``), so events keep working across reloads.
"""

from __future__ import annotations

import logging

from portcullis.errors import StoreUnavailable
from portcullis.gateway.reload import Reloader
from portcullis.gateway.runtime import serving_runtime
from portcullis.ingress.app import GatewayApp
from portcullis.stores.redis_events import CONTROLS_EVENT, RELOAD_EVENT, REVOKE_EVENT, Event

__all__ = ["attach_shared_events"]

log = logging.getLogger("portcullis.shared_state")


class _Handler:
    def __init__(self, app: GatewayApp, reloader: Reloader | None, instance_id: str) -> None:
        self._app = app
        self._reloader = reloader
        self._instance_id = instance_id

    async def on_event(self, event: Event) -> None:
        runtime = serving_runtime(self._app)
        if event.kind == REVOKE_EVENT:
            key_id = event.data.get("key_id")
            if isinstance(key_id, str) and runtime.key_verifier is not None:
                runtime.key_verifier.invalidate(key_id)
            if isinstance(key_id, str) and runtime.signing_keys is not None:
                runtime.signing_keys.invalidate(key_id)
        elif event.kind == RELOAD_EVENT:
            if event.origin != self._instance_id and self._reloader is not None:
                log.info("config reload asked for by instance %s", event.origin)
                self._reloader.request()
        elif event.kind == CONTROLS_EVENT:
            if event.origin != self._instance_id:  # the sender swapped its own snapshot already
                await self._reread_controls()
        elif runtime.breaker_sync is not None:
            runtime.breaker_sync.on_event(event.kind, event.origin, event.data)

    async def _reread_controls(self) -> None:
        try:
            await self._app.runtime.services.controls.refresh()
        except StoreUnavailable as exc:
            log.warning("incident controls: could not re-read the store (%s); the periodic refresh retries", exc)

    async def on_connected(self) -> None:
        """(Re)subscribed: what changed while this instance was not listening is read again."""
        runtime = serving_runtime(self._app)
        if runtime.breaker_sync is not None:
            await runtime.breaker_sync.load()
        if runtime.key_verifier is not None:
            runtime.key_verifier.invalidate_all()  # a revocation may have been missed
        if runtime.signing_keys is not None:
            runtime.signing_keys.invalidate_all()
        await self._reread_controls()  # so may a block


def attach_shared_events(app: GatewayApp, reloader: Reloader | None) -> None:
    """Listen for other instances' events, if this gateway shares state; a no-op otherwise."""
    shared = app.runtime.services.shared
    if shared is None:
        return
    handler = _Handler(app, reloader, shared.instance_id)
    shared.events.subscribe(handler.on_event)
    shared.events.on_connected(handler.on_connected)
    shared.events.start()
