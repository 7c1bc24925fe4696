"""Consumers' request-signing keys: issue, load (cached), rotate with overlap, revoke.

Key ids are ``sig_`` and 12 characters of ``[a-z0-9]`` (not secret: they are the ``keyid`` a client
puts in ``Signature-Input``, and what the CLI lists and the audit records).

Key material:
- ``hmac-sha256``: the gateway draws a 32-byte secret, shows it once (base64), and keeps it in the
  vault as ``signing.<key id>``, Fernet-encrypted under the master key, so the vault's start-up
  check and ``portcullis secrets rotate`` cover it like any injected credential. The key record
  names the vault entry and never holds the secret.
- ``ed25519``: the consumer keeps its private key; the gateway stores the raw public key (given as
  PEM or base64 of its 32 bytes).

Rotation: a new key for the same consumer, algorithm and scopes, and the old key's expiry moved to
the end of the overlap, so both verify until then and only the new one after.

Lookups are cached on the injected clock for ``cache_ttl_s`` (unknown ids for at most a second, in
a separate, smaller map); ``invalidate`` drops a key at once (a revocation here, or one heard from
another instance over the shared events), as for API keys. Whether a cached key is revoked,
expired or not yet valid is judged at each use against the wall clock.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.clock import Clock
from portcullis.signing.algorithms import Algorithm, VerificationKey
from portcullis.stores.base import SigningKeyRecord, SigningKeyStore
from portcullis.vault import Vault

__all__ = ["SIGNING_KEY_ID_PATTERN", "IssuedSigningKey", "LoadedKey", "SigningKeyring", "create_signing_key",
           "parse_public_key"]

SIGNING_KEY_ID_PATTERN = r"sig_[a-z0-9]{12}"
_KEY_ID = re.compile(SIGNING_KEY_ID_PATTERN)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_NEGATIVE_TTL_S = 1.0
_CREATE_ATTEMPTS = 3
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class IssuedSigningKey:
    """A new key: ``secret`` is the HMAC secret (base64), shown once; None for an Ed25519 key."""

    record: SigningKeyRecord
    secret: str | None = None

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"IssuedSigningKey(record={self.record!r})"


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """A key's record and the material that verifies with it."""

    record: SigningKeyRecord
    key: VerificationKey


def secret_name(key_id: str) -> str:
    """The vault entry holding an HMAC key's secret."""
    return f"signing.{key_id}"


