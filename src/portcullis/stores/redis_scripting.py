"""What every Portcullis Lua script shares: whose clock decides, and how replies come back.

``ARGV[1]`` is the caller's time, or empty to use Redis's own ``TIME`` (so instances with skewed
clocks agree); each script starts with ``NOW_PREAMBLE``, which sets ``now``. Scripts reply with
strings, because Redis truncates Lua numbers to integers; ``texts`` turns a reply into ``str``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NOW_PREAMBLE", "texts", "time_arg"]

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
