"""Atomic config reload: build the new runtime beside the old, swap, retire the old one later.

Why build-then-swap: an invalid config, or one that fails to compile, must leave the running
gateway untouched. The old runtime is closed only after a grace period, so requests already
using its upstream pools finish normally. Sections that need a restart (listener, store, audit)
are reported, not silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from portcullis.config.loader import load_config
from portcullis.errors import ConfigError
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.build import build_runtime
from portcullis.ingress.runtime import Runtime

__all__ = ["ReloadResult", "Reloader"]

log = logging.getLogger("portcullis.reload")

_RESTART_SECTIONS = ("listen", "admin", "store", "audit")


class ReloadResult:
    __slots__ = ("error", "ok", "restart_needed")

    def __init__(self, ok: bool, error: str | None = None, restart_needed: tuple[str, ...] = ()) -> None:
        self.ok = ok
        self.error = error
        self.restart_needed = restart_needed


class Reloader:
    """Reloads ``app``'s runtime from ``config_path``; one reload at a time."""

    def __init__(self, app: GatewayApp, config_path: Path, *, grace_s: float) -> None:
        self._app = app
        self._path = config_path
        self._grace_s = grace_s
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    async def reload(self) -> ReloadResult:
        async with self._lock:
            old = self._app.runtime
            metrics = old.services.metrics
            try:
                config = load_config(self._path)
                new = build_runtime(config, old.services)
                await new.start()
            except ConfigError as exc:
                metrics.config_reloads.labels("rejected").inc()
                log.error("config reload refused; the previous config keeps serving:\n%s", exc)
                return ReloadResult(False, str(exc))
            except Exception as exc:
                metrics.config_reloads.labels("failed").inc()
                log.exception("config reload failed; the previous config keeps serving")
                return ReloadResult(False, f"build failed: {type(exc).__name__}")
            self._app.runtime = new
            metrics.config_reloads.labels("applied").inc()
            restart = tuple(
                s for s in _RESTART_SECTIONS if getattr(old.config, s) != getattr(config, s)
            )
            if restart:
                log.warning("config reloaded; changes to %s take effect after a restart", ", ".join(restart))
            else:
                log.info("config reloaded")
            task = asyncio.create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            return ReloadResult(True, restart_needed=restart)

    async def _retire(self, old: Runtime) -> None:
        await old.services.clock.sleep(self._grace_s)
        await old.aclose()

    async def aclose(self) -> None:
        """Close retiring runtimes now (shutdown)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
