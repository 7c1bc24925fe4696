"""Readiness checks run side by side, each with its own timeout, answered within one deadline.

Why this exists: ``/readyz`` asked the store and then Redis one after the other, each under
``asyncio.wait_for``. ``wait_for`` returns only once the cancelled call has unwound, and against a
PostgreSQL that accepts TCP and never answers, asyncpg's pool took seconds to give the cancelled
ping back: ``/readyz`` answered in 7 s against its 1 s deadline, and a load balancer's probe timed
out on a gateway that was serving. Here every check starts at once, and a check that has not
answered within its timeout is reported as timed out (with the status its ``on_timeout`` names)
without waiting for it to stop.

A probe that outlives its timeout is not cancelled: cancelling a driver call can take longer than
the call (the case above), and every store bounds its own calls. It is left to finish, and until it
does, the next ``/readyz`` awaits that same probe instead of starting another one, so a hung
dependency holds at most one probe per check, however often the load balancer asks.

What this module refuses to do: know what a check probes (the admin app builds the checks), let an
exception from a probe escape (it reports the check's ``on_error`` status), or block on anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Check", "CheckStatus", "ReadinessProbe", "ReadinessReport"]

log = logging.getLogger("portcullis.readiness")


class CheckStatus(StrEnum):
    """``ok`` and ``degraded`` keep the instance ready; ``unavailable`` takes it out."""

    OK = "ok"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency to ask. ``probe`` returns its status; ``on_error`` is the status when it raises
    and ``on_timeout`` when it does not answer within ``timeout_s``."""

    name: str
    probe: Callable[[], Coroutine[Any, Any, CheckStatus]]
    timeout_s: float
    on_timeout: CheckStatus
    on_error: CheckStatus = CheckStatus.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """What ``/readyz`` answers: each check's status, and which of them timed out."""

    checks: Mapping[str, CheckStatus]
    timed_out: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return all(status is not CheckStatus.UNAVAILABLE for status in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not_ready",
                "checks": {name: str(status) for name, status in self.checks.items()},
                "timed_out": list(self.timed_out)}


class ReadinessProbe:
    """Runs checks within ``deadline_s``. One per admin app: it remembers probes still running."""

    def __init__(self, *, deadline_s: float) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self._deadline_s = deadline_s
        self._running: dict[str, asyncio.Task[CheckStatus]] = {}

    async def run(self, checks: Sequence[Check]) -> ReadinessReport:
        """Every check at once; returns within ``deadline_s`` (each timeout is capped by it)."""
        outcomes = await asyncio.gather(*(self._one(check) for check in checks))
        return ReadinessReport(
            checks={check.name: status for check, (status, _) in zip(checks, outcomes, strict=True)},
            timed_out=tuple(check.name for check, (_, late) in zip(checks, outcomes, strict=True) if late),
        )

    async def _one(self, check: Check) -> tuple[CheckStatus, bool]:
        task = self._running.get(check.name)
        if task is None:
            task = asyncio.create_task(check.probe(), name=f"portcullis-ready-{check.name}")
            self._running[check.name] = task
            task.add_done_callback(functools.partial(self._finished, check.name))
        # asyncio.wait, not wait_for: it returns at the timeout and never waits for the probe to unwind
        done, _ = await asyncio.wait((task,), timeout=min(check.timeout_s, self._deadline_s))
        if not done:
            return check.on_timeout, True
        if task.cancelled() or task.exception() is not None:
            return check.on_error, False
        return task.result(), False

    def _finished(self, name: str, task: asyncio.Task[CheckStatus]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
