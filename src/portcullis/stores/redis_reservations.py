"""Budget reservations in Redis: reserve, settle and release, each one atomic run of one Lua script.

The same contract as ``MemoryReservationStore`` (one contract suite runs on both). A line is two
keys sharing the ``{pclr}`` hash tag (one Cluster slot, so a reservation over several lines runs
in one script):

- ``<prefix>{pclr}:<line key>``, a hash: ``u`` used in the current window, ``e`` the window's end
  (absent for a lifetime total), ``r`` the sum of live holds, and ``h:<reservation id>`` each
  hold's amount;
- ``<prefix>{pclr}:<line key>:x``, a sorted set of reservation ids by expiry, so expired holds are
  found in O(log n) and dropped (their amounts subtracted from ``r``) before every check.

A windowed line's hash expires after its window and its last hold, whichever is later, so Redis
forgets idle lines; a lifetime line's hash never expires. Time is Redis's ``TIME`` unless the
caller passes its own (``server_time=False``, for tests on a manual clock).

Redis and connection errors become ``StoreUnavailable`` here, and only here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from portcullis.errors import StoreUnavailable
from portcullis.ids import random_hex
from portcullis.stores.base import BudgetLine, LineUsage, Reservation, ReservationRefused, Settlement
from portcullis.stores.redis_scripting import NOW_PREAMBLE, ScriptBatcher, texts, time_arg

__all__ = ["RedisReservationStore"]

# ARGV: now ('' = Redis TIME), op, reservation id, ttl; then per line: limit, window ('' = lifetime), amount.
# KEYS: per line, its hash and its expiry set.
_SCRIPT = NOW_PREAMBLE + r"""
local op = ARGV[2]
local rid = ARGV[3]
local ttl = tonumber(ARGV[4])
local n = #KEYS / 2
local function fmt(x) return string.format('%.17g', x) end

local function purge(k, z)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #expired == 0 then return end
  local r = tonumber(redis.call('HGET', k, 'r')) or 0
  for _, id in ipairs(expired) do
    local a = tonumber(redis.call('HGET', k, 'h:' .. id))
    if a then
      r = r - a
      redis.call('HDEL', k, 'h:' .. id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  if r < 0 then r = 0 end
  redis.call('HSET', k, 'r', fmt(r))
end

local function current(k, win)
  local st = redis.call('HMGET', k, 'u', 'e', 'r')
  local used = tonumber(st[1]) or 0
  local reserved = tonumber(st[3]) or 0
  if win == '' then return used, nil, reserved end
  local e = tonumber(st[2])
  if e == nil or e <= now then return 0, now + tonumber(win), reserved end
  return used, e, reserved
end

local function left(k, win, limit)
  local used, e, reserved = current(k, win)
  return fmt(math.max(0, limit - used - reserved))
end

local function keep(k, z, e)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local until_ = e
  if last[2] then
    local hold_end = tonumber(last[2])
    redis.call('PEXPIRE', z, math.ceil((hold_end - now) * 1000) + 1000)
    if until_ ~= nil and hold_end > until_ then until_ = hold_end end
  end
  if until_ ~= nil then
    redis.call('PEXPIRE', k, math.ceil((until_ - now) * 1000) + 1000)
  end
end

local function line(i)
  local b = 4 + (i - 1) * 3
  return KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[b + 1]), ARGV[b + 2], tonumber(ARGV[b + 3])
end

