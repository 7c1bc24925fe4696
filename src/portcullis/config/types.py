"""Reusable constrained field types for the config (Kong's typedefs).

Why: durations, sizes, CIDRs and rate specs appear in many sections; parsing them once here means
every section accepts the same spellings (``"30s"``, ``"1MiB"``, ``"100/minute"``) and converts them
to plain numbers at load, so the hot path never parses a string.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "ByteSize",
    "Cidr",
    "Duration",
    "HeaderName",
    "HeaderPattern",
    "HttpMethod",
    "RateWindow",
    "host_allowed",
    "parse_byte_size",
    "parse_duration",
    "parse_rate",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_RATE_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 section 5.6.2
# Token characters without "*", then an optional final "*" (a prefix): "x-envoy-*".
_HEADER_PATTERN = re.compile(r"^[!#$%&'+\-.^_`|~0-9A-Za-z]+\*?$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def parse_duration(value: Any) -> float:
    """``"30s"``, ``"250ms"``, ``"5m"``, ``"1h"``, ``"1d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s' or '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    else:
        raise ValueError("expected a duration such as '30s', '250ms', '5m', '1h' or '1d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_byte_size(value: Any) -> int:
    """``"1MiB"``, ``"16KiB"``, ``"500kB"`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '1MiB' or '16KiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)) and m.group(2).lower() in _SIZE_UNITS:
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    else:
        raise ValueError("expected a size such as '1MiB', '16KiB' or a number of bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


@dataclass(frozen=True, slots=True)
class RateWindow:
    """``limit`` requests per ``window_s`` seconds."""

    limit: int
    window_s: float

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_s:g}s"


def parse_rate(value: Any) -> RateWindow:
    """``"100/minute"``, ``"10/s"``, ``"5000/hour"``, ``"20/10s"`` → RateWindow."""
    if isinstance(value, RateWindow):
        return value
    if not isinstance(value, str) or not (m := _RATE.match(value.lower())):
        raise ValueError("expected a rate such as '10/second', '100/minute', '5000/hour' or '20/10s'")
    unit = _RATE_UNITS.get(m.group(3))
    if unit is None:
        raise ValueError("the rate's unit must be second, minute, hour or day (or s, m, h, d)")
    limit, multiple = int(m.group(1)), int(m.group(2) or 1)
    if limit < 1 or multiple < 1:
        raise ValueError("a rate needs a positive count and window")
    return RateWindow(limit=limit, window_s=unit * multiple)


def _parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a CIDR such as '10.0.0.0/8' or an address")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(
            "expected a CIDR such as '10.0.0.0/8' (host bits must be zero) or a single address"
        ) from None


def _parse_header_name(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ValueError("expected an HTTP header name (RFC 9110 token characters only)")
    return value.lower()


def _parse_header_pattern(value: Any) -> str:
    # Folded as backends read names (lowercase, "_" as "-"; http/headers.py fold_name), so
    # `X_Original_URL` and `x-original-url` are one entry.
    if not isinstance(value, str) or not _HEADER_PATTERN.match(value):
        raise ValueError(
            "expected an HTTP header name (RFC 9110 token characters), optionally ending in '*' for a prefix"
        )
    return value.lower().replace("_", "-")


def _parse_method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in _METHODS:
        raise ValueError(f"expected one of {', '.join(sorted(_METHODS))}")
    return value.upper()


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
Rate = Annotated[RateWindow, BeforeValidator(parse_rate), PlainSerializer(str)]
Cidr = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_parse_cidr), PlainSerializer(str)
]
HeaderName = Annotated[str, BeforeValidator(_parse_header_name)]
HeaderPattern = Annotated[str, BeforeValidator(_parse_header_pattern)]
HttpMethod = Annotated[str, BeforeValidator(_parse_method)]


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Exact names, or ``*.suffix`` matching any name below ``suffix`` (not ``suffix`` itself).

    Lives here because both the config (checking routes against the global list) and the egress
    guard match host names the same way.
    """
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False
