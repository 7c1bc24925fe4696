"""API keys: format, issuing, peppered hashing, and verification with a bounded cache.

Format: ``pcl_<key id>_<secret>``, 60 ASCII characters.

- ``pcl_`` lets secret scanners (GitHub push protection, GitGuardian, trufflehog) recognise a
  leaked key with a fixed-length pattern: ``pcl_[a-z0-9]{12}_[A-Za-z0-9_-]{43}``.
- The key id is 12 characters of ``[a-z0-9]`` (62 bits from ``secrets``). It is not secret: it is
  what the store is indexed by, what the CLI lists and revokes, and what the audit records.
- The secret is ``secrets.token_urlsafe(32)``: 256 bits as 43 base64url characters, no padding.

Storage: only HMAC-SHA256(pepper, secret) is stored, hex. A stolen database without the pepper
(which lives in the gateway's environment) cannot be used to test guesses offline, and the
comparison is constant-time (``hmac.compare_digest``).

Verification refuses malformed keys by length and charset before any lookup. Lookups are cached
on the injected clock: found records for ``cache_ttl_s``, unknown ids briefly in a separate,
smaller map, so a flood of made-up ids can neither grow memory nor evict real keys. Concurrent
misses for one id share a single store query. Last use is kept in memory and written by
``flush_last_used``, so no request waits for a write.

Stale-if-error (the idea of RFC 5861 section 4): a found record past its TTL is not dropped but
kept, in the same bounded map, until ``stale_if_error_s`` after the store last returned it. If the
store then fails (``StoreUnavailable``), that record answers instead, marked ``served_stale`` on the
principal, and the next ``cache_ttl_s`` of requests for the key are answered from it without
asking the store again, so an outage costs one store timeout per key per TTL, not one per request.
Without this, a database outage longer than the TTL refused every key. A stale record is checked
like a fresh one (secret, ``disabled``, ``expires_at`` against the wall clock), and ``invalidate``
(a revocation heard over shared events) and ``invalidate_all`` (events possibly missed) drop it, so
a revoked key is never served stale. Unknown ids are never served stale: they still need the store.

What this module refuses to do: keep or log a plaintext secret, tell a client which check failed
(the reason is for the audit), or swallow ``StoreUnavailable`` when it holds no usable stale record
(the caller denies).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable, Unauthenticated
from portcullis.identity.principal import Principal
from portcullis.stores.base import ApiKeyRecord, KeyStore

__all__ = [
    "CONSUMER_PATTERN",
    "KEY_LENGTH",
    "SCOPE_PATTERN",
    "ApiKeyVerifier",
    "IssuedKey",
    "create_key",
    "format_key",
    "hash_secret",
    "issue_key",
    "new_secret",
    "parse_api_key",
]

PREFIX = "pcl_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 43
KEY_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH
_KEY = re.compile(r"pcl_([a-z0-9]{12})_([A-Za-z0-9_\-]{43})")
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# What a consumer name and a scope may be, wherever keys are created (CLI, admin API): both end up
# in upstream identity headers and audit records, so no separators, spaces or control characters.
CONSUMER_PATTERN = r"[A-Za-z0-9_.@\-]{1,64}"
SCOPE_PATTERN = r"[A-Za-z0-9_.@:\-]{1,64}"  # ":" as in orders:read
_NEGATIVE_TTL_S = 1.0
_CREATE_ATTEMPTS = 3
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``key`` is the plaintext, shown once and never stored; ``record`` is what is."""

    key: str
    record: ApiKeyRecord

    def __repr__(self) -> str:  # keep the plaintext out of logs and tracebacks
        return f"IssuedKey(key='pcl_{self.record.key_id}_…', record={self.record!r})"


@dataclass(frozen=True, slots=True)
class _Cached:
    """A found record and its deadlines, on the monotonic clock.

    ``fresh_until``: answered without asking the store. ``stale_until``: kept past that, and
    answered only when the store fails. ``stale``: ``fresh_until`` was pushed out after a store
    failure, not by a read, so answers from it are marked ``served_stale``.
    """

    record: ApiKeyRecord
    fresh_until: float
    stale_until: float
    stale: bool = False


def parse_api_key(text: str) -> tuple[str, str]:
    """Split a presented key into (key id, secret), or raise ``Unauthenticated("malformed_key")``.

    The length is checked before the pattern, so a megabyte of junk costs one ``len``.
    """
    if len(text) != KEY_LENGTH:
        raise Unauthenticated("malformed_key")
    m = _KEY.fullmatch(text)
    if m is None:
        raise Unauthenticated("malformed_key")
    return m.group(1), m.group(2)


