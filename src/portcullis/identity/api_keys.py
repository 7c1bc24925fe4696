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

What this module refuses to do: keep or log a plaintext secret, tell a client which check failed
(the reason is for the audit), or swallow ``StoreUnavailable`` (the caller denies).
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
from portcullis.errors import Unauthenticated
from portcullis.identity.principal import Principal
from portcullis.stores.base import ApiKeyRecord, KeyStore

__all__ = [
    "CONSUMER_PATTERN",
    "KEY_LENGTH",
    "SCOPE_PATTERN",
    "ApiKeyVerifier",
    "IssuedKey",
    "create_key",
    "hash_secret",
    "issue_key",
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
    consumer_id: str, scopes: Iterable[str], *, pepper: bytes, clock: Clock, expires_in_s: float | None = None
) -> IssuedKey:
    """Make a new key and its record (not stored yet; see ``create_key``)."""
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("expires_in_s must be positive")
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = secrets.token_urlsafe(32)  # 32 bytes = 256 bits → 43 characters
    now = clock.wall()
    record = ApiKeyRecord(
        key_id=key_id, consumer_id=consumer_id, secret_hash=hash_secret(secret, pepper), scopes=frozenset(scopes),
        created_at=now, expires_at=now + expires_in_s if expires_in_s is not None else None,
    )
    return IssuedKey(key=f"{PREFIX}{key_id}_{secret}", record=record)


async def create_key(
    store: KeyStore, consumer_id: str, scopes: Iterable[str], *, pepper: bytes, clock: Clock,
    expires_in_s: float | None = None,
) -> IssuedKey:
    """Issue a key and store it, drawing a new id in the (astronomically rare) case of a clash."""
    scope_set = frozenset(scopes)
    for attempt in range(_CREATE_ATTEMPTS):
        issued = issue_key(consumer_id, scope_set, pepper=pepper, clock=clock, expires_in_s=expires_in_s)
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
        self, store: KeyStore, *, pepper: bytes, clock: Clock, cache_ttl_s: float, max_cache_entries: int = 10_000
    ) -> None:
        if max_cache_entries < 1:
            raise ValueError("max_cache_entries must be at least 1")
        self._store = store
        self._pepper = pepper
        # hash_secret's HMAC keyed once, copied per check. Keying per request (and, worse, naming the
        # digest, which makes OpenSSL 3 fetch it each time) was the largest cost of key auth.
        self._keyed_mac = hmac.new(pepper, digestmod=hashlib.sha256)
        self._clock = clock
        self._ttl = cache_ttl_s
        self._negative_ttl = min(cache_ttl_s, _NEGATIVE_TTL_S)
        self._max = max_cache_entries
        self._max_negative = max(1, max_cache_entries // 10)
        self._found: OrderedDict[str, tuple[float, ApiKeyRecord]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[ApiKeyRecord | None]] = {}
        self._epoch = 0  # bumped by every invalidation; a lookup begun earlier is not cached
        self._last_used: dict[str, float] = {}

    async def verify(self, presented: str) -> Principal:
        """Check a presented key. Raises ``Unauthenticated`` or, from the store, ``StoreUnavailable``."""
        key_id, secret = parse_api_key(presented)
        return self._check(key_id, secret, await self._lookup(key_id))

    def verify_cached(self, presented: str) -> Principal | None:
        """``verify`` without I/O: the answer when the key's record (or its absence) is cached,
        ``None`` when only the store can tell. The auth policy uses it to skip the failed-auth
        shield for keys it already knows."""
        key_id, secret = parse_api_key(presented)
        now = self._clock.monotonic()
        found = self._found.get(key_id)
        if found is not None and found[0] > now:
            return self._check(key_id, secret, found[1])
        unknown_until = self._unknown.get(key_id)
        if unknown_until is not None and unknown_until > now:
            raise Unauthenticated("unknown_key")
        return None

    def _check(self, key_id: str, secret: str, record: ApiKeyRecord | None) -> Principal:
        if record is None:
            raise Unauthenticated("unknown_key")
        mac = self._keyed_mac.copy()  # re-keying per request showed up in profiles; a copy does not
        mac.update(secret.encode())
        if not hmac.compare_digest(mac.hexdigest(), record.secret_hash):
            raise Unauthenticated("bad_secret")
        if record.disabled:
            raise Unauthenticated("disabled")
        now = self._clock.wall()
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated("expired")
        self._last_used[key_id] = now
        return Principal(consumer_id=record.consumer_id, method="api_key", key_id=key_id, scopes=record.scopes)

    async def _lookup(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock.monotonic()
        found = self._found.get(key_id)
        if found is not None:
            if found[0] > now:
                return found[1]
            del self._found[key_id]
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

    async def _fetch(self, key_id: str, epoch: int) -> ApiKeyRecord | None:
        record = await self._store.get(key_id)
        if epoch == self._epoch:  # no revoke or invalidate happened while we were reading
            now = self._clock.monotonic()
            if record is None:
                _put(self._unknown, key_id, now + self._negative_ttl, self._max_negative)
            else:
                _put(self._found, key_id, (now + self._ttl, record), self._max)
        return record

    def _forget_inflight(self, key_id: str, task: asyncio.Task[ApiKeyRecord | None]) -> None:
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
        found = await self._store.revoke(key_id)
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
