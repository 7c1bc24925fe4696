"""An issuer's signing keys: a JWKS fetched over HTTP and cached on the injected ``Clock``.

Why hand-written rather than PyJWT's ``PyJWKClient``: that client reads ``time`` itself, fetches with
blocking ``urllib`` and refetches on every unknown ``kid``, which turns random ``kid`` values into a
refresh storm against the issuer. Here:

* a fetch is bounded (``timeout_s``, ``max_bytes``, no redirects) and only a JSON object with a
  ``keys`` list is accepted; each entry is parsed by PyJWT's ``PyJWK`` and an entry that is not a
  usable public *signature* key (unknown ``kty``/``alg``, ``use`` other than ``sig``, ``oct``,
  RSA under 2048 bits) is skipped, never fatal;
* keys are trusted for ``ttl_s``: the first lookup after that refetches, so a key the issuer
  withdrew stops verifying within ``ttl_s`` (OpenID Connect Core 1.0 section 10.1.1: the issuer
  rotates by editing the published set, the verifier follows it). The unknown-``kid`` limit never delays
  this refresh; only a failed fetch does, and then for at most ``min(min_refresh_interval_s, ttl_s)``;
* besides that, a lookup for an unknown ``kid`` refreshes at most once per
  ``min_refresh_interval_s`` (failed attempts count too), so invented ``kid`` values cannot drive
  load at the issuer; concurrent refreshes share one fetch;
* a failing fetch keeps serving the last good keys until ``ttl_s + max_stale_s`` after the last
  good fetch, then the keys are dropped (stale-while-error with a hard limit).

``refresh_due_at`` tells a cache built on these keys (the verified-token cache) how long a verdict
may be reused: never past the next TTL refresh.

This module is the aiohttp boundary for JWKS fetches: aiohttp, JSON and key-parsing errors end
here. A caller only ever sees ``Unauthenticated`` with ``jwks_unavailable``, ``unknown_kid`` or
``algorithm_not_allowed`` (a key exists for the ``kid`` but not of the family the ``alg`` needs).

What it refuses to do: fetch any URL but the configured one (``jku``/``x5u`` never reach it),
hold symmetric or private key material, or let a key of one family verify another family's
algorithm (RFC 8725 section 3.1; RS256→HS256 confusion, CVE-2016-10555).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from portcullis.background import stop_task
from portcullis.clock import Clock
from portcullis.errors import Unauthenticated
from portcullis.identity.oidc_discovery import DiscoveryFailed

__all__ = ["JwksCache", "PublicKey", "UriSource", "VerificationKey", "key_fits", "parse_jwk"]

log = logging.getLogger("portcullis.jwks")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
_PRIVATE_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
SessionFactory = Callable[[], aiohttp.ClientSession]
# Where the key set is, asked at each fetch: a discovery issuer's ``jwks_uri`` can change with its
# metadata (``identity/oidc_discovery.py``). Raises ``DiscoveryFailed``, taken as a failed fetch.
UriSource = Callable[[], Awaitable[str]]

# RFC 7518 section 3.4: each ES* algorithm is bound to one curve.
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_KNOWN_ALGS = _RSA_ALGS | _EC_CURVES.keys() | {"EdDSA"}
_MIN_RSA_BITS = 2048  # RFC 7518 section 3.3
_JSON_TYPES = ("application/json", "application/jwk-set+json")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public signature key. ``alg`` is the JWK's own ``alg`` member, when it names one."""

    kid: str | None
    alg: str | None
    key: PublicKey
    fingerprint: bytes


