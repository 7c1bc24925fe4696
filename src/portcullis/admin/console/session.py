"""Console sessions: held in this process, found by a random id in a cookie, ended by time or logout.

Why server-side rather than a signed cookie: logout and eviction must end a session at once, and
the session holds the credential it was opened with (an admin token or an operator JWT), which
must never travel back to the browser. Each request re-checks that credential (``door``), so a
revoked token or an expired JWT ends the console session on its next request, not at its timeout.

Bounds: at most ``max_sessions`` (the least recently used goes first), each ending after
``idle_s`` unused or ``lifetime_s`` after sign-in, whichever comes first, on the injected Clock.
Sessions are kept under a SHA-256 of their id, so the table never holds a usable cookie value and
a lookup compares digests, not the secret. What it does not do: survive a restart, or follow the
operator to another instance (sign in again there; the admin listener is per instance).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from portcullis.clock import Clock

__all__ = ["ConsoleSession", "OpenedSession", "SessionLimits", "SessionStore"]

_ID_BYTES = 32  # 256 bits: unguessable (OWASP session management: at least 64 bits of entropy)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle_s: float
    lifetime_s: float
    max_sessions: int


@dataclass(slots=True)
class ConsoleSession:
    """One signed-in browser. ``csrf_token``: the synchronizer token every form of it carries."""

    credential: str
    csrf_token: str
    actor: str
    opened_at: float
    last_seen: float

    def __repr__(self) -> str:  # the credential never reaches a log or a traceback
        return f"ConsoleSession(actor={self.actor!r})"


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session and the cookie value that finds it (given to the browser once, kept nowhere)."""

    cookie_value: str
    session: ConsoleSession


def _key(cookie_value: str) -> bytes:
    return hashlib.sha256(cookie_value.encode()).digest()


class SessionStore:
    """The bounded table of console sessions (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sessions: OrderedDict[bytes, ConsoleSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, credential: str, actor: str, limits: SessionLimits) -> OpenedSession:
        now = self._clock.monotonic()
        cookie_value = secrets.token_urlsafe(_ID_BYTES)
        session = ConsoleSession(credential, secrets.token_urlsafe(_ID_BYTES), actor, now, now)
        self._sessions[_key(cookie_value)] = session
        while len(self._sessions) > limits.max_sessions:
            self._sessions.popitem(last=False)
        return OpenedSession(cookie_value, session)

    def find(self, cookie_value: str | None, limits: SessionLimits) -> ConsoleSession | None:
        """The live session this cookie names (its idle time restarts), or None (and it is forgotten)."""
        if not cookie_value:
            return None
        key = _key(cookie_value)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock.monotonic()
        if now - session.last_seen >= limits.idle_s or now - session.opened_at >= limits.lifetime_s:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def close(self, cookie_value: str | None) -> None:
        if cookie_value:
            self._sessions.pop(_key(cookie_value), None)
