"""Authentication: API keys, JWT bearer tokens and signed requests, behind a cheap per-IP pre-auth shield.

Why the shield lives here: credential stuffing and key guessing are stopped by counting per client
IP *before* any lookup. A request with no credential spends from ``unauthenticated_rate``; a
client IP that has spent ``failed_auth_rate`` gets 429 before its next key is even looked up, so
10,000 guesses cost a few store queries, not 10,000. How failures are counted without taxing
valid credentials is in ``auth_shield.py``.

No oracles: an unknown key, a wrong secret, a bad signature and a disallowed algorithm all answer
401 ``auth.invalid_credentials``; the reason goes to the audit. A missing credential answers 401
``auth.missing_credentials`` with a ``WWW-Authenticate`` challenge, because that tells an honest
client what to do. Two different credentials in one request are refused as ambiguous.

Key store outages: a key the verifier may serve stale (see ``identity/api_keys.py``) is allowed
with the decision ``allowed:key_served_stale`` and counted in ``portcullis_keys_served_stale_total``;
any other key answers 503 ``service.unavailable``, never 401, and never fails open.

Opaque bearer tokens (on a route with ``introspection``) are asked about at the issuer
(``identity/introspection.py``) through the same shield: an unknown token reserves a failure before
the network call, so a flood of random tokens costs at most the failed-auth budget in calls. A
provider that does not answer usably is a 503 (``auth_failed:idp_unavailable``), never a pass.

An identity asserted by a trusted mesh or proxy (``jwt_assertion``) is a JWT in a configured header,
believed only when the *socket peer* is trusted (``trusted_peers``, else ``trusted_proxies``); from
any other peer the header is ignored, and it is removed before forwarding in every case, so a
backend never sees a client's own copy.

Signed requests (``auth.signature``, RFC 9421): a request with ``Signature-Input`` or ``Signature``
is a signature credential, verified by ``identity/signatures.py`` over the whole body (a signed route
is always buffered, so the body is complete here, before anything reaches the upstream). It goes
through the failed-auth shield like any credential, but never shares a verification with another
request: each one spends its own nonce, so an identical second request is a replay and is refused.
Webhooks signed in the common ``t=…,v1=…`` scheme (``auth.webhook_signature``) take the same
path, checked by ``identity/webhook_signatures.py``; each delivery is accepted once.
A missing signature on a signature-only route answers ``auth.missing_credentials`` with an
``Accept-Signature`` field (RFC 9421 section 5.1) naming what to sign.

Credentials are not forwarded: an API key header (or ``Authorization: Bearer pcl_…``) is removed
before the request goes upstream (Kong's ``hide_credentials``); a JWT is forwarded, since backends
commonly read its claims.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from portcullis.config.model import ApiKeyAuthConfig, ShieldConfig, SignatureAuthConfig, WebhookSignatureAuthConfig
from portcullis.errors import ErrorCode, IdentityProviderUnavailable, StoreUnavailable, Unauthenticated
from portcullis.http.client_ip import ClientAddressResolver
from portcullis.http.context import RequestContext
from portcullis.http.headers import get_all
from portcullis.identity.api_keys import ApiKeyVerifier
from portcullis.identity.introspection import TokenIntrospector
from portcullis.identity.jwt_tokens import JwtVerifier
from portcullis.identity.principal import Principal
from portcullis.identity.signatures import SignatureRules, SignatureVerifier
from portcullis.identity.webhook_signatures import WebhookRules, WebhookVerifier
from portcullis.limiting.headers import retry_after_value
from portcullis.limiting.limiter import LimitRule, MultiLimiter
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage
from portcullis.policies.stage2_authenticate.failed_auth_shield import FailedAuthShield, Limited, Outcome
from portcullis.policies.stage5_validate.body import carries_body
from portcullis.signing.message import RequestFacts

__all__ = ["AuthenticationPolicy", "JwtAssertion"]

_API_KEY_PREFIX = "pcl_"


@dataclass(frozen=True, slots=True)
class JwtAssertion:
    """Where a trusted peer asserts the caller's identity, whose keys verify it, and which peers are trusted."""

    header: bytes
    issuers: frozenset[str] | None
    trusted_peers: ClientAddressResolver


def _looks_like_jwt(token: str) -> bool:
    """Three dot-separated segments, the first a JSON object in base64url (``eyJ`` is ``{"``)."""
    return token.count(".") == 2 and token.startswith("eyJ")


