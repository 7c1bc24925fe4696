"""JWT bearer tokens → ``Principal``: PyJWT with the algorithm pinned per issuer, time on the ``Clock``.

Why this module exists: PyJWT verifies signatures and claims well, but which key, which algorithm
and which clock are the caller's choices, and every historical JWT break lives in those choices.
The order here is fixed:

1. size (``max_token_bytes``), three strict base64url segments, header and payload JSON objects
   without duplicate members; ``crit`` and ``enc`` are refused (we understand no extension, and a
   JWE is not a bearer JWS);
2. the unverified ``iss`` only *selects* a configured issuer (unknown → refused);
3. the header ``alg`` must be in that issuer's ``algorithms`` exactly (case-sensitive, so every
   spelling of ``none`` fails: CVE-2015-9235, RFC 8725 section 3.1); HS* verifies only with the
   issuer's ``secret``, other algorithms only with a JWKS key of the matching family
   (CVE-2016-10555, CVE-2022-29217);
4. ``kid`` is only a lookup key in the issuer's JWKS; ``jku``, ``x5u``, ``jwk`` and ``x5c`` are
   never read (CVE-2018-0114);
5. ``jwt.decode`` with that one algorithm checks the signature, ``aud``, ``iss`` and required
   claims; ``exp``/``nbf``/``iat`` are checked here against ``clock.wall()`` with the leeway,
   because PyJWT reads the system clock.

PyJWT exceptions become ``Unauthenticated(reason)`` in ``_pyjwt_errors`` and nowhere else. Reasons
(audit only; clients see one opaque code): malformed_token, token_too_large, unknown_issuer,
bad_issuer (configured, but not accepted on this route), algorithm_not_allowed, unknown_kid,
bad_signature, expired, not_yet_valid, issued_in_future, bad_audience, missing_claim,
jwks_unavailable.

Verified tokens are cached by sha256 until their ``exp`` (bounded, least recently used out first),
but never past the issuer's next JWKS refresh (``JwksCache.refresh_due_at``): a hit does no key
lookup, so without that bound a token signed with a withdrawn key would pass until its ``exp``.
The cache is also cleared whenever an issuer's fetched key set changes.

The module is about 400 lines because the checks above are one sequence a reviewer should read
in one place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from portcullis.clock import Clock
from portcullis.config.model import HMAC_ALGORITHMS, JwtIssuerConfig
from portcullis.errors import ConfigError, Unauthenticated
from portcullis.identity.claims import ClaimNames, check_times, principal_from_claims
from portcullis.identity.jwks import JwksCache, PublicKey, UriSource
from portcullis.identity.oidc_discovery import DiscoveryCache
from portcullis.identity.principal import Principal

__all__ = ["JwtVerifier"]

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")
_ACCEPTED_TYP = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})  # RFC 9068 section 2.1

# Most specific first: InvalidSignatureError is a DecodeError, and every one is an InvalidTokenError.
_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.InvalidKeyError, "algorithm_not_allowed"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.PyJWTError, "malformed_token"),
)


@contextmanager
def _pyjwt_errors() -> Iterator[None]:
    """The one place PyJWT exceptions are translated."""
    try:
        yield
    except jwt.PyJWTError as exc:
        reason = next(r for kind, r in _PYJWT_REASONS if isinstance(exc, kind))
        raise Unauthenticated(reason) from exc


@dataclass(frozen=True, slots=True)
class _Issuer:
    name: str
    iss: str
    algorithms: frozenset[str]
    audiences: tuple[str, ...]
    secret: bytes | None = field(repr=False)  # never in a log line or traceback
    jwks: JwksCache | None
    require: tuple[str, ...]
    leeway_s: float
    max_token_bytes: int
    claim_names: ClaimNames


@dataclass(frozen=True, slots=True)
class _Unverified:
    header: dict[str, Any]
    payload: dict[str, Any]
    signature: bytes


@dataclass(frozen=True, slots=True)
class _Verdict:
    principal: Principal
    issuer: str
    exp: float  # wall clock: the token's own expiry
    keys_due_at: float  # monotonic: the issuer's next JWKS refresh, after which the key is looked up again


class _TokenCache:
    """sha256(token) → ``_Verdict``, bounded, least recently used evicted first."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, _Verdict] = OrderedDict()

    def get(self, digest: bytes, *, wall: float, monotonic: float) -> _Verdict | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if wall >= entry.exp or monotonic >= entry.keys_due_at:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, verdict: _Verdict) -> None:
        if self._size <= 0:
            return
        self._entries[digest] = verdict
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class JwtVerifier:
    """Verifies bearer JWTs from the configured issuers. Build once per config load; ``aclose()`` it.

    Owns one ``aiohttp.ClientSession`` for every issuer's JWKS fetches, opened on first use.
    """

    def __init__(self, issuers: Sequence[JwtIssuerConfig], *, clock: Clock, cache_size: int = 10000) -> None:
        self._clock = clock
        self._cache = _TokenCache(cache_size)
        self._session: aiohttp.ClientSession | None = None
        self._discovery: dict[str, DiscoveryCache] = {}  # by issuer name, for `discovery: true` issuers
        self._by_iss: dict[str, list[_Issuer]] = {}
        for index, cfg in enumerate(issuers):
            issuer = self._build_issuer(cfg, f"jwt_issuers[{index}]")
            self._by_iss.setdefault(cfg.issuer, []).append(issuer)
        self._max_token_bytes = max((i.max_token_bytes for group in self._by_iss.values() for i in group), default=0)

    def _build_issuer(self, cfg: JwtIssuerConfig, path: str) -> _Issuer:
        secret = cfg.secret.get_secret_value().encode() if cfg.secret is not None else None
        for alg in cfg.algorithms:
            # RFC 7518 section 3.2: an HMAC key at least as long as the hash output. Refused at build,
            # so PyJWT never has to warn or refuse it per request.
            if alg in HMAC_ALGORITHMS and secret is not None and len(secret) < int(alg[2:]) // 8:
                raise ConfigError(f"{alg} needs a secret of at least {int(alg[2:]) // 8} bytes", path=f"{path}.secret")
        jwks = None
        uri: str | UriSource | None = cfg.jwks_uri
        if cfg.discovery:
            discovery = self._discovery[cfg.name] = DiscoveryCache(
                cfg.issuer, clock=self._clock, session_factory=self.http_session, allow_http=cfg.allow_http_jwks,
                hosts=frozenset(cfg.discovery_hosts), timeout_s=cfg.jwks_timeout, ttl_s=cfg.jwks_cache_ttl,
                min_refresh_interval_s=cfg.jwks_min_refresh_interval,
            )
            uri = discovery.jwks_uri
        if uri is not None or cfg.keys:
            jwks = JwksCache(
                uri, clock=self._clock, session_factory=self.http_session, timeout_s=cfg.jwks_timeout,
                ttl_s=cfg.jwks_cache_ttl, min_refresh_interval_s=cfg.jwks_min_refresh_interval,
                inline_keys=cfg.keys, on_change=self._cache.clear,
            )
        return _Issuer(
            name=cfg.name, iss=cfg.issuer, algorithms=frozenset(cfg.algorithms), audiences=tuple(cfg.audiences),
            secret=secret, jwks=jwks, require=tuple(dict.fromkeys([*cfg.required_claims, "iss", "aud"])),
            leeway_s=cfg.leeway, max_token_bytes=cfg.max_token_bytes,
            claim_names=ClaimNames(cfg.consumer_claim, cfg.scopes_claim, cfg.roles_claim),
        )

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are cached (for metrics)."""
        return len(self._cache)

    async def verify(self, token: str, *, allowed_issuers: frozenset[str] | None = None) -> Principal:
        """The ``Principal`` a valid token names, or ``Unauthenticated(reason)``.

        ``allowed_issuers`` are issuer *names* a route accepts; ``None`` accepts every configured one.
        """
        cached = self.verify_cached(token, allowed_issuers=allowed_issuers)
        if cached is not None:
            return cached
        digest = hashlib.sha256(token.encode("ascii")).digest()
        unverified = _split(token)
        candidates = self._select_issuers(unverified.payload, allowed_issuers)
        errors: list[Unauthenticated] = []
        for issuer in candidates:  # several only when two configured issuers share one `iss`
            try:
                principal, exp = await self._verify_for(issuer, token, unverified)
            except Unauthenticated as exc:
                errors.append(exc)
                continue
            # No await between the key lookup and here, so a rotation cannot slip in between.
            keys_due_at = issuer.jwks.refresh_due_at if issuer.jwks is not None else math.inf
            if exp is not None and exp > self._clock.wall() and keys_due_at > self._clock.monotonic():
                self._cache.put(digest, _Verdict(principal, issuer.name, exp, keys_due_at))
            return principal
        raise errors[0]

    def verify_cached(self, token: str, *, allowed_issuers: frozenset[str] | None = None) -> Principal | None:
        """The principal of a token verified earlier, not yet expired and verified since the issuer's
        last JWKS refresh was due, or ``None`` (no I/O)."""
        if len(token) > self._max_token_bytes:
            raise Unauthenticated("token_too_large")
        if not token.isascii():
            raise Unauthenticated("malformed_token")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        hit = self._cache.get(digest, wall=self._clock.wall(), monotonic=self._clock.monotonic())
        if hit is not None and (allowed_issuers is None or hit.issuer in allowed_issuers):
            return hit.principal
        return None

    def discovery(self, issuer_name: str) -> DiscoveryCache | None:
        """The discovery cache of a ``discovery: true`` issuer (shared with its introspection client)."""
        return self._discovery.get(issuer_name)

    async def aclose(self) -> None:
        """Stop JWKS and discovery fetches and close the HTTP session."""
        for discovery in self._discovery.values():
            await discovery.aclose()
        for group in self._by_iss.values():
            for issuer in group:
                if issuer.jwks is not None:
                    await issuer.jwks.aclose()
        if self._session is not None:
            await self._session.close()
        self._cache.clear()

    def http_session(self) -> aiohttp.ClientSession:
        """The one session for this verifier's provider calls (JWKS, discovery, introspection)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                trust_env=False, headers={"User-Agent": "portcullis-oidc"},
                connector=aiohttp.TCPConnector(limit=16),
            )
        return self._session

    def _select_issuers(self, payload: dict[str, Any], allowed: frozenset[str] | None) -> list[_Issuer]:
        iss = payload.get("iss")
        configured = self._by_iss.get(iss) if isinstance(iss, str) else None
        if not configured:
            raise Unauthenticated("unknown_issuer")
        chosen = [i for i in configured if allowed is None or i.name in allowed]
        if not chosen:
            raise Unauthenticated("bad_issuer")
        return chosen

    async def _verify_for(self, issuer: _Issuer, token: str, unverified: _Unverified) -> tuple[Principal, float | None]:
        if len(token) > issuer.max_token_bytes:
            raise Unauthenticated("token_too_large")
        alg = unverified.header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise Unauthenticated("algorithm_not_allowed")
        if not unverified.signature:
            raise Unauthenticated("bad_signature")
        key: PublicKey | bytes
        if alg in HMAC_ALGORITHMS:
            if issuer.secret is None:
                raise Unauthenticated("algorithm_not_allowed")
            key = issuer.secret
        else:
            if issuer.jwks is None:
                raise Unauthenticated("algorithm_not_allowed")
            kid = unverified.header.get("kid")
            key = (await issuer.jwks.key_for(kid, alg)).key
        with _pyjwt_errors():
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=list(issuer.audiences), issuer=issuer.iss,
                options={
                    "require": list(issuer.require), "verify_signature": True, "verify_aud": True,
                    "verify_iss": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        exp = check_times(claims, self._clock.wall(), issuer.leeway_s)
        return principal_from_claims(claims, issuer.claim_names, method="jwt", issuer=issuer.name), exp


def _split(token: str) -> _Unverified:
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("malformed_token")
    header, payload = _json_object(parts[0]), _json_object(parts[1])
    signature = _b64url(parts[2])
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
        raise Unauthenticated("malformed_token")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
        raise Unauthenticated("malformed_token")
    if "crit" in header or "enc" in header or "b64" in header:
        raise Unauthenticated("malformed_token")
    return _Unverified(header, payload, signature)


def _b64url(segment: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): no padding, no other alphabet, canonical trailing bits."""
    if not _SEGMENT.match(segment) or len(segment) % 4 == 1:
        raise Unauthenticated("malformed_token")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated("malformed_token") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise Unauthenticated("malformed_token")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")  # RFC 7515 section 5.2: reject, never pick one
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(segment: str) -> dict[str, Any]:
    raw = _b64url(segment)
    if not raw:
        raise Unauthenticated("malformed_token")
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Unauthenticated("malformed_token") from exc
    if not isinstance(value, dict):
        raise Unauthenticated("malformed_token")
    return value