def hash_secret(secret: str, pepper: bytes) -> str:
    """HMAC-SHA256(pepper, secret), hex: the only form of a secret that is stored."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def issue_key(
    consumer_id: str, scopes: Iterable[str], *, pepper: bytes, clock: Clock, expires_in_s: float | None = None,
    roles: Iterable[str] = (),
) -> IssuedKey:
    """Make a new key and its record (not stored yet; see ``create_key``)."""
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("expires_in_s must be positive")
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = new_secret()
    now = clock.wall()
    record = ApiKeyRecord(
        key_id=key_id, consumer_id=consumer_id, secret_hash=hash_secret(secret, pepper), scopes=frozenset(scopes),
        created_at=now, expires_at=now + expires_in_s if expires_in_s is not None else None, roles=frozenset(roles),
    )
    return IssuedKey(key=format_key(key_id, secret), record=record)


def new_secret() -> str:
    """A key's secret: 32 random bytes, 43 base64url characters."""
    return secrets.token_urlsafe(32)


def format_key(key_id: str, secret: str) -> str:
    """The key a client presents."""
    return f"{PREFIX}{key_id}_{secret}"


async def create_key(
    store: KeyStore, consumer_id: str, scopes: Iterable[str], *, pepper: bytes, clock: Clock,
    expires_in_s: float | None = None, roles: Iterable[str] = (),
) -> IssuedKey:
    """Issue a key and store it, drawing a new id in the (astronomically rare) case of a clash."""
    scope_set, role_set = frozenset(scopes), frozenset(roles)
    for attempt in range(_CREATE_ATTEMPTS):
        issued = issue_key(consumer_id, scope_set, pepper=pepper, clock=clock, expires_in_s=expires_in_s,
                           roles=role_set)
        try:
            await store.create(issued.record)
        except ValueError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            continue
        return issued
    raise AssertionError("unreachable")  # pragma: no cover


