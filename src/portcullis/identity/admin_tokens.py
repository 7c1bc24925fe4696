"""Admin tokens: how operators authenticate to the admin API without an identity provider.

Format: ``pca_<token id>_<secret>``, the same shape as API keys (``identity.api_keys``) with its
own prefix, so secret scanners can tell an admin token (far more dangerous when leaked) from a
consumer's key: ``pca_[a-z0-9]{12}_[A-Za-z0-9_-]{43}``. The token id is what the audit names as
the actor (``token:<id>``); the secret is 256 bits from ``secrets``.

Storage: only HMAC-SHA256(pepper, secret) is kept (``admin.token_pepper``, default ``keys.pepper``),
compared in constant time. A token is shown once, when made: by ``portcullis admin bootstrap``
(which writes the store directly: there is no default password) or by an operator with
``tokens.write`` through the admin API.

Why every request reads the store (unlike API keys): admin traffic is a few requests a minute, and
a revoked or expired admin token must stop working on the very next request on every instance.
The failed-auth throttle in ``admin.auth`` runs before any lookup, so a flood of made-up tokens
costs the store little. The one exception is an outage: ``AdminTokenVerifier`` remembers the
records it verified, and while the store is unreachable a token verified within
``stale_if_error_s`` is still accepted (checked against the remembered hash, expiry and
revocation), so Prometheus keeps scraping ``/metrics`` and operators keep acting during a
PostgreSQL outage. A token revoked on this instance is forgotten at once; one revoked through
another instance during the outage works here until the window ends (the price of availability,
bounded by the window).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable, Unauthenticated
from portcullis.stores.base import AdminTokenRecord, AdminTokenStore

__all__ = ["NAME_PATTERN", "TOKEN_PREFIX", "AdminTokenVerifier", "IssuedAdminToken", "issue_admin_token",
           "looks_like_admin_token", "verify_admin_token"]

TOKEN_PREFIX = "pca_"
_TOKEN = re.compile(r"pca_([a-z0-9]{12})_([A-Za-z0-9_\-]{43})")
_TOKEN_LENGTH = len(TOKEN_PREFIX) + 12 + 1 + 43
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
NAME_PATTERN = r"[A-Za-z0-9_.@\- ]{1,64}"


@dataclass(frozen=True, slots=True)
class IssuedAdminToken:
    """A new token: ``token`` is the plaintext, shown once; ``record`` is what is stored."""

    token: str
    record: AdminTokenRecord

    def __repr__(self) -> str:  # keep the plaintext out of logs and tracebacks
        return f"IssuedAdminToken(token='pca_{self.record.token_id}_…', record={self.record!r})"


def _hash(secret: str, pepper: bytes) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def issue_admin_token(
    *, name: str, role: str, created_by: str, pepper: bytes, clock: Clock, expires_in_s: float | None = None,
    consumers: frozenset[str] = frozenset(),
) -> IssuedAdminToken:
    """Make a token and its record (not stored yet)."""
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("expires_in_s must be positive")
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    now = clock.wall()
    record = AdminTokenRecord(
        token_id=token_id, name=name, role=role, secret_hash=_hash(secret, pepper), created_at=now,
        created_by=created_by, consumers=consumers,
        expires_at=now + expires_in_s if expires_in_s is not None else None,
    )
    return IssuedAdminToken(f"{TOKEN_PREFIX}{token_id}_{secret}", record)


def looks_like_admin_token(text: str) -> bool:
    return text.startswith(TOKEN_PREFIX)


class AdminTokenVerifier:
    """``verify_admin_token`` with stale-if-error for tokens verified recently (see the module docstring)."""

    def __init__(self, store: AdminTokenStore, *, clock: Clock, stale_if_error_s: float,
                 max_entries: int = 1_000) -> None:
        self._store = store
        self._clock = clock
        self._stale_s = stale_if_error_s
        self._max = max_entries
        self._verified: OrderedDict[str, tuple[AdminTokenRecord, float]] = OrderedDict()

    async def verify(self, presented: str, *, pepper: bytes) -> AdminTokenRecord:
        try:
            record = await verify_admin_token(self._store, presented, pepper=pepper, clock=self._clock)
        except StoreUnavailable:
            return self._stale(presented, pepper)
        self._verified[record.token_id] = (record, self._clock.monotonic())
        self._verified.move_to_end(record.token_id)
        while len(self._verified) > self._max:
            self._verified.popitem(last=False)
        return record

    def forget(self, token_id: str) -> None:
        """A revocation on this instance: never serve this token from memory again."""
        self._verified.pop(token_id, None)

    def _stale(self, presented: str, pepper: bytes) -> AdminTokenRecord:
        match = _TOKEN.fullmatch(presented) if len(presented) == _TOKEN_LENGTH else None
        found = self._verified.get(match.group(1)) if match else None
        if match is None or found is None or self._clock.monotonic() - found[1] > self._stale_s:
            raise StoreUnavailable("admin token store unavailable and no recent verification of this token")
        return _checked(found[0], match.group(2), pepper, self._clock)


async def verify_admin_token(
    store: AdminTokenStore, presented: str, *, pepper: bytes, clock: Clock,
) -> AdminTokenRecord:
    """The record of a presented token, or ``Unauthenticated`` with the reason for the audit
    (``malformed_token``, ``unknown_token``, ``bad_secret``, ``revoked``, ``expired``). The secret
    is checked before the state, so only the holder learns the token is revoked or expired.
    ``StoreUnavailable`` passes through (the caller answers 503)."""
    if len(presented) != _TOKEN_LENGTH:
        raise Unauthenticated("malformed_token")
    match = _TOKEN.fullmatch(presented)
    if match is None:
        raise Unauthenticated("malformed_token")
    token_id, secret = match.group(1), match.group(2)
    record = await store.get_admin_token(token_id)
    if record is None:
        raise Unauthenticated("unknown_token")
    return _checked(record, secret, pepper, clock)


def _checked(record: AdminTokenRecord, secret: str, pepper: bytes, clock: Clock) -> AdminTokenRecord:
    if not hmac.compare_digest(record.secret_hash, _hash(secret, pepper)):
        raise Unauthenticated("bad_secret")
    if record.revoked_at is not None:
        raise Unauthenticated("revoked")
    if record.expires_at is not None and clock.wall() >= record.expires_at:
        raise Unauthenticated("expired")
    return record
