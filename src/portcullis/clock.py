"""Time as a dependency.

Why: rate limits, token expiry, JWKS caches and audit timestamps all depend on time, and tests must
drive time without sleeping. Logic takes a ``Clock``; only ``SystemClock`` reads the real one.
``ManualClock`` (in ``portcullis.testing``) is the test double.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """A source of time. ``monotonic`` for durations and windows, ``wall`` for timestamps."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; a test clock may return at once after advancing."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
