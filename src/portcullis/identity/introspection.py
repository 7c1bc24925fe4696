"""Opaque access tokens → ``Principal``, by asking the issuer (OAuth 2.0 Token Introspection, RFC 7662).

Why it is shaped like this:

* **The provider's word, then ours.** Only ``"active": true`` (the JSON boolean) is accepted, and an
  active answer is checked like a JWT's claims (``identity/claims.py``): ``aud`` must name one of
  the issuer's audiences, ``iss`` (when present) must be the configured issuer, the required claims
  must be there, and ``exp``/``nbf``/``iat`` hold on the injected clock. A provider that answers
  for a token issued to another resource server is refused (``bad_audience``), not believed.
* **Never fail open.** A timeout, a refused connection, a non-200 status (our client authentication
  included), a body that is not a bounded JSON object: ``IdentityProviderUnavailable``, which
  authentication answers with 503. Only an answer that says "inactive" or fails a check is a 401.
* **Cached by hash only.** Answers are kept under ``sha256(token)``: a positive one until the
  token's ``exp`` or ``cache_ttl``, whichever comes first (revocation at the provider takes effect
  within ``cache_ttl``), a negative one for ``negative_cache_ttl``. The token itself is never stored.
* **Single flight.** Concurrent requests with the same uncached token share one introspection,
  whichever address they come from (the failed-auth shield single-flights per address; this is per
  token). Random tokens still cost one call each, so the failed-auth shield (which reserves a
  failure before this is called) is what bounds a flood of them.

Client authentication is HTTP Basic with the form-encoded id and secret (RFC 6749 section 2.3.1);
the secret is asked for at each call (from the environment or the vault), never logged.

This module is the aiohttp boundary for introspection calls.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from portcullis.clock import Clock
from portcullis.errors import IdentityProviderUnavailable, Unauthenticated
from portcullis.identity.claims import ClaimNames, audience_matches, check_times, principal_from_claims
from portcullis.identity.oidc_discovery import DiscoveryCache, DiscoveryFailed
from portcullis.identity.principal import Principal

__all__ = ["IntrospectionSettings", "TokenIntrospector"]

log = logging.getLogger("portcullis.introspection")

SecretSource = Callable[[], Awaitable[str]]
_MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    """One issuer's introspection client, as built from ``JwtIssuerConfig`` (see its descriptions)."""

    issuer_name: str
    issuer: str
    endpoint: str | None  # None: the discovery document's introspection_endpoint
    client_id: str
    audiences: tuple[str, ...]
    required_claims: tuple[str, ...]
    claim_names: ClaimNames
    leeway_s: float
    timeout_s: float
    cache_ttl_s: float
    negative_cache_ttl_s: float
    cache_size: int
    max_response_bytes: int


@dataclass(frozen=True, slots=True)
class _Answer:
    principal: Principal | None  # None: refused with ``reason``
    reason: str
    until: float  # wall clock