def key_fits(key: VerificationKey, alg: str) -> bool:
    """Whether ``key`` may verify ``alg``: the key family matches the algorithm family, an EC key
    is on the curve the algorithm names, and a JWK that names an ``alg`` is used with that one only."""
    if key.alg is not None and key.alg != alg:
        return False
    k = key.key
    if alg in _RSA_ALGS:
        return isinstance(k, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == _EC_CURVES[alg]
    if alg == "EdDSA":
        return isinstance(k, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def parse_jwk(entry: object) -> VerificationKey | None:
    """A usable public signature key from one JWK, or ``None`` when the entry must be skipped."""
    if not isinstance(entry, dict):
        return None
    kid, alg, use, ops = entry.get("kid"), entry.get("alg"), entry.get("use"), entry.get("key_ops")
    if kid is not None and not isinstance(kid, str):
        return None
    if alg is not None and alg not in _KNOWN_ALGS:
        return None
    if use is not None and use != "sig":
        return None
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if entry.get("kty") not in ("RSA", "EC", "OKP"):
        return None  # ``oct`` never: a JWKS must not hand out HMAC secrets
    try:
        parsed: Any = PyJWK(entry).key
    except (PyJWTError, ValueError, TypeError, KeyError, NotImplementedError):
        return None
    if isinstance(parsed, _PRIVATE_KEYS):
        parsed = parsed.public_key()  # an inline JWK pasted with its private half: keep the public one
    if not isinstance(parsed, PublicKey):
        return None
    if isinstance(parsed, rsa.RSAPublicKey) and parsed.key_size < _MIN_RSA_BITS:
        return None
    spki = parsed.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    fingerprint = f"{kid}\x00{alg}\x00".encode() + spki
    return VerificationKey(kid=kid, alg=alg, key=parsed, fingerprint=fingerprint)


class _FetchFailed(Exception):
    """A JWKS fetch did not produce a key set. Internal: never leaves this module."""


class JwksCache:
    """The keys of one issuer: inline keys (loaded once) plus, if ``uri`` is set, a fetched JWKS.

    ``session_factory`` returns the shared ``aiohttp.ClientSession`` (owned and closed by the
    ``JwtVerifier``); it is called only when a fetch happens. ``on_change`` is called when the
    usable fetched key set changes (rotation, or stale keys dropped), so token caches can be cleared.
    """

    def __init__(
        self,
        uri: str | UriSource | None,
        *,
        clock: Clock,
        session_factory: SessionFactory | None = None,
        timeout_s: float = 3.0,
        ttl_s: float = 600.0,
        min_refresh_interval_s: float = 30.0,
        max_stale_s: float = 3600.0,
        max_bytes: int = 256 * 1024,
        inline_keys: Sequence[Mapping[str, Any]] = (),
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if uri is not None and session_factory is None:
            raise ValueError("a jwks uri needs a session_factory")
        self._uri = uri
        self._label = uri if isinstance(uri, str) or uri is None else "(from discovery)"
        self._clock = clock
        self._session_factory = session_factory
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._min_interval_s = min_refresh_interval_s
        self._max_stale_s = max_stale_s
        self._max_bytes = max_bytes
        self._on_change = on_change
        inline = [parse_jwk(dict(entry)) for entry in inline_keys]
        if None in inline:
            log.warning("skipped %d unusable inline JWK(s)", inline.count(None))
        self._inline: tuple[VerificationKey, ...] = tuple(k for k in inline if k is not None)
        self._remote: tuple[VerificationKey, ...] = ()
        self._fetched_at: float | None = None
        self._failed_at: float | None = None  # the last failed fetch, if none succeeded since
        self._kid_refresh_at: float | None = None  # the last refresh an unknown kid started
        # A failed fetch holds back the next one this long: retries stay bounded for the issuer,
        # and never rarer than the TTL, so withdrawals are followed as soon as it answers again.
        self._retry_s = min(min_refresh_interval_s, ttl_s)
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False

    async def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        """The key that verifies a token with this header ``kid`` and ``alg``, or ``Unauthenticated``.

        With no ``kid``, the one key that fits ``alg`` is used; several candidates are refused.
        """
        refreshed = self._is_due() and await self._refresh(by_unknown_kid=False)
        found = self._find(kid, alg)
        if (
            not refreshed
            and isinstance(found, str)
            and found in ("unknown_kid", "jwks_unavailable")
            and await self._refresh(by_unknown_kid=True)
        ):
            found = self._find(kid, alg)
        if isinstance(found, str):
            raise Unauthenticated(found)
        return found

    async def aclose(self) -> None:
        """Stop fetching and cancel a fetch in flight. The session is closed by its owner."""
        self._closed = True
        await stop_task(self._inflight)

    @property
    def refresh_due_at(self) -> float:
        """The ``Clock.monotonic()`` time at which the fetched keys are due for their TTL refresh:
        ``inf`` without a ``uri`` (inline keys never change), already past when nothing was fetched
        yet or the keys are served stale after failed fetches."""
        if self._uri is None:
            return math.inf
        if self._fetched_at is None:
            return -math.inf
        return self._fetched_at + self._ttl_s

    def _is_due(self) -> bool:
        return self._uri is not None and self._clock.monotonic() >= self.refresh_due_at

    def _find(self, kid: str | None, alg: str) -> VerificationKey | str:
        keys = self._inline + self._usable_remote()
        if not keys:
            return "jwks_unavailable"
        if kid is not None:
            named = [k for k in keys if k.kid == kid]
            if not named:
                return "unknown_kid"
            fitting = [k for k in named if key_fits(k, alg)]
            return fitting[0] if fitting else "algorithm_not_allowed"
        fitting = [k for k in keys if key_fits(k, alg)]
        # No kid: only an unambiguous key is used; several candidates are refused like an unknown kid.
        return fitting[0] if len(fitting) == 1 else "unknown_kid"

    def _usable_remote(self) -> tuple[VerificationKey, ...]:
        if self._remote and self._fetched_at is not None:
            age = self._clock.monotonic() - self._fetched_at
            if age >= self._ttl_s + self._max_stale_s:
                log.warning("JWKS %s: dropping keys %.0fs after the last good fetch", self._label, age)
                self._remote = ()
                self._notify()
        return self._remote

    async def _refresh(self, *, by_unknown_kid: bool) -> bool:
        """Join the fetch in flight, or start one unless a fetch failed within the retry delay or,
        for an unknown kid, an unknown kid already started one within the interval.
        Returns whether a fetch was joined or made (so the caller looks again)."""
        if self._uri is None or self._closed:
            return False
        task = self._inflight
        if task is None:
            now = self._clock.monotonic()
            if self._failed_at is not None and now - self._failed_at < self._retry_s:
                return False
            if by_unknown_kid:
                # Only refreshes an unknown kid asks for count here: the TTL refresh never waits
                # for this interval, or a withdrawn key would outlive the TTL.
                if self._kid_refresh_at is not None and now - self._kid_refresh_at < self._min_interval_s:
                    return False
                self._kid_refresh_at = now
            task = self._inflight = asyncio.create_task(self._fetch_and_store())
        try:
            # shield: one waiter giving up (client gone) must not cancel the fetch for the others.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise
        return True

    async def _fetch_and_store(self) -> None:
        try:
            keys = await self._fetch()
        except _FetchFailed as exc:
            self._failed_at = self._clock.monotonic()
            log.warning("JWKS %s: fetch failed (%s); serving the last good keys", self._label, exc)
            return
        finally:
            self._inflight = None
        self._fetched_at = self._clock.monotonic()
        self._failed_at = None
        if {k.fingerprint for k in keys} != {k.fingerprint for k in self._remote}:
            self._remote = keys
            self._notify()

    async def _fetch(self) -> tuple[VerificationKey, ...]:
        if self._uri is None or self._session_factory is None:
            raise _FetchFailed("no uri")
        if isinstance(self._uri, str):
            uri = self._uri
        else:
            try:
                uri = await self._uri()
            except DiscoveryFailed as exc:
                raise _FetchFailed(f"discovery: {exc}") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                session = self._session_factory()
                async with session.get(
                    uri, allow_redirects=False, headers={"Accept": "application/json"}
                ) as resp:
                    if resp.status != 200:
                        raise _FetchFailed(f"status {resp.status}")
                    media = resp.content_type
                    if media not in _JSON_TYPES and not media.endswith("+json"):
                        raise _FetchFailed(f"content type {media!r}")
                    if resp.content_length is not None and resp.content_length > self._max_bytes:
                        raise _FetchFailed("response too large")
                    body = await resp.content.read(self._max_bytes + 1)
            if len(body) > self._max_bytes:
                raise _FetchFailed("response too large")
            document = json.loads(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _FetchFailed(type(exc).__name__) from exc
        except (ValueError, RecursionError) as exc:
            raise _FetchFailed("invalid JSON") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _FetchFailed("not a JWK set")
        entries: list[object] = document["keys"]
        parsed = [parse_jwk(entry) for entry in entries]
        return tuple(k for k in parsed if k is not None)

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()
