"""Secrets for egress credential injection: Fernet at rest, MultiFernet for master-key rotation.

Why Fernet (``cryptography``): authenticated encryption (AES-128-CBC + HMAC-SHA256) with a
versioned token format and ``MultiFernet.rotate`` for re-encryption; we write no cryptography.

Rules this module keeps:
- **The master key comes from the environment** (``PORTCULLIS_SECRET_KEY``), never the config file
  or the database: a stolen database alone is ciphertext. Several comma-separated keys may be
  given during a rotation: the first encrypts, all decrypt.
- **A ciphertext is bound to its name**: the plaintext carries the name and ``reveal`` checks it, so
  someone with write access to the table cannot move the Stripe key's ciphertext under the name a
  less trusted route injects (Fernet has no associated data, so the binding is in the payload).
- **Values never leave except through ``reveal``**: ``list`` returns names, fingerprints and
  times; errors name secrets, never values.
- **Fingerprints** identify a value without revealing it: an HMAC keyed from the master key at the
  time the secret was set (a plain hash of a short secret could be brute-forced offline).
- **A locked vault refuses to start**: if secrets exist and the key is missing or cannot decrypt
  every one of them, ``unlock`` raises ``VaultLocked`` with what to do, before any traffic.
- **A write never locks the vault**: ``set`` and ``rotate_master`` first check that the keys
  decrypt every secret already stored (the same rule ``unlock`` applies), and write nothing if
  not. Checking one secret would not do: a vault whose secrets are under different keys would
  take the write and still refuse to start. Decrypting every secret costs well under a
  millisecond each. ``delete`` needs no key: it encrypts nothing, so it cannot lock the vault.
- **A revealed value is read from the store at most once a second** (``REVEAL_FRESH_S``, on the
  injected clock): ``reveal`` runs on every egress call, and a store read plus a last-use write per
  call (two thread hops with SQLite) and a decrypt were a sixth of the egress door's CPU. Within
  that second the same plaintext is used again; each store read writes the last use, so the stored
  time is at most that second older than the true one. A ``set``, ``delete`` or rotation through
  this vault takes effect at once; one made by another process (the CLI, another instance) within
  a second. A changed ciphertext is always decrypted again (and its name binding checked).
- **A store outage does not stop injection at once** (``stale_if_error_s``, RFC 5861's
  stale-if-error, as API keys have it): while the store is unreachable, a secret read from it
  within that time is still revealed (and counted through ``on_served_stale``); one never read, or
  read longer ago, fails as before. Without it a PostgreSQL failover would fail every egress call
  that injects a credential after one second, while the ingress keeps serving cached keys. The
  cost is the keys' too: a secret replaced or deleted during the outage by another process is
  used in its old form until the store answers again or the time runs out. A last-use write that
  fails is not the call's failure: the value was read. A read that failed (with nothing to fall
  back on) is not retried within the second: calls fail at once instead of each waiting for a
  store that hangs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from portcullis.clock import Clock
from portcullis.errors import SecretNotFound, StoreUnavailable, VaultError, VaultLocked
from portcullis.stores.base import SecretRecord, SecretStore

__all__ = ["SECRET_KEY_ENV", "MasterKeys", "SecretInfo", "Vault", "generate_master_key", "valid_secret_name"]

SECRET_KEY_ENV = "PORTCULLIS_SECRET_KEY"
REVEAL_FRESH_S = 1.0  # how long a revealed value is used before the store is read again
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_FINGERPRINT_CONTEXT = b"portcullis vault fingerprint v1"


def generate_master_key() -> str:
    """A new random master key, in the form ``PORTCULLIS_SECRET_KEY`` takes."""
    return Fernet.generate_key().decode("ascii")


def valid_secret_name(name: str) -> bool:
    return bool(_NAME.match(name))


class MasterKeys:
    """The master keys from the environment: the first encrypts, every one decrypts."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise VaultLocked(f"{SECRET_KEY_ENV} is not set")
        try:
            self._fernets = [Fernet(k) for k in keys]
        except (ValueError, TypeError):
            raise VaultLocked(
                f"{SECRET_KEY_ENV} must be Fernet keys (32 url-safe base64 bytes), comma-separated; "
                "generate one with `portcullis secrets generate-key`"
            ) from None
        self._multi = MultiFernet(self._fernets)
        self._fingerprint_key = hmac.new(keys[0], _FINGERPRINT_CONTEXT, hashlib.sha256).digest()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MasterKeys:
        raw = (os.environ if env is None else env).get(SECRET_KEY_ENV, "")
        return cls([k.strip().encode("ascii") for k in raw.split(",") if k.strip()])

    def encrypt(self, name: str, value: str) -> bytes:
        return self._multi.encrypt(orjson.dumps({"name": name, "value": value}))

    def decrypt(self, name: str, ciphertext: bytes) -> str:
        try:
            payload = orjson.loads(self._multi.decrypt(ciphertext))
        except InvalidToken:
            raise VaultLocked(f"secret {name!r} cannot be decrypted with {SECRET_KEY_ENV}") from None
        if not isinstance(payload, dict) or payload.get("name") != name or not isinstance(payload.get("value"), str):
            raise VaultError(f"secret {name!r} holds a ciphertext made for another name")
        value: str = payload["value"]
        return value

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt under the first key (the name binding is inside and is kept)."""
        return self._multi.rotate(ciphertext)

    def fingerprint(self, value: str) -> str:
        return "fp_" + hmac.new(self._fingerprint_key, value.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    name: str
    fingerprint: str
    created_at: float
    updated_at: float
    last_used_at: float | None


@dataclass(slots=True)
class _Revealed:
    """A secret as last revealed: used again until ``fresh_until``; ``read_at``: when the store last
    returned it (what ``stale_if_error_s`` counts from)."""

    fresh_until: float
    read_at: float
    ciphertext: bytes
    value: str


class Vault:
    """Set, list, delete, rotate and (at injection time only) reveal secrets."""

    def __init__(self, store: SecretStore, keys: MasterKeys | None, clock: Clock, *,
                 stale_if_error_s: float = 0.0) -> None:
        if stale_if_error_s < 0:
            raise ValueError("stale_if_error_s must not be negative")
        self._store = store
        self._keys = keys
        self._clock = clock
        self._stale_s = stale_if_error_s
        self._recent: dict[str, _Revealed] = {}
        self._unreachable_until: dict[str, float] = {}  # name -> until then, a failed read is not retried
        self.on_served_stale: Callable[[], object] | None = None  # a metric's ``inc``, once metrics exist

    def _require_keys(self) -> MasterKeys:
        if self._keys is None:
            raise VaultLocked(f"{SECRET_KEY_ENV} is not set; the vault cannot encrypt or decrypt")
        return self._keys

    async def unlock(self) -> int:
        """Check every stored secret decrypts with the configured keys; return how many exist.

        Called at start-up: an empty vault needs no key, a non-empty one refuses to start without
        the right one.
        """
        records = await self._store.list_secrets()
        if not records:
            return 0
        if self._keys is None:
            raise VaultLocked(
                f"the vault holds {len(records)} secret(s) but {SECRET_KEY_ENV} is not set; "
                "set it to the master key the secrets were stored with"
            )
        for record in records:
            self._keys.decrypt(record.name, record.ciphertext)
        return len(records)

    async def set(self, name: str, value: str) -> SecretInfo:
        """Store or replace a secret. Raises ``VaultLocked``, writing nothing, if the keys cannot
        decrypt every secret already stored (the gateway would then refuse to start)."""
        if not valid_secret_name(name):
            raise VaultError("secret names are 1-64 of a-z 0-9 _ . - (starting with a letter or digit)")
        if not value:
            raise VaultError("a secret value cannot be empty")
        keys = self._require_keys()
        _check_keys_open(keys, await self._store.list_secrets())
        now = self._clock.wall()
        existing = await self._store.get_secret(name)
        record = SecretRecord(
            name=name, ciphertext=keys.encrypt(name, value), fingerprint=keys.fingerprint(value),
            created_at=existing.created_at if existing else now, updated_at=now,
            last_used_at=existing.last_used_at if existing else None,
        )
        await self._store.put_secret(record)
        self._forget(name)
        return _info(record)

    def _forget(self, name: str) -> None:
        """A change made through this vault applies at once: nothing remembered about ``name`` stands."""
        self._recent.pop(name, None)
        self._unreachable_until.pop(name, None)

    async def list(self) -> list[SecretInfo]:
        return [_info(r) for r in await self._store.list_secrets()]

    async def delete(self, name: str) -> None:
        self._forget(name)
        if not await self._store.delete_secret(name):
            raise SecretNotFound(f"no secret named {name!r}")

    async def reveal(self, name: str) -> str:
        """The plaintext, for injection into one outgoing request. Records the use (see the module
        docstring: the store is read, and the use written, at most once per ``REVEAL_FRESH_S``)."""
        now = self._clock.monotonic()
        recent = self._recent.get(name)
        if recent is None and now < self._unreachable_until.get(name, 0.0):
            # The store failed this read less than a second ago: fail at once rather than queue
            # every call behind another wait for a store that hangs.
            raise StoreUnavailable("vault: the store did not answer a moment ago")
        if recent is not None:
            if now < recent.fresh_until:
                return recent.value
            # One reader refreshes; calls arriving meanwhile use the value they would have used a
            # moment ago, instead of every in-flight call reading (and writing) the store at once.
            # During an outage this also keeps the store from being asked more than once a second.
            recent.fresh_until = now + REVEAL_FRESH_S
        try:
            record = await self._store.get_secret(name)
        except StoreUnavailable:
            if recent is not None and now - recent.read_at <= self._stale_s:
                if self.on_served_stale is not None:
                    self.on_served_stale()
                return recent.value
            self._recent.pop(name, None)
            self._unreachable_until[name] = now + REVEAL_FRESH_S
            raise
        except BaseException:
            self._recent.pop(name, None)
            raise
        if record is None:
            self._recent.pop(name, None)
            raise SecretNotFound(f"no secret named {name!r}")
        if recent is not None and recent.ciphertext == record.ciphertext:
            value = recent.value
        else:
            value = self._require_keys().decrypt(name, record.ciphertext)
        self._recent[name] = _Revealed(now + REVEAL_FRESH_S, now, record.ciphertext, value)
        self._unreachable_until.pop(name, None)
        with contextlib.suppress(StoreUnavailable):  # the last use is bookkeeping; the value was read
            await self._store.touch_secret(name, self._clock.wall())
        return value

    async def rotate_master(self) -> int:
        """Re-encrypt every secret under the first master key; all or nothing. Returns the count."""
        keys = self._require_keys()
        records = await self._store.list_secrets()
        _check_keys_open(keys, records)  # refuse before writing anything
        rotated = {record.name: keys.rotate(record.ciphertext) for record in records}
        await self._store.replace_ciphertexts(rotated, self._clock.wall())
        self._recent.clear()
        self._unreachable_until.clear()
        return len(rotated)


def _check_keys_open(keys: MasterKeys, records: list[SecretRecord]) -> None:
    """Raise ``VaultLocked`` for a write unless ``keys`` decrypt every one of ``records``."""
    for record in records:
        try:
            keys.decrypt(record.name, record.ciphertext)
        except VaultLocked:
            raise VaultLocked(
                f"{SECRET_KEY_ENV} cannot decrypt secret {record.name!r} already in the vault, so nothing was "
                "written; use the key the vault was stored with (new,old during a rotation)"
            ) from None


def _info(record: SecretRecord) -> SecretInfo:
    return SecretInfo(record.name, record.fingerprint, record.created_at, record.updated_at, record.last_used_at)