class _AnswerCache:
    """sha256(token) → answer, bounded, least recently used out first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, _Answer] = OrderedDict()

    def get(self, digest: bytes, now: float) -> _Answer | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry.until:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, answer: _Answer) -> None:
        if self._size <= 0:
            return
        self._entries[digest] = answer
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class TokenIntrospector:
    """Asks one issuer about opaque tokens. ``session_factory`` returns a session its owner closes."""

    def __init__(
        self,
        settings: IntrospectionSettings,
        *,
        clock: Clock,
        session_factory: Callable[[], aiohttp.ClientSession],
        client_secret: SecretSource,
        discovery: DiscoveryCache | None = None,
    ) -> None:
        if settings.endpoint is None and discovery is None:
            raise ValueError("introspection needs an endpoint or a discovery document")
        self._s = settings
        self._clock = clock
        self._session_factory = session_factory
        self._secret = client_secret
        self._discovery = discovery
        self._cache = _AnswerCache(settings.cache_size)
        self._pending: dict[bytes, asyncio.Future[_Answer]] = {}
        self.calls = 0  # introspection requests sent (for metrics and tests)

    @property
    def issuer_name(self) -> str:
        return self._s.issuer_name

    @property
    def cached_answers(self) -> int:
        return len(self._cache)

    def verify_cached(self, token: str) -> Principal | None:
        """A cached answer without I/O: the principal, ``Unauthenticated`` for a cached refusal, or None."""
        digest = _digest(token)
        answer = self._cache.get(digest, self._clock.wall())
        if answer is None:
            return None
        if answer.principal is None:
            raise Unauthenticated(answer.reason)
        return answer.principal

    async def verify(self, token: str) -> Principal:
        """The principal an active, acceptable token names; ``Unauthenticated`` or ``IdentityProviderUnavailable``."""
        digest = _digest(token)
        answer = self._cache.get(digest, self._clock.wall())
        if answer is None:
            flight = self._pending.get(digest)
            if flight is None:
                flight = asyncio.ensure_future(self._introspect(token, digest))
                self._pending[digest] = flight
                flight.add_done_callback(lambda _f: self._pending.pop(digest, None))
            answer = await asyncio.shield(flight)  # one caller leaving must not cancel the others' answer
        if answer.principal is None:
            raise Unauthenticated(answer.reason)
        return answer.principal

    async def _introspect(self, token: str, digest: bytes) -> _Answer:
        now = self._clock.wall()
        try:
            claims = await self._ask(token)
            principal, exp = self._accept(claims, now)
        except Unauthenticated as exc:
            answer = _Answer(None, exc.reason, now + self._s.negative_cache_ttl_s)
        else:
            until = now + self._s.cache_ttl_s
            answer = _Answer(principal, "", min(until, exp) if exp is not None else until)
        self._cache.put(digest, answer)
        return answer

    async def _endpoint(self) -> str:
        if self._s.endpoint is not None:
            return self._s.endpoint
        assert self._discovery is not None  # checked in __init__
        try:
            endpoint = (await self._discovery.metadata()).introspection_endpoint
        except DiscoveryFailed as exc:
            raise IdentityProviderUnavailable(f"introspection: discovery failed ({exc})") from exc
        if endpoint is None:
            raise IdentityProviderUnavailable("introspection: the discovery document names no endpoint")
        return endpoint

    async def _ask(self, token: str) -> dict[str, Any]:
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthenticated("token_too_large" if len(token) > _MAX_TOKEN_CHARS else "malformed_token")
        endpoint = await self._endpoint()
        secret = await self._secret()
        basic = base64.b64encode(f"{quote(self._s.client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()
        limit = self._s.max_response_bytes
        self.calls += 1
        try:
            async with asyncio.timeout(self._s.timeout_s):
                session = self._session_factory()
                async with session.post(
                    endpoint, data={"token": token, "token_type_hint": "access_token"}, allow_redirects=False,
                    headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
                ) as resp:
                    if resp.status != 200:
                        raise IdentityProviderUnavailable(f"introspection: status {resp.status}")
                    if resp.content_type != "application/json":
                        raise IdentityProviderUnavailable("introspection: not JSON")
                    if resp.content_length is not None and resp.content_length > limit:
                        raise IdentityProviderUnavailable("introspection: response too large")
                    body = await resp.content.read(limit + 1)
            if len(body) > limit:
                raise IdentityProviderUnavailable("introspection: response too large")
            document = json.loads(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise IdentityProviderUnavailable(f"introspection: {type(exc).__name__}") from exc
        except (ValueError, RecursionError) as exc:
            raise IdentityProviderUnavailable("introspection: invalid JSON") from exc
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable("introspection: not a JSON object")
        return document

    def _accept(self, claims: dict[str, Any], now: float) -> tuple[Principal, float | None]:
        active = claims.get("active")
        if active is not True:  # RFC 7662 section 2.2: a boolean; "true" or 1 is not an answer we trust
            raise Unauthenticated("inactive" if active is False else "malformed_token")
        for name in self._s.required_claims:
            if name not in claims:
                raise Unauthenticated("missing_claim")
        iss = claims.get("iss")
        if iss is not None and iss != self._s.issuer:
            raise Unauthenticated("bad_issuer")
        if not audience_matches(claims.get("aud"), self._s.audiences):
            raise Unauthenticated("bad_audience" if "aud" in claims else "missing_claim")
        token_type = claims.get("token_type")
        if token_type is not None and (not isinstance(token_type, str) or token_type.lower() == "refresh_token"):
            raise Unauthenticated("malformed_token")
        exp = check_times(claims, now, self._s.leeway_s)
        principal = principal_from_claims(claims, self._s.claim_names, method="introspection",
                                          issuer=self._s.issuer_name)
        return principal, exp


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
