"""Egress budgets in Redis: every counter a call touches, checked and spent in one Lua script; and
each execution's start (``ExecutionClockStore``), set once by whichever instance sees it first.

The same contract and semantics as ``egress.budgets.MemoryBudgetStore`` (checked against it by a
contract test): each counter's window starts at its first use and ends ``window_s`` later
(``INCRBY`` + ``PEXPIRE``), and a call spends from all of them or from none. Window ends are kept
as Redis key expiries on Redis's own clock, so instances with skewed clocks agree; tests that need
a manual clock pass ``server_time=False`` and the script then tracks window ends itself.

Keys: ``<key_prefix>{pclb}:<budget key>``; the shared hash tag keeps a call's counters in one
Cluster slot (see ``redis_counters.py`` for the trade-off).

Arguments of the spend script: the time, then one string per counter, ``"<limit> <window>
<amount>"``, as bytes (as ``redis_counters.py`` does, for the same reason: redis-py encodes and
packs each argument in Python). A call's counters are the same tuple call after call
(``Budgets.plan`` keeps them), so their keys and strings are encoded once per tuple.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from portcullis.stores.base import Spend
from portcullis.stores.redis_scripting import NOW_PREAMBLE, ScriptBatcher, texts, time_arg

__all__ = ["RedisBudgetStore"]

_MAX_WIRES = 4096

_SPEND = NOW_PREAMBLE + r"""
local used = {}
local ends = {}
for i = 1, #KEYS do
  local l, w, a = string.match(ARGV[1 + i], '^(%S+) (%S+) (%S+)$')
  local limit = tonumber(l)
  local window = tonumber(w)
  local amount = tonumber(a)
  local st = redis.call('HMGET', KEYS[i], 'u', 'e')
  local value = tonumber(st[1]) or 0
  local window_end = tonumber(st[2])
  if window_end == nil or window_end <= now then
    value = 0
    window_end = now + window
  end
  if value + amount > limit then
    local reply = {'0', tostring(i - 1), string.format('%.17g', window_end - now)}
    for j = 1, i - 1 do reply[#reply + 1] = tostring(used[j]) end
    reply[#reply + 1] = tostring(value)
    return reply
  end
  used[i] = value + amount
  ends[i] = window_end
end
local reply = {'1', '-1', '0'}
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'u', used[i], 'e', string.format('%.17g', ends[i]))
  redis.call('PEXPIRE', KEYS[i], math.ceil((ends[i] - now) * 1000) + 1000)
  reply[#reply + 1] = tostring(used[i])
end
return reply
"""

_USED = NOW_PREAMBLE + r"""
local reply = {}
for i = 1, #KEYS do
  local st = redis.call('HMGET', KEYS[i], 'u', 'e')
  local window_end = tonumber(st[2])
  if window_end == nil or window_end <= now then
    reply[i] = '0'
  else
    reply[i] = st[1]
  end
end
return reply
"""

# An execution's start: set if absent (ARGV[3] = '1'), kept ARGV[2] seconds; the reply is its age, or ''
# for an unknown execution that is only looked at. The end is kept beside the start (as the spend
# script keeps window ends) so that a caller's clock decides when ``server_time`` is off.
_AGE = NOW_PREAMBLE + r"""
local st = redis.call('HMGET', KEYS[1], 's', 'e')
local started = tonumber(st[1])
local forget = tonumber(st[2])
if started == nil or forget == nil or forget <= now then
  if ARGV[3] ~= '1' then return '' end
  local keep = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 's', string.format('%.17g', now), 'e', string.format('%.17g', now + keep))
  redis.call('PEXPIRE', KEYS[1], math.ceil(keep * 1000) + 1000)
  return '0'
end
return string.format('%.17g', now - started)
"""


class RedisBudgetStore:
    """``BudgetCounterStore`` over Redis."""

    def __init__(self, client: Redis, *, key_prefix: str = "portcullis:", server_time: bool = True) -> None:
        self._client = client
        self._prefix = key_prefix
        self._server_time = server_time
        self._spend = ScriptBatcher(client, _SPEND)  # concurrent calls share round trips
        self._used = client.register_script(_USED)
        self._age = client.register_script(_AGE)
        self._wire: dict[int, tuple[Sequence[Spend], list[bytes], list[bytes]]] = {}  # id(items) -> encoded

    def _wire_of(self, items: Sequence[Spend]) -> tuple[list[bytes], list[bytes]]:
        """The spend script's keys and per-counter arguments for ``items``, encoded once per object.
        The table holds the object itself, so its id cannot stand for another while it is cached."""
        wire = self._wire.get(id(items))
        if wire is None:
            if len(self._wire) >= _MAX_WIRES:
                self._wire.clear()
            wire = self._wire[id(items)] = (
                items,
                [f"{self._prefix}{{pclb}}:{item.key}".encode() for item in items],
                [f"{item.limit} {item.window_s!r} {item.amount}".encode() for item in items],
            )
        return wire[1], wire[2]

    def _keys(self, items: Sequence[Spend]) -> list[str]:
        return [f"{self._prefix}{{pclb}}:{item.key}" for item in items]

    async def spend(self, items: Sequence[Spend], now: float) -> tuple[bool, int | None, list[int], float]:
        keys, lines = self._wire_of(items)
        reply = texts(await self._spend.call(keys, [time_arg(self._server_time, now).encode(), *lines]))
        allowed = reply[0] == "1"
        refused = int(reply[1])
        used = [int(float(v)) for v in reply[3:]]
        return allowed, (refused if refused >= 0 else None), used, float(reply[2])

    async def used(self, items: Sequence[Spend], now: float) -> list[int]:
        reply = await self._used(keys=self._keys(items), args=[time_arg(self._server_time, now)])
        return [int(float(v)) for v in texts(reply)]

    async def reset(self, keys: Sequence[str]) -> None:
        if keys:
            await self._client.delete(*(f"{self._prefix}{{pclb}}:{key}" for key in keys))

    async def execution_age(self, key: str, now: float, keep_s: float, *, start: bool = True) -> float | None:
        reply = await self._age(keys=[f"{self._prefix}{{pclb}}:{key}"],
                                args=[time_arg(self._server_time, now), repr(keep_s), "1" if start else "0"])
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return float(text) if text else None

    async def aclose(self) -> None:
        await self._client.aclose()