class ApiKeyVerifier:
    """Presented key → ``Principal``, or ``Unauthenticated`` with a reason for the audit.

    Reasons: ``malformed_key``, ``unknown_key``, ``bad_secret``, ``disabled``, ``expired``. The
    secret is checked before the key's state, so only the holder of a key learns it is revoked or
    expired.
    """

    def __init__(
        self, store: KeyStore, *, pepper: bytes, clock: Clock, cache_ttl_s: float, stale_if_error_s: float = 0.0,
        max_cache_entries: int = 10_000,
    ) -> None:
        if max_cache_entries < 1:
            raise ValueError("max_cache_entries must be at least 1")
        if stale_if_error_s < 0:
            raise ValueError("stale_if_error_s must not be negative")
        self._store = store
        self._pepper = pepper
        # hash_secret's HMAC keyed once, copied per check. Keying per request (and, worse, naming the
        # digest, which makes OpenSSL 3 fetch it each time) was the largest cost of key auth.
        self._keyed_mac = hmac.new(pepper, digestmod=hashlib.sha256)
        self._clock = clock
        self._ttl = cache_ttl_s
        self._stale_s = stale_if_error_s
        self._negative_ttl = min(cache_ttl_s, _NEGATIVE_TTL_S)
        self._max = max_cache_entries
        self._max_negative = max(1, max_cache_entries // 10)
        # Fresh and stale records share this one bound: holding records for stale use keeps them
        # longer, never more of them.
        self._found: OrderedDict[str, _Cached] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[_Cached | None]] = {}
        self._epoch = 0  # bumped by every invalidation; a lookup begun earlier is not cached
        self._last_used: dict[str, float] = {}

    async def verify(self, presented: str) -> Principal:
        """Check a presented key. Raises ``Unauthenticated`` or, from the store, ``StoreUnavailable``
        (only when no record of the key may be served stale)."""
        key_id, secret = parse_api_key(presented)
        return self._check(key_id, secret, await self._lookup(key_id))

    def verify_cached(self, presented: str) -> Principal | None:
        """``verify`` without I/O: the answer when the key's record (or its absence) is cached,
        ``None`` when only the store can tell. The auth policy uses it to skip the failed-auth
        shield for keys it already knows."""
        key_id, secret = parse_api_key(presented)
        now = self._clock.monotonic()
        found = self._found.get(key_id)
        if found is not None and found.fresh_until > now:
            return self._check(key_id, secret, found)
        unknown_until = self._unknown.get(key_id)
        if unknown_until is not None and unknown_until > now:
            raise Unauthenticated("unknown_key")
        return None

    def _check(self, key_id: str, secret: str, cached: _Cached | None) -> Principal:
        if cached is None:
            raise Unauthenticated("unknown_key")
        record = cached.record
        mac = self._keyed_mac.copy()  # re-keying per request showed up in profiles; a copy does not
        mac.update(secret.encode())
        digest = mac.hexdigest()
        now = self._clock.wall()
        if not hmac.compare_digest(digest, record.secret_hash) and not (
            # a rotated key's former secret, during its grace period
            record.previous_secret_hash is not None and record.previous_valid_until is not None
            and now < record.previous_valid_until and hmac.compare_digest(digest, record.previous_secret_hash)
        ):
            raise Unauthenticated("bad_secret")
        if record.disabled:
            raise Unauthenticated("disabled")
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated("expired")
        self._last_used[key_id] = now
        return Principal(consumer_id=record.consumer_id, method="api_key", key_id=key_id, scopes=record.scopes,
                         roles=record.roles, served_stale=cached.stale)

    async def _lookup(self, key_id: str) -> _Cached | None:
        now = self._clock.monotonic()
        found = self._found.get(key_id)
        if found is not None:
            if found.fresh_until > now:
                return found
            if found.stale_until <= now:
                del self._found[key_id]  # past any stale use too
        unknown_until = self._unknown.get(key_id)
        if unknown_until is not None:
            if unknown_until > now:
                return None
            del self._unknown[key_id]
        task = self._inflight.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key_id, self._epoch))
            self._inflight[key_id] = task
            task.add_done_callback(lambda t: self._forget_inflight(key_id, t))
        # shield: one cancelled request must not cancel the lookup the others are waiting on
        return await asyncio.shield(task)

    async def _fetch(self, key_id: str, epoch: int) -> _Cached | None:
        try:
            record = await self._store.get(key_id)
        except StoreUnavailable:
            stale = self._serve_stale(key_id)
            if stale is None:
                raise
            return stale
        now = self._clock.monotonic()
        if record is None:
            self._found.pop(key_id, None)
            if epoch == self._epoch:
                _put(self._unknown, key_id, now + self._negative_ttl, self._max_negative)
            return None
        cached = _Cached(record, fresh_until=now + self._ttl, stale_until=now + self._stale_s)
        if epoch == self._epoch:  # no revoke or invalidate happened while we were reading
            _put(self._found, key_id, cached, self._max)
        return cached

    def _serve_stale(self, key_id: str) -> _Cached | None:
        """After a store failure: the kept record, trusted for one more TTL, if still within its
        stale period. Read after the failed call, so a revocation heard meanwhile has removed it."""
        found = self._found.get(key_id)
        now = self._clock.monotonic()
        if found is None or found.stale_until <= now:
            return None
        if found.fresh_until > now:
            return found  # a concurrent read refreshed it
        stale = _Cached(found.record, fresh_until=min(now + self._ttl, found.stale_until),
                        stale_until=found.stale_until, stale=True)
        self._found[key_id] = stale  # in place: being served stale is no reason to outlive other entries
        return stale

    def _forget_inflight(self, key_id: str, task: asyncio.Task[_Cached | None]) -> None:
        if self._inflight.get(key_id) is task:
            del self._inflight[key_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not logged as lost

    def invalidate(self, key_id: str) -> None:
        """Forget what is cached about ``key_id``; the next request reads the store."""
        self._epoch += 1
        self._found.pop(key_id, None)
        self._unknown.pop(key_id, None)
        self._inflight.pop(key_id, None)

    def invalidate_all(self) -> None:
        """Forget every cached lookup (after missing events that might have revoked some)."""
        self._epoch += 1
        self._found.clear()
        self._unknown.clear()
        self._inflight.clear()

    async def revoke(self, key_id: str) -> bool:
        """Revoke in the store and forget the cached record now: the next request is refused."""
        found = await self._store.revoke(key_id, self._clock.wall())
        self.invalidate(key_id)
        return found

    async def rotate(self, key_id: str, grace_s: float) -> str | None:
        """Give the key a new secret and return the new key (shown once); the former secret keeps
        working for ``grace_s`` so clients can move over. None if there is no such key or it is revoked."""
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        secret = new_secret()
        found = await self._store.rotate(key_id, hash_secret(secret, self._pepper), self._clock.wall() + grace_s)
        self.invalidate(key_id)
        return format_key(key_id, secret) if found else None

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable or enable a key; effective here at once. False if there is no such key or it is revoked."""
        found = await self._store.set_disabled(key_id, disabled)
        self.invalidate(key_id)
        return found

    async def flush_last_used(self) -> None:
        """Write the last-use times gathered since the previous flush.

        If the store fails, what was not written is kept for the next flush and the error raised.
        """
        pending, self._last_used = self._last_used, {}
        items = list(pending.items())
        for done, (key_id, at) in enumerate(items):
            try:
                await self._store.touch(key_id, at)
            except BaseException:
                for kid, when in items[done:]:
                    self._last_used[kid] = max(when, self._last_used.get(kid, when))
                raise


def _put(cache: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
