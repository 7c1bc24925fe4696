"""``auth.mtls``: a verified client certificate as the credential, alone or with a key or token.

Where the certificate comes from, in order:
1. ``X-Forwarded-Client-Cert`` on a route with ``accept_xfcc``, when the socket peer is in
   ``xfcc.trusted_peers`` (a mesh that verified the client itself; ``identity/xfcc.py`` says why
   the last element counts). From any other peer the header is never read, so it cannot
   authenticate anything (it is also removed before forwarding, with every gateway identity header).
2. The TLS connection's peer certificate, which OpenSSL already verified against
   ``listen.tls.client_ca_file`` (chain, dates, key usage, revocation). It is parsed once per
   connection (``TlsPeer.memo``), however many requests the connection carries.

How methods combine (``auth.require``):
- ``any`` (default): a certificate that maps to a consumer authenticates the request; a request
  with no certificate, or one that maps to no rule, goes to the route's key or JWT check if it
  carries such a credential. A mapped certificate plus a key or token is ambiguous and refused
  (two credentials always are), so no request has two identities.
- ``all``: the key or token AND the certificate, both naming the same consumer. The principal is
  the key's or token's (its scopes and roles), with ``method`` ``api_key+mtls`` / ``jwt+mtls``: the
  certificate binds the bearer credential to its holder (the idea of RFC 8705's certificate-bound
  tokens), a stolen key alone is useless.

Failures answer 401 ``auth.invalid_credentials`` (no oracle: unreadable, unmapped, mismatched and
malformed all look alike) and count towards the failed-authentication shield. The audit records
the certificate's SHA-256 fingerprint (``key_id``) and subject, never the certificate.
"""

from __future__ import annotations

import dataclasses

from portcullis.config.tls import XfccConfig
from portcullis.errors import ErrorCode, Unauthenticated
from portcullis.http.client_ip import ClientAddressResolver
from portcullis.http.context import RequestContext
from portcullis.http.headers import get_all
from portcullis.identity.client_certs import CertIdentity, CertMapper, identity_from_der
from portcullis.identity.principal import Principal
from portcullis.identity.xfcc import identity_from_xfcc, parse_xfcc
from portcullis.limiting.headers import retry_after_value
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage
from portcullis.policies.stage2_authenticate.credentials import AuthenticationPolicy
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield

__all__ = ["MtlsPolicy", "XfccTrust"]

XFCC = b"x-forwarded-client-cert"
_MEMO = "identity"  # TlsPeer.memo key: the CertIdentity, or the reason it is unusable


class XfccTrust:
    """Who may send ``X-Forwarded-Client-Cert``, and how much of it is read."""

    def __init__(self, config: XfccConfig) -> None:
        self._peers = ClientAddressResolver(config.trusted_peers)
        self.max_bytes = int(config.max_bytes)
        self.max_elements = config.max_elements

    def trusts(self, peer: str | None) -> bool:
        return self._peers.is_trusted(peer)


class MtlsPolicy(PolicyBase):
    """Authenticates by client certificate; with ``other``, combined with a key or token (``require``)."""

    stage = Stage.AUTHENTICATE

    def __init__(
        self, *, mapper: CertMapper, xfcc: XfccTrust | None, other: AuthenticationPolicy | None, require_all: bool,
        failed_auth: FailedAuthShield, metrics: GatewayMetrics,
    ) -> None:
        self._mapper = mapper
        self._xfcc = xfcc
        self._other = other
        self._require_all = require_all and other is not None
        self._failed_auth = failed_auth
        self._metrics = metrics
        if other is None:
            self.name = "auth.mtls"
        else:
            self.name = other.name + ("+mtls" if self._require_all else "|mtls")

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        limited = self._failed_auth.blocked(ctx.client_ip)
        ident: CertIdentity | Unauthenticated | None
        try:
            ident = self._identity(ctx)
        except Unauthenticated as exc:
            ident = exc
        if ident is None:
            if self._other is not None and not self._require_all:
                return await self._other.on_request(ctx)
            self._metrics.auth_failures.labels("missing_credentials").inc()
            return Reject(ErrorCode.AUTH_MISSING_CREDENTIALS, "auth_failed:missing_client_cert")
        ctx.credential_presented = True
        if limited is not None:
            return self._too_many(limited.retry_after_s)
        outcome: Principal | Unauthenticated
        try:
            outcome = ident if isinstance(ident, Unauthenticated) else self._mapper.principal(ident)
        except Unauthenticated as exc:
            outcome = exc
        other = self._other
        if other is not None and not self._require_all and other.carries_credential(ctx):
            if isinstance(outcome, Principal):
                return await self._failed(ctx, "ambiguous_credentials")
            return await other.on_request(ctx)  # an unmapped certificate; the key or token decides
        if isinstance(outcome, Unauthenticated):
            return await self._failed(ctx, outcome.reason)
        if other is None or not self._require_all:
            ctx.principal = outcome
            return None
        decision = await other.on_request(ctx)
        if decision is not None:
            return decision
        bearer = ctx.principal
        if bearer is None or bearer.consumer_id != outcome.consumer_id:
            ctx.principal = None
            return await self._failed(ctx, "client_cert_consumer_mismatch")
        ctx.principal = dataclasses.replace(bearer, method=f"{bearer.method}+mtls",
                                            claims={**bearer.claims, **outcome.claims})
        return None

    def _identity(self, ctx: RequestContext) -> CertIdentity | None:
        """The presented certificate's identity (``None``: none presented); ``Unauthenticated`` if unusable."""
        xfcc = self._xfcc
        if xfcc is not None and xfcc.trusts(ctx.peer):
            values = get_all(ctx.headers, XFCC)
            if len(values) > 1:
                raise Unauthenticated("xfcc_duplicate")
            if values:
                elements = parse_xfcc(values[0], max_bytes=xfcc.max_bytes, max_elements=xfcc.max_elements)
                return identity_from_xfcc(elements[-1])
        tls = ctx.tls
        if tls is None or tls.der is None:
            return None
        memo = tls.memo.get(_MEMO)
        if memo is None:
            try:
                memo = identity_from_der(tls.der)
            except Unauthenticated as exc:
                memo = exc.reason
            tls.memo[_MEMO] = memo
        if isinstance(memo, str):
            raise Unauthenticated(memo)
        ident: CertIdentity = memo
        return ident

    async def _failed(self, ctx: RequestContext, reason: str) -> Reject:
        limited = await self._failed_auth.failed(ctx.client_ip)
        if limited is not None:
            return self._too_many(limited.retry_after_s)
        self._metrics.auth_failures.labels(reason).inc()
        return Reject(ErrorCode.AUTH_INVALID_CREDENTIALS, f"auth_failed:{reason}")

    def _too_many(self, retry_after_s: float) -> Reject:
        self._metrics.rate_limited.labels("shield.failed_auth").inc()
        return Reject(ErrorCode.LIMIT_EXCEEDED, "rate_limited:shield.failed_auth",
                      ((b"retry-after", retry_after_value(retry_after_s)),))