def parse_public_key(text: str) -> str:
    """An Ed25519 public key given as PEM, or base64 of its raw 32 bytes, as stored (base64 raw).
    Raises ``ValueError`` for anything else."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("utf-8"))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("the PEM is not a public key this gateway can read") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an Ed25519 public key is PEM or base64 of its 32 bytes") from None
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        Ed25519PublicKey.from_public_bytes(raw)
    return base64.b64encode(raw).decode("ascii")


async def create_signing_key(
    store: SigningKeyStore, vault: Vault, consumer_id: str, algorithm: Algorithm, *, clock: Clock,
    public_key: str | None = None, scopes: Iterable[str] = (), not_before: float | None = None,
    expires_in_s: float | None = None,
) -> IssuedSigningKey:
    """Issue and store a key. HMAC: a new secret, into the vault first (``VaultLocked`` without a
    master key). Ed25519: ``public_key`` is required (PEM or base64)."""
    now = clock.wall()
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("expires_in_s must be positive")
    stored_public = None
    if algorithm == "ed25519":
        if public_key is None:
            raise ValueError("an ed25519 key needs the consumer's public key")
        stored_public = parse_public_key(public_key)
    elif public_key is not None:
        raise ValueError("an hmac-sha256 key has no public key; the gateway draws its secret")
    for attempt in range(_CREATE_ATTEMPTS):
        key_id = "sig_" + "".join(secrets.choice(_ALPHABET) for _ in range(12))
        record = SigningKeyRecord(
            key_id=key_id, consumer_id=consumer_id, algorithm=algorithm, created_at=now, public_key=stored_public,
            secret_name=secret_name(key_id) if algorithm == "hmac-sha256" else None, scopes=frozenset(scopes),
            not_before=not_before, expires_at=now + expires_in_s if expires_in_s is not None else None,
        )
        secret = None
        if record.secret_name is not None:
            secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
            await vault.set(record.secret_name, secret)
        try:
            await store.create_signing_key(record)
        except ValueError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            continue
        return IssuedSigningKey(record, secret)
    raise AssertionError("unreachable")  # pragma: no cover


class SigningKeyring:
    """Key id → ``LoadedKey`` for the verifier, cached; and the changes that must drop the cache."""

    def __init__(self, store: SigningKeyStore, vault: Vault, *, clock: Clock, cache_ttl_s: float,
                 max_cache_entries: int = 10_000) -> None:
        self._store = store
        self._vault = vault
        self._clock = clock
        self._ttl = cache_ttl_s
        self._max = max_cache_entries
        self._found: OrderedDict[str, tuple[float, LoadedKey]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._epoch = 0

    async def get(self, key_id: str) -> LoadedKey | None:
        """The key, or None if no such key exists. Raises ``StoreUnavailable`` (or the vault's errors)."""
        if not _KEY_ID.fullmatch(key_id):
            return None  # not one of ours: no lookup
        now = self._clock.monotonic()
        cached = self._found.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        unknown_until = self._unknown.get(key_id)
        if unknown_until is not None and unknown_until > now:
            return None
        epoch = self._epoch
        record = await self._store.get_signing_key(key_id)
        loaded = None if record is None else await self._load(record)
        if epoch == self._epoch:  # nothing was invalidated while we read
            if loaded is None:
                _put(self._unknown, key_id, now + min(self._ttl, _NEGATIVE_TTL_S), max(1, self._max // 10))
            else:
                _put(self._found, key_id, (now + self._ttl, loaded), self._max)
        return loaded

    async def _load(self, record: SigningKeyRecord) -> LoadedKey:
        if record.algorithm == "ed25519" and record.public_key is not None:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(record.public_key))
            return LoadedKey(record, VerificationKey("ed25519", public_key=public))
        if record.algorithm == "hmac-sha256" and record.secret_name is not None and record.revoked_at is None:
            secret = base64.b64decode(await self._vault.reveal(record.secret_name))
            return LoadedKey(record, VerificationKey("hmac-sha256", hmac_secret=secret))
        return LoadedKey(record, VerificationKey("hmac-sha256"))  # revoked, or no material: verifies nothing

    def invalidate(self, key_id: str) -> None:
        """Forget what is cached about ``key_id``; the next request reads the store."""
        self._epoch += 1
        self._found.pop(key_id, None)
        self._unknown.pop(key_id, None)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._found.clear()
        self._unknown.clear()

    async def revoke(self, key_id: str) -> bool:
        """Revoke in the store and forget the cached key now. An HMAC key's secret leaves the vault."""
        record = await self._store.get_signing_key(key_id)
        found = await self._store.revoke_signing_key(key_id, self._clock.wall())
        self.invalidate(key_id)
        if found and record is not None and record.secret_name is not None:
            await self._vault.delete(record.secret_name)
        return found

    async def rotate(self, key_id: str, overlap_s: float, *, public_key: str | None = None) -> IssuedSigningKey | None:
        """A new key like ``key_id`` (same consumer, algorithm and scopes); the old one keeps verifying for
        ``overlap_s``. None if there is no such key or it is revoked. Ed25519 needs the new ``public_key``."""
        if overlap_s < 0:
            raise ValueError("overlap_s must not be negative")
        old = await self._store.get_signing_key(key_id)
        if old is None or old.revoked_at is not None:
            return None
        algorithm: Algorithm = "ed25519" if old.algorithm == "ed25519" else "hmac-sha256"
        issued = await create_signing_key(self._store, self._vault, old.consumer_id, algorithm, clock=self._clock,
                                          public_key=public_key, scopes=old.scopes)
        await self._store.expire_signing_key(key_id, self._clock.wall() + overlap_s)
        self.invalidate(key_id)
        return issued


def _put(cache: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
