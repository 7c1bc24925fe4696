"""The connection's deadline table: which timeout applies in which state, and when it runs out.

Why apart from the connection: a connection has one loop timer, and what that timer guards follows
from the state alone. Written as two pure functions, the table reads in one place and is tested
without sockets or a clock, while the connection keeps the timer and the actions:

===============  ==========================================  ========================================
wait             when                                        on expiry (the connection's action)
===============  ==========================================  ========================================
``LINGER``       closing (after a refusal, or a close)       abort: a client that never reads
``WRITE``        the transport asked to pause writing        abort: a client that does not read
``IN_FLIGHT``    a request is with the app                   none: the app's own timeouts bound it
``HEAD``         inside a request head                       408 ``head_timeout`` (slowloris)
``BODY``         inside a request body                       408 ``body_timeout`` (slow upload)
``KEEPALIVE``    idle after a served request                 close, an ordinary end
``FIRST_BYTE``   idle before the first request               close unanswered, audited
===============  ==========================================  ========================================

The order is the priority: a closing connection only lingers, whatever else is true; a paused
write outranks a request in flight (the app waits on it). A body earns one more second for every
``body_min_rate`` bytes it has delivered, so a large upload at a fair rate is not cut, while a
trickle is.

States and waits are plain ints, not enums: ``waiting_for`` runs on every request, and a module
constant costs a tenth of an enum member's lookup.

What it refuses to do: read a clock or touch the timer. Times come in as arguments (loop time).
"""

from __future__ import annotations

from typing import Final

from portcullis.server.limits import ServerLimits

__all__ = [
    "BODY",
    "FIRST_BYTE",
    "HEAD",
    "IN_FLIGHT",
    "KEEPALIVE",
    "LINGER",
    "LINGER_S",
    "PARSE_BODY",
    "PARSE_HEAD",
    "PARSE_IDLE",
    "WRITE",
    "expires_at",
    "waiting_for",
]

# The connection's parse state: what the parser is inside of.
PARSE_IDLE: Final = 0  # between requests
PARSE_HEAD: Final = 1  # a request head
PARSE_BODY: Final = 2  # a request body

# What the connection waits for (one at a time; see the table above).
IN_FLIGHT: Final = 0
FIRST_BYTE: Final = 1
HEAD: Final = 2
BODY: Final = 3
KEEPALIVE: Final = 4
WRITE: Final = 5
LINGER: Final = 6

LINGER_S: Final = 2.0  # after a refusal, how long input is read and dropped so the answer is not reset


def waiting_for(closing: bool, writing_paused: bool, busy: bool, parsing: int, served: bool) -> int:
    """What the connection waits for; ``busy``: a request is in flight or queued for the app."""
    if closing:
        return LINGER
    if writing_paused:
        return WRITE
    if busy:
        return IN_FLIGHT
    if parsing == PARSE_HEAD:
        return HEAD
    if parsing == PARSE_BODY:
        return BODY
    return KEEPALIVE if served else FIRST_BYTE


def expires_at(
    wait: int, limits: ServerLimits, since: float, write_paused_at: float, body_since: float, body_size: int,
) -> float | None:
    """When ``wait`` runs out, in loop time; ``None`` while a request is in flight.

    ``since`` is the start of the current wait (connection, request, idle or close),
    ``write_paused_at`` when writing paused, ``body_since`` when the body began.
    """
    if wait == LINGER:
        return since + min(LINGER_S, limits.write_timeout)
    if wait == WRITE:
        return write_paused_at + limits.write_timeout
    if wait == HEAD:
        return since + limits.head_timeout
    if wait == BODY:
        return body_since + limits.body_timeout + body_size / limits.body_min_rate
    if wait == KEEPALIVE:
        return since + limits.keepalive_timeout
    if wait == FIRST_BYTE:
        return since + limits.first_byte_timeout
    return None