if op == 'reserve' then
  local states = {}
  for i = 1, n do
    local k, z, limit, win, amount = line(i)
    purge(k, z)
    local used, e, reserved = current(k, win)
    if used + reserved + amount > limit then
      local reset = '-1'
      if e ~= nil then reset = fmt(e - now) end
      return {'0', tostring(i - 1), fmt(math.max(0, limit - used - reserved)), reset}
    end
    states[i] = {used, e, reserved}
  end
  local expires = now + ttl
  local reply = {'1', fmt(expires)}
  for i = 1, n do
    local k, z, limit, win, amount = line(i)
    local st = states[i]
    redis.call('HSET', k, 'u', fmt(st[1]), 'r', fmt(st[3] + amount), 'h:' .. rid, fmt(amount))
    if st[2] ~= nil then redis.call('HSET', k, 'e', fmt(st[2])) end
    redis.call('ZADD', z, fmt(expires), rid)
    keep(k, z, st[2])
    reply[#reply + 1] = fmt(math.max(0, limit - st[1] - st[3] - amount))
  end
  return reply
end

if op == 'settle' or op == 'release' then
  local expired = '0'
  local lefts = {}
  for i = 1, n do
    local k, z, limit, win, amount = line(i)
    purge(k, z)
    local a = tonumber(redis.call('HGET', k, 'h:' .. rid))
    if a then
      local r = (tonumber(redis.call('HGET', k, 'r')) or 0) - a
      if r < 0 then r = 0 end
      redis.call('HDEL', k, 'h:' .. rid)
      redis.call('HSET', k, 'r', fmt(r))
      redis.call('ZREM', z, rid)
    else
      expired = '1'
    end
    local e = nil
    if op == 'settle' and amount > 0 then
      local used, window_end = current(k, win)
      e = window_end
      redis.call('HSET', k, 'u', fmt(used + amount))
      if e ~= nil then redis.call('HSET', k, 'e', fmt(e)) end
    else
      e = tonumber(redis.call('HGET', k, 'e'))
    end
    if win ~= '' and e ~= nil then keep(k, z, e) end
    lefts[i] = left(k, win, limit)
  end
  local reply = {'1', expired}
  for i = 1, n do reply[#reply + 1] = lefts[i] end
  return reply
end

if op == 'usage' then
  local reply = {}
  for i = 1, n do
    local k, z, limit, win, amount = line(i)
    purge(k, z)
    local used, e, reserved = current(k, win)
    reply[#reply + 1] = fmt(used)
    reply[#reply + 1] = fmt(reserved)
  end
  return reply
end
return redis.error_reply('unknown op')
"""


class RedisReservationStore:
    """``ReservationStore`` over Redis."""

    def __init__(self, client: Redis, *, key_prefix: str = "portcullis:", server_time: bool = True) -> None:
        self._client = client
        self._prefix = key_prefix
        self._server_time = server_time
        self._script = ScriptBatcher(client, _SCRIPT)  # concurrent calls share round trips

    def _key(self, key: str) -> str:
        return f"{self._prefix}{{pclr}}:{key}"

    async def _run(self, op: str, rid: str, ttl_s: float, lines: Sequence[BudgetLine],
                   amounts: Sequence[int], now: float) -> list[str]:
        keys: list[str] = []
        args: list[Any] = [time_arg(self._server_time, now), op, rid, repr(ttl_s)]
        for line, amount in zip(lines, amounts, strict=True):
            key = self._key(line.key)
            keys += [key, key + ":x"]
            args += [line.limit, "" if line.window_s is None else repr(line.window_s), amount]
        async with _translated():
            return texts(await self._script.call(keys, args))

    async def reserve(
        self, lines: Sequence[BudgetLine], now: float, *, ttl_s: float,
    ) -> Reservation | ReservationRefused:
        if ttl_s <= 0:
            raise ValueError("a reservation's ttl must be positive")
        rid = random_hex(64)
        reply = await self._run("reserve", rid, ttl_s, lines, [line.amount for line in lines], now)
        if reply[0] == "1":
            return Reservation(rid, tuple(lines), float(reply[1]), _lefts(reply[2:]))
        index = int(reply[1])
        reset = float(reply[3])
        return ReservationRefused(index, lines[index].name, int(float(reply[2])), None if reset < 0 else reset)

    async def settle(self, reservation: Reservation, actual: Sequence[int], now: float) -> Settlement:
        if len(actual) != len(reservation.lines) or any(a < 0 for a in actual):
            raise ValueError("settle takes one non-negative amount per line")
        reply = await self._run("settle", reservation.reservation_id, 1.0, reservation.lines, actual, now)
        return Settlement(tuple(actual), reply[1] == "1", _lefts(reply[2:]))

    async def release(self, reservation: Reservation, now: float) -> tuple[int, ...]:
        reply = await self._run("release", reservation.reservation_id, 1.0, reservation.lines,
                                [0] * len(reservation.lines), now)
        return _lefts(reply[2:])

    async def usage(self, lines: Sequence[BudgetLine], now: float) -> list[LineUsage]:
        reply = await self._run("usage", "-", 1.0, lines, [0] * len(lines), now)
        return [LineUsage(int(float(reply[2 * i])), int(float(reply[2 * i + 1]))) for i in range(len(lines))]

    async def reset(self, keys: Sequence[str]) -> None:
        if keys:
            async with _translated():
                await self._client.delete(*(k for key in keys for k in (self._key(key), self._key(key) + ":x")))


def _lefts(values: Sequence[str]) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in values)


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """The one place Redis errors become ``StoreUnavailable`` for reservations."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("reservation store unavailable") from exc
