"""Config reload: build the new runtime off the event loop, swap it in, retire the old one later.

Why build-then-swap: an invalid config, or one that fails to compile, must leave the running
gateway untouched. The old runtime is closed only after a grace period, so requests already
using its upstream pools finish normally. Sections that need a restart (listener, store, audit, log)
are reported, not silently ignored.

Why a worker thread: reading, parsing, validating and compiling a config is CPU work that grows with
the config (seconds for 20,000 routes), and on the loop it stopped every request for as long. One
dedicated thread does all of it, ``build_runtime`` included (it also reads CA files for TLS
contexts); the loop only starts the new runtime's background tasks and swaps one reference. Why not
a process: the work is bounded before it starts (the loader refuses files over 16 MiB, YAML aliases,
deep nesting and huge values), so a thread that cannot be stopped still ends; and the runtime is
built over this process's counters, metrics and store, which a process could not share.

Sharing the GIL: the worker is pure Python, and a thread waiting for the GIL gets it only when the
holder is asked to drop it, after the interpreter's switch interval (5 ms). Every wake-up of the
loop during a reload then waits up to 5 ms, which cut the requests answered during a 20,000-route
reload tenfold. While the worker runs, the switch interval is 0.5 ms (restored when it ends): in the
same measurement ten times as many requests were answered, for a reload 1.7 times as long.

Time limit (``reload.timeout``): past it the reload is refused and the previous config keeps
serving. The thread cannot be stopped, so it is left to finish, whatever it built is closed, and no
other reload starts until it has: abandoned work never piles up.

Flood control, per process (the admin API, SIGHUP and other instances' reload events share it): one
reload runs at a time, and reloads start at most once per ``reload.min_interval``. ``reload()`` (the
admin API) answers ``ReloadBusy`` with when to retry rather than joining a running reload, because
that one may have read the file before the caller's last edit. ``request()`` (SIGHUP, events) has
nobody to answer, so any number of requests made while a reload runs or too soon become one more
reload, started as soon as allowed, which reads the file afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from portcullis.config.loader import load_config
from portcullis.errors import ConfigError
from portcullis.gateway.build import build_runtime
from portcullis.gateway.runtime import GatewayRuntime, GatewayServices, serving_runtime
from portcullis.ingress.app import GatewayApp

__all__ = ["ReloadBusy", "ReloadResult", "Reloader"]

log = logging.getLogger("portcullis.reload")

_RESTART_SECTIONS = ("listen", "admin", "store", "audit", "log", "tracing")
_WORKER_SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """A reload that ran: applied (``ok``), or refused with ``error`` and nothing changed."""

    ok: bool
    error: str | None = None
    restart_needed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReloadBusy:
    """A reload that did not start: one is running, or the last one started too recently."""

    detail: str
    retry_after_s: float


class Reloader:
    """Reloads ``app``'s runtime from ``config_path``: one at a time, off the loop, bounded in time."""

    def __init__(self, app: GatewayApp, config_path: Path, *, grace_s: float) -> None:
        self._app = app
        self._path = config_path
        self._grace_s = grace_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portcullis-reload")
        self._running: asyncio.Task[None] | None = None
        self._queued: asyncio.Task[None] | None = None
        self._last_start: float | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def reload(self) -> ReloadResult | ReloadBusy:
        """Reload now, or say why not and when to retry (the admin API's answer)."""
        busy = self._busy()
        if busy is not None:
            return busy
        return await asyncio.shield(self._start())

    def request(self) -> None:
        """Reload as soon as allowed; requests made meanwhile share that one reload (SIGHUP, events)."""
        if self._queued is None:
            self._queued = asyncio.create_task(self._when_allowed())

    async def _when_allowed(self) -> None:
        while (busy := self._busy()) is not None:
            running = self._running
            if running is not None and not running.done():
                await asyncio.wait({running})
            else:
                await self._app.runtime.clock.sleep(busy.retry_after_s)
        self._queued = None  # a request from here on asks for a reload after this one
        await self._start()

    def _busy(self) -> ReloadBusy | None:
        min_interval = self._app.runtime.config.reload.min_interval
        if self._running is not None and not self._running.done():
            return ReloadBusy("A reload is running.", max(1.0, min_interval))
        if self._last_start is not None:
            wait = self._last_start + min_interval - self._app.runtime.clock.monotonic()
            if wait > 0:
                return ReloadBusy(f"The last reload started less than {min_interval:g}s ago.", wait)
        return None

    def _start(self) -> asyncio.Future[ReloadResult]:
        self._last_start = self._app.runtime.clock.monotonic()
        answer: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._running = asyncio.create_task(self._run(answer))
        return answer

    async def _run(self, answer: asyncio.Future[ReloadResult]) -> None:
        old = serving_runtime(self._app)
        metrics = old.services.metrics
        timeout_s = old.config.reload.timeout
        work = asyncio.get_running_loop().run_in_executor(self._worker, _prepare, self._path, old.services)
        done, _ = await asyncio.wait({work}, timeout=timeout_s)
        if not done:
            metrics.config_reloads.labels("timed_out").inc()
            message = f"{self._path}: reading, checking and compiling the config took longer than {timeout_s:g}s"
            log.error("config reload refused; the previous config keeps serving: %s", message)
            _answer(answer, ReloadResult(False, message))
            with contextlib.suppress(Exception):  # its outcome was reported as a timeout already
                late = await work
                await late.aclose()
            return
        try:
            new = work.result()
        except ConfigError as exc:
            metrics.config_reloads.labels("rejected").inc()
            log.error("config reload of %s refused; the previous config keeps serving:\n%s", self._path, exc)
            _answer(answer, ReloadResult(False, str(exc)))
            return
        except Exception as exc:
            metrics.config_reloads.labels("failed").inc()
            log.exception("config reload failed; the previous config keeps serving")
            _answer(answer, ReloadResult(False, f"build failed: {type(exc).__name__}"))
            return
        try:
            await new.start()
        except Exception as exc:
            metrics.config_reloads.labels("failed").inc()
            log.exception("config reload failed to start; the previous config keeps serving")
            await new.aclose()
            _answer(answer, ReloadResult(False, f"start failed: {type(exc).__name__}"))
            return
        self._app.runtime = new
        metrics.config_reloads.labels("applied").inc()
        restart = tuple(s for s in _RESTART_SECTIONS if getattr(old.config, s) != getattr(new.config, s))
        if restart:
            log.warning("config reloaded; changes to %s take effect after a restart", ", ".join(restart))
        else:
            log.info("config reloaded")
        task = asyncio.create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        _answer(answer, ReloadResult(True, restart_needed=restart))

    async def _retire(self, old: GatewayRuntime) -> None:
        await old.services.clock.sleep(self._grace_s)
        await old.aclose()

    async def wait_retired(self) -> None:
        """Wait until every runtime replaced so far has been closed (after its grace period)."""
        await asyncio.gather(*self._retiring)

    async def aclose(self) -> None:
        """Stop pending and running reloads and close retiring runtimes now (shutdown)."""
        tasks = [t for t in (self._queued, self._running, *self._retiring) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker.shutdown(wait=False, cancel_futures=True)


def _prepare(path: Path, services: GatewayServices) -> GatewayRuntime:
    """The worker thread's job: everything a reload does before the swap."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(_WORKER_SWITCH_INTERVAL_S)
    try:
        return build_runtime(load_config(path), services)
    finally:
        sys.setswitchinterval(previous)


def _answer(answer: asyncio.Future[ReloadResult], result: ReloadResult) -> None:
    if not answer.done():  # the caller may have gone (a closed admin connection, a shutdown)
        answer.set_result(result)