class AuthenticationPolicy(PolicyBase):
    """Accepts the methods a route allows; sets ``ctx.principal`` or refuses."""

    stage = Stage.AUTHENTICATE

    def __init__(
        self,
        *,
        api_key: ApiKeyAuthConfig | None,
        key_verifier: ApiKeyVerifier | None,
        jwt_verifier: JwtVerifier | None,
        accept_jwt: bool,
        jwt_issuers: frozenset[str] | None,
        shield: ShieldConfig,
        failed_auth: FailedAuthShield,
        limiter: MultiLimiter,
        metrics: GatewayMetrics,
        signature: SignatureAuthConfig | None = None,
        signature_verifier: SignatureVerifier | None = None,
        webhook: WebhookSignatureAuthConfig | None = None,
        webhook_verifier: WebhookVerifier | None = None,
        route: str = "",
        introspector: TokenIntrospector | None = None,
        accept_introspection: bool = False,
        jwt_assertion: JwtAssertion | None = None,
    ) -> None:
        """``accept_jwt`` / ``accept_introspection`` say what the route accepts even where no verifier
        is built (``portcullis check`` plans chains without network clients)."""
        self._api_key = api_key
        self._introspector = introspector
        self._assertion = jwt_assertion
        self._key_headers: tuple[bytes, ...] = tuple(h.encode() for h in api_key.headers) if api_key else ()
        self._scanned = frozenset({*self._key_headers, b"authorization"})  # one pass over the headers reads them all
        self._key_verifier = key_verifier
        self._jwt_verifier = jwt_verifier
        self._jwt_issuers = jwt_issuers
        self._limiter = limiter
        self._failed_auth = failed_auth
        self._metrics = metrics
        self._accept_jwt = accept_jwt
        self._signature_verifier = signature_verifier
        self._signature_rules = None if signature is None else SignatureRules(
            algorithms=frozenset(signature.algorithms),
            components=tuple(signature.components) if signature.components is not None else None,
            skew_s=signature.skew, max_header_bytes=signature.max_header_bytes,
        )
        self._webhook_verifier = webhook_verifier
        self._webhook_header = webhook.header.encode() if webhook is not None else b""
        self._webhook_rules = None if webhook is None else WebhookRules(
            route=route, consumer=webhook.consumer, secrets=tuple(webhook.secrets), tolerance_s=webhook.tolerance)
        methods = [m for m, on in (("api_key", api_key is not None), ("jwt", accept_jwt),
                                   ("introspection", accept_introspection),
                                   ("jwt_assertion", jwt_assertion is not None),
                                   ("signature", signature is not None), ("webhook_signature", webhook is not None))
                   if on]
        self.name = "auth." + "|".join(methods)
        self._no_credential_rule = (
            LimitRule(name="shield.unauthenticated", windows=(shield.unauthenticated_rate,), burst=None)
            if shield.unauthenticated_rate else None
        )
        challenges = []
        if api_key is not None:
            challenges.append(f'ApiKey realm="portcullis", header="{api_key.headers[0]}"')
        if accept_jwt or accept_introspection:
            challenges.append('Bearer realm="portcullis"')
        accept: tuple[tuple[bytes, bytes], ...] = ()
        if signature is not None:
            wanted = " ".join(f'"{c}"' for c in signature.components or ("@method", "@authority", "@path"))
            accept = ((b"accept-signature", f"sig1=({wanted});created;keyid;nonce".encode()),)
        www = ((b"www-authenticate", ", ".join(challenges).encode()),) if challenges else ()
        self._missing_challenge = www + accept
        invalid = [c + ', error="invalid_token"' if c.startswith("Bearer") else c for c in challenges]
        self._invalid_challenge = ((b"www-authenticate", ", ".join(invalid).encode()),) if invalid else ()

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        try:
            kind, credential = self._extract(ctx)
        except Unauthenticated as exc:
            limited = await self._failed_auth.failed(ctx.client_ip)
            if limited is not None:
                return self._too_many(ctx, "shield.failed_auth", limited.retry_after_s)
            return self._failed(exc.reason)
        if kind is None:
            if self._no_credential_rule is not None:
                decision = await self._limiter.consume([(self._no_credential_rule, ctx.client_ip)])
                if not decision.allowed:
                    return self._too_many(ctx, "shield.unauthenticated", decision.retry_after_s)
            self._metrics.auth_failures.labels("missing_credentials").inc()
            return Reject(ErrorCode.AUTH_MISSING_CREDENTIALS, "auth_failed:missing_credentials",
                          self._missing_challenge)
        ctx.credential_presented = True
        ip = ctx.client_ip
        limited = self._failed_auth.blocked(ip)
        if limited is not None:
            return self._too_many(ctx, "shield.failed_auth", limited.retry_after_s)
        outcome: Outcome | None
        if kind == "signature":
            outcome = await self._failed_auth.verify_each(ip, lambda: self._verify_signature(ctx))
            return self._settle(ctx, outcome)
        if kind == "webhook_signature":
            outcome = await self._failed_auth.verify_each(ip, lambda: self._verify_webhook(ctx))
            return self._settle(ctx, outcome)
        try:
            outcome = self._verify_cached(kind, credential)
        except Unauthenticated as exc:
            outcome = exc
        if outcome is None:
            outcome = await self._failed_auth.verify(ip, credential, lambda: self._verify(kind, credential))
        elif isinstance(outcome, Unauthenticated):
            limited = await self._failed_auth.failed(ip)
            if limited is not None:
                outcome = limited
        return self._settle(ctx, outcome)

    def _settle(self, ctx: RequestContext, outcome: Outcome) -> Decision | None:
        if isinstance(outcome, Principal):
            ctx.principal = outcome
            if outcome.served_stale:
                # The key store is down and this key was valid when last read (stale-if-error):
                # allowed, and said so in the audit record and the metric.
                ctx.decision = "allowed:key_served_stale"
                self._metrics.keys_served_stale.inc()
            return None
        if isinstance(outcome, Limited):
            return self._too_many(ctx, "shield.failed_auth", outcome.retry_after_s)
        if isinstance(outcome, IdentityProviderUnavailable):
            # The provider cannot tell us whether the token is active: 503, never a guess either way.
            return Reject(ErrorCode.SERVICE_UNAVAILABLE, "auth_failed:idp_unavailable")
        if isinstance(outcome, StoreUnavailable):
            # Auth never fails open: the store is down, so no one gets in (503, not 401).
            return Reject(ErrorCode.SERVICE_UNAVAILABLE, "auth_failed:store_unavailable")
        return self._failed(outcome.reason)

    def _extract(self, ctx: RequestContext) -> tuple[str | None, str]:
        found: list[tuple[str, str]] = []
        present: dict[bytes, list[bytes]] = {}
        scanned = self._scanned
        for name, value in ctx.headers:
            if name in scanned:
                present.setdefault(name, []).append(value)
        for header in self._key_headers:
            values = present.get(header)
            if values is None:
                continue
            if len(values) > 1:
                raise Unauthenticated("duplicate_credential_header")
            found.append(("api_key", values[0].decode("latin-1").strip()))
            ctx.strip_request_headers.add(header)
        authorization = present.get(b"authorization", ())
        if len(authorization) > 1:
            raise Unauthenticated("duplicate_authorization")
        if authorization:
            scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                if token.startswith(_API_KEY_PREFIX):
                    if self._api_key is not None:
                        found.append(("api_key", token))
                        ctx.strip_request_headers.add(b"authorization")
                    else:
                        raise Unauthenticated("method_not_allowed")
                elif self._accept_jwt and (self._introspector is None or _looks_like_jwt(token)):
                    found.append(("jwt", token))
                elif self._introspector is not None:
                    found.append(("opaque", token))
        if self._assertion is not None:
            found.extend(self._take_assertion(ctx, self._assertion))
        if self._signature_rules is not None and (
            get_all(ctx.headers, b"signature-input") or get_all(ctx.headers, b"signature")
        ):
            found.append(("signature", ""))
        if self._webhook_rules is not None and get_all(ctx.headers, self._webhook_header):
            found.append(("webhook_signature", ""))
        if self._api_key is not None and self._api_key.allow_query_credentials and ctx.query:
            found.extend(self._take_query_key(ctx, self._api_key.query_param))
        if len(found) > 1:
            raise Unauthenticated("ambiguous_credentials")
        if not found:
            return None, ""
        return found[0]

    def carries_credential(self, ctx: RequestContext) -> bool:
        """Whether the request holds a credential this policy reads (nothing verified, nothing changed).

        Used by ``auth.mtls`` on a route that also takes keys or tokens: a mapped client certificate
        plus another credential is ambiguous, as two credentials always are here."""
        if any(get_all(ctx.headers, header) for header in self._key_headers):
            return True
        for value in get_all(ctx.headers, b"authorization"):
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return True
        if self._assertion is not None and get_all(ctx.headers, self._assertion.header) \
                and self._assertion.trusted_peers.is_trusted(ctx.peer):
            return True
        if self._api_key is not None and self._api_key.allow_query_credentials and ctx.query:
            param = self._api_key.query_param
            return any(k == param for k, _ in parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True))
        return False

    @staticmethod
    def _take_assertion(ctx: RequestContext, assertion: JwtAssertion) -> Sequence[tuple[str, str]]:
        values = get_all(ctx.headers, assertion.header)
        ctx.strip_request_headers.add(assertion.header)  # the backend never sees a client's own copy
        if not values or not assertion.trusted_peers.is_trusted(ctx.peer):
            return ()  # from an untrusted peer the header is nobody's word: ignored
        if len(values) > 1:
            raise Unauthenticated("duplicate_assertion_header")
        return [("assertion", values[0].decode("latin-1").strip())]

    @staticmethod
    def _take_query_key(ctx: RequestContext, param: str) -> Sequence[tuple[str, str]]:
        pairs = parse_qsl(ctx.query.decode("latin-1"), keep_blank_values=True)
        keys = [v for k, v in pairs if k == param]
        if not keys:
            return ()
        ctx.query = urlencode([(k, v) for k, v in pairs if k != param]).encode("latin-1")
        return [("api_key", k) for k in keys]

    async def _verify_signature(self, ctx: RequestContext) -> Principal:
        if self._signature_verifier is None or self._signature_rules is None:
            raise Unauthenticated("method_not_allowed")
        body = await ctx.read_body() if carries_body(ctx) else b""
        facts = RequestFacts(
            method=ctx.method, scheme=ctx.scheme, authority=RequestFacts.normal_authority(ctx.scheme, ctx.host or ""),
            path=ctx.path, query=ctx.query.decode("latin-1") or None, headers=ctx.headers,
        )
        return await self._signature_verifier.verify(facts, body, self._signature_rules)

    async def _verify_webhook(self, ctx: RequestContext) -> Principal:
        if self._webhook_verifier is None or self._webhook_rules is None:
            raise Unauthenticated("method_not_allowed")
        body = await ctx.read_body() if carries_body(ctx) else b""
        return await self._webhook_verifier.verify(get_all(ctx.headers, self._webhook_header), body,
                                                   self._webhook_rules)

    def _verify_cached(self, kind: str, credential: str) -> Principal | None:
        """The answer without I/O when the verifier already knows the credential, else ``None``."""
        if kind == "api_key":
            if self._key_verifier is None:
                raise Unauthenticated("method_not_allowed")
            return self._key_verifier.verify_cached(credential)
        if kind == "opaque":
            if self._introspector is None:
                raise Unauthenticated("method_not_allowed")
            return self._introspector.verify_cached(credential)
        if kind == "assertion":
            cached = self._assertion_verifier().verify_cached(credential, allowed_issuers=self._assertion_issuers())
            return self._asserted(cached) if cached is not None else None
        if self._jwt_verifier is None:
            raise Unauthenticated("method_not_allowed")
        return self._jwt_verifier.verify_cached(credential, allowed_issuers=self._jwt_issuers)

    async def _verify(self, kind: str, credential: str) -> Principal:
        if kind == "api_key":
            if self._key_verifier is None:
                raise Unauthenticated("method_not_allowed")
            return await self._key_verifier.verify(credential)
        if kind == "opaque":
            if self._introspector is None:
                raise Unauthenticated("method_not_allowed")
            return await self._introspector.verify(credential)
        if kind == "assertion":
            verifier = self._assertion_verifier()
            return self._asserted(await verifier.verify(credential, allowed_issuers=self._assertion_issuers()))
        if self._jwt_verifier is None:
            raise Unauthenticated("method_not_allowed")
        return await self._jwt_verifier.verify(credential, allowed_issuers=self._jwt_issuers)

    def _assertion_verifier(self) -> JwtVerifier:
        if self._jwt_verifier is None or self._assertion is None:
            raise Unauthenticated("method_not_allowed")
        return self._jwt_verifier

    def _assertion_issuers(self) -> frozenset[str] | None:
        return self._assertion.issuers if self._assertion is not None else frozenset()

    @staticmethod
    def _asserted(principal: Principal) -> Principal:
        """The same identity, marked as asserted by a peer (audit and rules can tell it apart)."""
        return dataclasses.replace(principal, method="jwt_assertion")

    def _failed(self, reason: str) -> Reject:
        self._metrics.auth_failures.labels(reason.partition(":")[0]).inc()  # the label set stays bounded
        return Reject(ErrorCode.AUTH_INVALID_CREDENTIALS, f"auth_failed:{reason}", self._invalid_challenge)

    def _too_many(self, ctx: RequestContext, limit: str, retry_after_s: float) -> Reject:
        self._metrics.rate_limited.labels(limit).inc()
        return Reject(ErrorCode.LIMIT_EXCEEDED, f"rate_limited:{limit}",
                      ((b"retry-after", retry_after_value(retry_after_s)),))
