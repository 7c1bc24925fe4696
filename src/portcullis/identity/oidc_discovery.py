"""OpenID Connect Discovery / RFC 8414: an issuer's metadata document, fetched and cached on the ``Clock``.

Why it is checked this hard: the metadata names where keys come from (``jwks_uri``) and where tokens
are introspected or issued, so whoever controls the document controls what verifies. Here:

* the document is ``<issuer>/.well-known/openid-configuration`` and nothing else (no redirects, a
  bounded size, a JSON object, https unless ``allow_http`` for local tests);
* its ``issuer`` must equal the configured issuer *exactly*, character for character (OpenID
  Connect Discovery 1.0 section 4.3, RFC 8414 section 3.3): otherwise a document served for one
  issuer could name another's keys (the mix-up attack, RFC 9207's motivation);
* every endpoint it names must be an absolute http(s) URL without userinfo or fragment, on the
  issuer's own origin or on a host the configuration lists (``discovery_hosts``). The decision:
  providers such as Google publish keys on another host, but an operator must say so, so that a
  document altered in transit or by a misconfigured proxy cannot point key fetches anywhere;
* refresh follows the JWKS rules (``identity/jwks.py``): trusted for ``ttl_s``, then refetched; a
  failed fetch is retried at most once per ``min(min_refresh_interval_s, ttl_s)``; the last good
  document is served until ``ttl_s + max_stale_s`` after it was fetched; concurrent refreshes share
  one fetch.

This module is the aiohttp boundary for discovery: a caller only sees ``DiscoveryFailed`` (its text
goes to logs and the audit reason, never to a client).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from portcullis.background import stop_task
from portcullis.clock import Clock

__all__ = ["DiscoveryCache", "DiscoveryFailed", "ProviderMetadata", "check_endpoint"]

log = logging.getLogger("portcullis.oidc")

WELL_KNOWN = "/.well-known/openid-configuration"
_JSON_TYPES = ("application/json",)


class DiscoveryFailed(Exception):
    """No usable metadata: the fetch failed, the document is malformed, or it names another issuer."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The members of a discovery document the gateway uses, each already checked."""

    issuer: str
    jwks_uri: str | None
    introspection_endpoint: str | None
    token_endpoint: str | None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def check_endpoint(url: object, *, issuer: str, allow_http: bool, hosts: frozenset[str]) -> str:
    """``url`` if it may be used for ``issuer``: absolute http(s), no userinfo or fragment, and on
    the issuer's origin or a listed host; else ``DiscoveryFailed``."""
    if not isinstance(url, str) or len(url) > 2048:
        raise DiscoveryFailed("endpoint is not a string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DiscoveryFailed("endpoint is not a URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DiscoveryFailed("endpoint is not an absolute http(s) URL")
    if parts.scheme == "http" and not allow_http:
        raise DiscoveryFailed("endpoint is not https")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise DiscoveryFailed("endpoint carries userinfo or a fragment")
    host = parts.hostname.lower()
    if _origin(url) == _origin(issuer) or host in hosts or (port is not None and f"{host}:{port}" in hosts):
        return url
    raise DiscoveryFailed(f"endpoint host {host!r} is neither the issuer's nor listed in discovery_hosts")


class DiscoveryCache:
    """One issuer's metadata. ``session_factory`` returns the shared session (owned by the caller)."""

    def __init__(
        self,
        issuer: str,
        *,
        clock: Clock,
        session_factory: Callable[[], aiohttp.ClientSession],
        allow_http: bool = False,
        hosts: frozenset[str] = frozenset(),
        timeout_s: float = 3.0,
        ttl_s: float = 600.0,
        min_refresh_interval_s: float = 30.0,
        max_stale_s: float = 3600.0,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self.issuer = issuer
        self._url = issuer.rstrip("/") + WELL_KNOWN  # OpenID Connect Discovery 1.0 section 4
        self._clock = clock
        self._session_factory = session_factory
        self._allow_http = allow_http
        self._hosts = frozenset(h.lower() for h in hosts)
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._retry_s = min(min_refresh_interval_s, ttl_s)
        self._max_stale_s = max_stale_s
        self._max_bytes = max_bytes
        self._document: ProviderMetadata | None = None
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._last_error = "not fetched yet"
        self._inflight: asyncio.Task[None] | None = None

    async def metadata(self) -> ProviderMetadata:
        """The current metadata, refreshed when due; ``DiscoveryFailed`` when none is usable."""
        now = self._clock.monotonic()
        due = self._fetched_at is None or now >= self._fetched_at + self._ttl_s
        held_back = self._failed_at is not None and now - self._failed_at < self._retry_s
        if due and not held_back:
            await self._refresh()
        document = self._document
        if document is not None and self._fetched_at is not None:
            if self._clock.monotonic() - self._fetched_at < self._ttl_s + self._max_stale_s:
                return document
            log.warning("discovery %s: dropping metadata past its stale limit", self._url)
            self._document = None
        raise DiscoveryFailed(self._last_error)

    async def jwks_uri(self) -> str:
        """The document's ``jwks_uri`` (what ``JwksCache`` fetches for a discovery issuer)."""
        uri = (await self.metadata()).jwks_uri
        if uri is None:
            raise DiscoveryFailed("the metadata names no jwks_uri")
        return uri

    async def aclose(self) -> None:
        await stop_task(self._inflight)

    async def _refresh(self) -> None:
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.create_task(self._fetch_and_store())
        try:
            await asyncio.shield(task)  # one waiter giving up must not cancel the fetch for the others
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise

    async def _fetch_and_store(self) -> None:
        try:
            document = self._parse(await self._fetch())
        except DiscoveryFailed as exc:
            self._failed_at = self._clock.monotonic()
            self._last_error = str(exc)
            log.warning("discovery %s: %s; serving the last good metadata", self._url, exc)
            return
        finally:
            self._inflight = None
        self._document = document
        self._fetched_at = self._clock.monotonic()
        self._failed_at = None

    async def _fetch(self) -> object:
        try:
            async with asyncio.timeout(self._timeout_s):
                session = self._session_factory()
                async with session.get(self._url, allow_redirects=False,
                                       headers={"Accept": "application/json"}) as resp:
                    if resp.status != 200:
                        raise DiscoveryFailed(f"status {resp.status}")
                    if resp.content_type not in _JSON_TYPES:
                        raise DiscoveryFailed(f"content type {resp.content_type!r}")
                    if resp.content_length is not None and resp.content_length > self._max_bytes:
                        raise DiscoveryFailed("document too large")
                    body = await resp.content.read(self._max_bytes + 1)
            if len(body) > self._max_bytes:
                raise DiscoveryFailed("document too large")
            return json.loads(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DiscoveryFailed(type(exc).__name__) from exc
        except (ValueError, RecursionError) as exc:
            raise DiscoveryFailed("invalid JSON") from exc

    def _parse(self, document: object) -> ProviderMetadata:
        if not isinstance(document, dict):
            raise DiscoveryFailed("not a JSON object")
        if document.get("issuer") != self.issuer:
            # OpenID Connect Discovery 1.0 section 4.3, RFC 8414 section 3.3: exact match, or refuse.
            raise DiscoveryFailed("the document's issuer differs from the configured issuer")

        def endpoint(name: str) -> str | None:
            value = document.get(name)
            if value is None:
                return None
            return check_endpoint(value, issuer=self.issuer, allow_http=self._allow_http, hosts=self._hosts)

        return ProviderMetadata(
            issuer=self.issuer, jwks_uri=endpoint("jwks_uri"),
            introspection_endpoint=endpoint("introspection_endpoint"), token_endpoint=endpoint("token_endpoint"),
        )
