"""What every Portcullis Lua script shares: whose clock decides, and how replies come back.

``ARGV[1]`` is the caller's time, or empty to use Redis's own ``TIME`` (so instances with skewed
clocks agree); each script starts with ``NOW_PREAMBLE``, which sets ``now``. Scripts reply with
strings, because Redis truncates Lua numbers to integers; ``texts`` turns a reply into ``str``.
``ScriptBatcher`` sends concurrent calls of one script in one round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["NOW_PREAMBLE", "ScriptBatcher", "texts", "time_arg"]

NOW_PREAMBLE = r"""
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
"""


def time_arg(server_time: bool, now: float) -> str:
    """``ARGV[1]``: empty for Redis's clock, else the caller's time, exactly (``repr`` round-trips)."""
    return "" if server_time else repr(now)


def texts(reply: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]


_Call = tuple[Sequence[str | bytes], Sequence[Any], "asyncio.Future[Any]"]  # keys, args, the caller's answer


class ScriptBatcher:
    """Calls of one Lua script from concurrent requests, sent to Redis together.

    Why: one decision per round trip made counting limits in Redis cost a third of the gateway's
    throughput (bench setup 7); most of that was redis-py's per-command work (a pool checkout, a
    write, a read) rather than Redis. While one batch is in flight, new calls wait and then go
    together in one pipeline (``EVALSHA`` each, no MULTI), so under load a round trip carries many
    decisions; with nothing in flight a call is sent on the next loop turn, so an idle gateway
    waits for nothing. Each script still runs atomically inside Redis, one after another.

    ``NOSCRIPT`` (a restarted or flushed Redis) is handled here: the script is loaded and the calls
    that met it are sent again. Any other failure is raised to every caller in the batch.
    """

    def __init__(self, client: Redis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self._pending: list[_Call] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0  # round trips, for tests and profiling

    async def call(self, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        """The script's reply for ``keys`` and ``args`` (bytes go to Redis as they are: cheapest)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(0)  # let the callers of this loop turn join the batch
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._draining = None

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute(batch)
            if any(isinstance(r, NoScriptError) for r in replies):
                await self._client.script_load(self._script)
                replies = await self._execute(batch)
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        self.batches += 1
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await self._client.evalsha(self._sha, len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
