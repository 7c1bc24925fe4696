"""Counters in Redis: one request's whole limit decision in one Lua script, one round trip.

Why a script: with several gateway instances, reading counters and writing them back in two steps
would let instances over-admit between the two. The script runs the same arithmetic as
``limiting/gcra.py`` and ``limiting/sliding_window.py`` (checked against the memory store by
property tests: same requests, same clock, same decisions), atomically, for every window of every
limit the request hits, and writes only if all of them admit.

Time: by default the script reads Redis's own clock (``TIME``), so instances with skewed clocks
agree on windows. Tests pass their manual clock instead (``server_time=False``).

Keys: ``<key_prefix>{pcl}:<rule>:<subject>:<window index>``. The ``{pcl}`` hash tag puts every
counter in one Redis Cluster slot, so any set of limits one decision touches can run in one
script; the price is that counters do not spread over a cluster's shards (one slot handles
~100k decisions/s, far above one gateway fleet's need). ``key_prefix`` lets several gateways
share a Redis. Every key expires once its state no longer matters.

The script is loaded once and called by SHA; redis-py reloads it transparently on ``NOSCRIPT``.
Numbers leave the script as strings: Redis would truncate Lua floats to integers.

Arguments: ``ARGV[1]`` the time (empty: Redis's), ``ARGV[2]`` the cost, ``ARGV[3]`` commit, then
one per key: its window as ``"<gcra 0|1> <emission> <tolerance> <window> <limit>"``. One string a
window rather than five arguments: the client's per-argument work (redis-py encodes and packs each
one in Python) was most of what a Redis decision cost the gateway, and a window's figures never
change, so its string is built once per rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from portcullis.limiting.rules import LimitDecision, LimitRule, QuotaState
from portcullis.stores.redis_scripting import NOW_PREAMBLE, ScriptBatcher, texts, time_arg

__all__ = ["RedisCounterStore"]

_APPLY = NOW_PREAMBLE + r"""
local cost = tonumber(ARGV[2])
local commit = ARGV[3] == '1'
local EPS = 1e-9
local REL_EPS = 1e-9
local allowed = true
local retry_after = 0
local violated = -1
local out = {}
local writes = {}
for i = 1, #KEYS do
  local g, e, t, w, l = string.match(ARGV[3 + i], '^([01]) (%S+) (%S+) (%S+) (%S+)$')
  local gcra = g == '1'
  local emission = tonumber(e)
  local tol = tonumber(t)
  local window = tonumber(w)
  local limit = tonumber(l)
  local ok, wait, remaining, reset
  if gcra then
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    local start = tat
    if now > start then start = now end
    local new_tat = start + emission * cost
    local allow_at = new_tat - tol
    if allow_at > now + EPS then
      ok = false; wait = allow_at - now; new_tat = tat
    else
      ok = true; wait = 0
    end
    local used = 0
    if new_tat > now then used = new_tat - now end
    remaining = math.floor((tol - used) / emission + EPS)
    if remaining < 0 then remaining = 0 end
    reset = used
    writes[i] = {'gcra', new_tat}
  else
    local st = redis.call('HMGET', KEYS[i], 'b', 'c', 'p')
    local bucket = tonumber(st[1]) or -2
    local current = tonumber(st[2]) or 0
    local previous = tonumber(st[3]) or 0
    local index = math.floor(now / window)
    if index ~= bucket then
      if index == bucket + 1 then previous = current else previous = 0 end
      current = 0
      bucket = index
    end
    local elapsed = now / window - index
    local estimate = previous * (1.0 - elapsed) + current
    if estimate + cost <= limit * (1.0 + REL_EPS) then
      ok = true; wait = 0
      remaining = math.floor(limit - estimate - cost)
      current = current + cost
    else
      ok = false
      remaining = math.floor(limit - estimate)
      if current + cost <= limit and previous > 0 then
        local f = 1.0 - (limit - current - cost) / previous
        wait = (f - elapsed) * window
        if wait < 0 then wait = 0 end
      elseif cost > limit then
        wait = window * 2
      else
        local f = 0
        if current > 0 then f = 1.0 - (limit - cost) / current end
        if f < 0 then f = 0 end
        wait = (1.0 - elapsed) * window + f * window
        if wait < 0 then wait = 0 end
      end
    end
    if remaining < 0 then remaining = 0 end
    reset = (bucket + 1) * window - now
    writes[i] = {'sliding', bucket, current, previous, (bucket + 2) * window}
  end
  if not ok then
    if allowed or wait > retry_after then retry_after = wait end
    if allowed then violated = i - 1 end
    allowed = false
  end
  out[#out + 1] = string.format('%.17g', remaining)
  out[#out + 1] = string.format('%.17g', reset)
end
if allowed and commit then
  for i = 1, #KEYS do
    local w = writes[i]
    if w[1] == 'gcra' then
      local ttl = math.ceil((w[2] - now) * 1000) + 1000
      redis.call('SET', KEYS[i], string.format('%.17g', w[2]), 'PX', ttl)
    else
      redis.call('HSET', KEYS[i], 'b', w[2], 'c', w[3], 'p', w[4])
      redis.call('PEXPIRE', KEYS[i], math.ceil((w[5] - now) * 1000) + 1000)
    end
  end
end
local reply = {allowed and '1' or '0', string.format('%.17g', retry_after), tostring(violated)}
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
"""

_REFUND = NOW_PREAMBLE + r"""
local cost = tonumber(ARGV[2])
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 3
  local gcra = ARGV[base + 1] == '1'
  local emission = tonumber(ARGV[base + 2])
  local window = tonumber(ARGV[base + 3])
  if gcra then
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then
      local back = tat - emission * cost
      if back < now then back = now end
      redis.call('SET', KEYS[i], string.format('%.17g', back), 'KEEPTTL')
    end
  else
    local st = redis.call('HMGET', KEYS[i], 'b', 'c')
    local bucket = tonumber(st[1])
    if bucket and bucket == math.floor(now / window) then
      local current = tonumber(st[2]) - cost
      if current < 0 then current = 0 end
      redis.call('HSET', KEYS[i], 'c', current)
    end
  end
end
return 1
"""


_MAX_WIRES = 4096


@dataclass(frozen=True, slots=True)
class _RuleWire:
    """One rule as the script takes it: key stem, per-window key suffixes, one argument per window.

    Bytes, encoded once: redis-py passes bytes through as they are, but runs every ``str`` or
    number through its encoder on every call."""

    rule: LimitRule
    prefix: bytes
    suffixes: tuple[bytes, ...]
    args: list[bytes]


class RedisCounterStore:
    """``CounterStore`` over one Redis (or a Redis Cluster slot; see the module docstring)."""

    def __init__(self, client: Redis, *, key_prefix: str = "portcullis:", server_time: bool = True) -> None:
        self._client = client
        self._prefix = key_prefix
        self._server_time = server_time
        self._apply = ScriptBatcher(client, _APPLY)  # concurrent decisions share round trips
        self._refund = client.register_script(_REFUND)
        # A rule's script arguments never change: built once per rule object, not per request. Keyed
        # by the object: an emergency's scaled rule shares its name (and counters) with the configured
        # one, and the two alternate; the cache is cleared when reloads or ramps have filled it.
        self._wire: dict[int, _RuleWire] = {}

    def _wire_of(self, rule: LimitRule) -> _RuleWire:
        wire = self._wire.get(id(rule))
        if wire is None or wire.rule is not rule:
            if len(self._wire) >= _MAX_WIRES:
                self._wire.clear()
            wire = self._wire[id(rule)] = _RuleWire(
                rule,
                f"{self._prefix}{{pcl}}:{rule.name}:".encode(),
                tuple(f":{spec.index}".encode() for spec in rule.specs),
                [f"{1 if spec.gcra else 0} {spec.emission_s!r} {spec.tolerance_s!r} {spec.window_s!r} {spec.limit}"
                 .encode() for spec in rule.specs],
            )
        return wire

    async def apply(
        self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int, *, commit: bool
    ) -> LimitDecision:
        keys: list[bytes] = []
        args: list[bytes] = [time_arg(self._server_time, now).encode(), b"%d" % cost, b"1" if commit else b"0"]
        owners: list[tuple[LimitRule, int]] = []
        for rule, subject in hits:
            wire = self._wire_of(rule)
            stem = wire.prefix + subject.encode()
            keys += [stem + suffix for suffix in wire.suffixes]
            args += wire.args
            owners += [(rule, spec.index) for spec in rule.specs]
        reply = await self._apply.call(keys, args)
        values = texts(reply)
        allowed = values[0] == "1"
        violated_at = int(values[2])
        quota: list[QuotaState] = []
        best: dict[str, tuple[int, int, float, float]] = {}
        order: list[LimitRule] = []
        for n, (rule, index) in enumerate(owners):
            spec = rule.specs[index]
            remaining, reset = int(float(values[3 + 2 * n])), float(values[4 + 2 * n])
            current = best.get(rule.name)
            if current is None:
                order.append(rule)
            if current is None or remaining * current[1] < current[0] * spec.limit:
                best[rule.name] = (remaining, spec.limit, spec.window_s, reset)
        for rule in order:
            r, limit, window, reset = best[rule.name]
            quota.append(QuotaState(rule.name, limit, window, r, reset))
        violated = owners[violated_at][0].name if violated_at >= 0 else None
        return LimitDecision(allowed, float(values[1]), violated, tuple(quota))

    async def refund(self, hits: Sequence[tuple[LimitRule, str]], now: float, cost: int) -> None:
        keys: list[bytes] = []
        args: list[Any] = [time_arg(self._server_time, now), cost]
        for rule, subject in hits:
            wire = self._wire_of(rule)  # the same keys as ``apply``'s, made the one way
            stem = wire.prefix + subject.encode()
            keys += [stem + suffix for suffix in wire.suffixes]
            for spec in rule.specs:
                args += ["1" if spec.gcra else "0", repr(spec.emission_s), repr(spec.window_s)]
        await self._refund(keys=keys, args=args)

    async def aclose(self) -> None:
        await self._client.aclose()
