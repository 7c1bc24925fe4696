"""``ServerLimits``: every bound the front door enforces, frozen, in plain units.

Why a dataclass of its own: the server must not import the gateway's config model (which pulls
in the policy registry), and the hot path wants plain ints and floats, not pydantic fields. The
composition root (``cli/serving.py``) builds one from ``listen.*``; tests build one with tiny
timeouts. Every default here is the safe one and matches ``ListenConfig``'s.

What it refuses: zero or negative bounds, which would mean "unbounded" by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["ServerLimits"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Sizes in bytes, times in seconds, counts as ints."""

    max_header_bytes: int = 16 * KiB  # request line + header block, counted as bytes arrive (431)
    max_target_bytes: int = 8 * KiB  # request target (414)
    max_header_count: int = 100  # header fields per request (431)
    max_body_bytes: int = 1 * MiB  # when the app names no limit for the route (413)
    body_buffer_bytes: int = 64 * KiB  # bodies beyond this spill to a private temporary file
    first_byte_timeout: float = 10.0  # connect → first byte of the first request
    head_timeout: float = 10.0  # first byte → end of the header block (slowloris)
    body_timeout: float = 30.0  # base allowance for a body ...
    body_min_rate: int = 8 * KiB  # ... plus one second per this many bytes received
    keepalive_timeout: float = 5.0  # idle between requests on a kept-alive connection
    write_timeout: float = 30.0  # longest a client may leave the write buffer above high water
    write_high_water: int = 64 * KiB  # transport write buffer: ``send`` waits above this
    max_stalled_responses: int = 32  # responses waiting on clients that do not read; the longest waiting is cut beyond
    max_connections: int = 4096  # open connections in this process (503 beyond)
    max_connections_per_ip: int = 256  # open connections from one peer address (503 beyond)
    graceful_timeout: float = 10.0  # drain: in-flight requests may finish within this

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"server limit {f.name} must be more than 0")
        if self.max_target_bytes > self.max_header_bytes:
            object.__setattr__(self, "max_target_bytes", self.max_header_bytes)
