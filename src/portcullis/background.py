"""Background tasks (timers, listeners, senders): the one way they are stopped.

Why a function of its own: every service with a loop of its own (shared events, incident controls,
anomaly windows, the anomaly webhook, the store probe, worker metrics) stops it the same way at
shutdown: cancel, then wait until its ``finally`` blocks have run, so nothing it owns (a
connection, a last snapshot) is cut off half way.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_task"]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait for it to finish. Its cancellation is swallowed; the
    caller's own (someone cancelling the task that is stopping this one) is passed on."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
