"""OAuth 2.0 client credentials for an egress route: the provider's access token, got, cached and renewed.

Why the gateway holds it: the point of egress is that workflows and agents never hold provider
credentials. With ``oauth2`` on a route, the gateway authenticates to the provider's token
endpoint (RFC 6749 section 4.4) with a vault secret (HTTP Basic, section 2.3.1) or a signed client
assertion (``private_key_jwt``, RFC 7523 section 2.2 with a vault-held key) and sends the access
token it gets as ``Authorization: Bearer``.

How it behaves:

* **One request per renewal.** Concurrent calls that need a token share one token request (single
  flight): 100 calls on a cold cache cost one request to the token endpoint.
* **Renewed before expiry.** A token is used until ``expires_in`` minus ``refresh_before`` (or half
  its life, whichever is sooner), on the injected clock; a token without ``expires_in`` is kept for
  60 s.
* **Renewed once on a 401.** ``invalidate(token)`` drops the token a provider refused, only if it is
  still the current one, so a burst of 401s for one stale token causes one renewal, not one each.
* **Guarded.** The token endpoint passes the SSRF guard with its own policy (its host and port,
  the global allow-list, the route's network exceptions) and is dialled through the guarded
  resolver (resolve-then-pin), like the provider itself. No redirects are followed.
* **Never shown.** The token and the secrets are never logged, never in an exception message (errors
  leave as ``UpstreamUnavailable`` with a fixed reason, not chained), never in the audit: each
  renewal is a ``secret.read`` security event that names the vault secret only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp
import jwt

from portcullis.audit.record import AuditRecord
from portcullis.audit.security_event import security_event
from portcullis.clock import Clock
from portcullis.config.egress import SECRET_REFERENCE, EgressOAuth2Config
from portcullis.egress.pinning import GuardedResolver
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.errors import EgressDenied, StoreUnavailable, UpstreamUnavailable, VaultError
from portcullis.vault import Vault

__all__ = ["ClientCredentials"]

_NO_EXPIRY_S = 60.0
_MAX_RESPONSE_BYTES = 64 * 1024
_ASSERTION_LIFETIME_S = 60
# A token becomes a header value: visible ASCII only (RFC 6750 section 2.1 b64token, and more).
_TOKEN = re.compile(r"^[\x21-\x7e]{1,8192}\Z")


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # monotonic


class ClientCredentials:
    """One route's provider token. ``aclose()`` closes its session."""

    def __init__(
        self, route: str, config: EgressOAuth2Config, *, guard: SsrfGuard, policy: GuardPolicy, vault: Vault,
        clock: Clock, audit: Callable[[AuditRecord], None] | None = None,
    ) -> None:
        self._route = route
        self._cfg = config
        self._guard = guard
        self._policy = policy
        self._vault = vault
        self._clock = clock
        self._audit = audit
        self._scheme = urlsplit(config.token_url).scheme
        reference = config.client_secret if config.private_key_jwt is None else config.private_key_jwt.key
        match = SECRET_REFERENCE.fullmatch(reference or "")
        assert match is not None  # the config model accepts only a vault reference
        self.secret_name = match.group(1)
        self._current: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # token requests sent (for metrics and tests)

    async def token(self) -> str:
        """A current access token, renewing it first when due (one renewal for every waiter)."""
        current = self._current
        if current is not None and self._clock.monotonic() < current.renew_at:
            return current.value
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.create_task(self._renew())
            task.add_done_callback(self._landed)
        # shield: one caller leaving must not cancel the renewal the others wait for
        return (await asyncio.shield(task)).value

    def invalidate(self, value: str) -> None:
        """The provider refused ``value`` (401): drop it if it is still the current token."""
        if self._current is not None and self._current.value == value:
            self._current = None

    async def aclose(self) -> None:
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _landed(self, task: asyncio.Task[_Token]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is None:
            self._current = task.result()

    async def _renew(self) -> _Token:
        verdict = await self._guard.check(self._cfg.token_url, self._policy)
        if not verdict.allowed:
            raise EgressDenied(f"oauth2_token_url_{verdict.reason}")
        try:
            secret = await self._vault.reveal(self.secret_name)
        except (VaultError, StoreUnavailable):
            raise UpstreamUnavailable("egress_oauth2_secret_unavailable") from None
        self._record_secret_read()
        form, headers = self._request(secret)
        self.requests += 1
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._cfg.timeout):
                async with self._http().post(self._cfg.token_url, data=form, headers=headers,
                                             allow_redirects=False) as resp:
                    status = resp.status
                    body = await resp.content.read(_MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError):
            raise UpstreamUnavailable("egress_oauth2_unreachable") from None
        if status != 200 or len(body) > _MAX_RESPONSE_BYTES:
            raise UpstreamUnavailable("egress_oauth2_refused")
        return self._parse(body, started)

    def _request(self, secret: str) -> tuple[dict[str, str], dict[str, str]]:
        cfg = self._cfg
        form = {"grant_type": "client_credentials"}
        for name, value in (("scope", cfg.scope), ("audience", cfg.audience), ("resource", cfg.resource)):
            if value is not None:
                form[name] = value
        headers = {"Accept": "application/json"}
        if cfg.private_key_jwt is None:
            basic = f"{quote(cfg.client_id, safe='')}:{quote(secret, safe='')}"  # RFC 6749 section 2.3.1
            headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
            return form, headers
        now = int(self._clock.wall())
        claims = {"iss": cfg.client_id, "sub": cfg.client_id, "aud": cfg.token_url, "jti": secrets.token_urlsafe(16),
                  "iat": now, "exp": now + _ASSERTION_LIFETIME_S}
        try:
            assertion = jwt.encode(claims, secret, algorithm=cfg.private_key_jwt.alg,
                                   headers={"kid": cfg.private_key_jwt.kid} if cfg.private_key_jwt.kid else None)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise UpstreamUnavailable("egress_oauth2_key_unusable") from None
        form.update(client_id=cfg.client_id, client_assertion=assertion,
                    client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        return form, headers

    def _parse(self, body: bytes, started: float) -> _Token:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise UpstreamUnavailable("egress_oauth2_malformed") from None
        if not isinstance(document, dict):
            raise UpstreamUnavailable("egress_oauth2_malformed")
        value, kind, expires_in = document.get("access_token"), document.get("token_type"), document.get("expires_in")
        if not isinstance(value, str) or not _TOKEN.match(value):
            raise UpstreamUnavailable("egress_oauth2_malformed")
        if not isinstance(kind, str) or kind.lower() != "bearer":  # RFC 6749 section 7.1: case-insensitive
            raise UpstreamUnavailable("egress_oauth2_not_bearer")
        if expires_in is None:
            life = _NO_EXPIRY_S
        elif isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and math.isfinite(expires_in) \
                and expires_in > 0:
            life = float(expires_in)
        else:
            raise UpstreamUnavailable("egress_oauth2_malformed")
        margin = min(self._cfg.refresh_before, life / 2)
        return _Token(value, started + life - margin)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=GuardedResolver(self._guard, self._policy, scheme=self._scheme),
                                               use_dns_cache=False, limit=4),
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            )
        return self._session

    def _record_secret_read(self) -> None:
        if self._audit is not None:
            self._audit(security_event(
                clock=self._clock, action="secret.read", outcome="ok", actor=f"egress:{self._route}", role=None,
                target=self.secret_name, client_ip="gateway", request_id="-", status=0, method="POST",
                details={"purpose": "oauth2_client_credentials"},
            ))
