"""Attacks on OpenID Connect through a real gateway: discovery mix-up, key and introspection
endpoints moved elsewhere, introspection answers that must not be believed, floods of random opaque
tokens, identities asserted by an untrusted peer, tokens carried from one issuer to another, algorithm
confusion through discovered keys, and step-up claims that are missing or of the wrong type. Each
file of attacks also holds the legitimate traffic that must pass.

The identity provider is a real aiohttp server on 127.0.0.1 (discovery, JWKS, introspection) whose
answers each test sets; the gateway's clock is the ManualClock the tokens are stamped with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.jwt_fixtures import AUD, NOW, public_jwk, rsa_key

from portcullis.testing import serve_app

OP_SECRET = "introspection-client-secret"
ACTIVE = {"active": True, "sub": "svc-1", "aud": AUD, "exp": int(NOW) + 600, "scope": "read"}


@dataclass
class Idp:
    """Discovery, JWKS and introspection on one origin; ``document``/``answer`` are what it serves."""

    port: int = 0
    document: dict[str, Any] = field(default_factory=dict)
    keys: list[dict[str, Any]] = field(default_factory=list)
    answer: dict[str, Any] | bytes = field(default_factory=lambda: dict(ACTIVE))
    status: int = 200
    hang: bool = False
    introspections: int = 0
    jwks_fetches: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, kid: str = "k1", key_name: str = "rsa-1", **extra: Any) -> str:
        body = {"iss": self.issuer, "aud": AUD, "sub": "user-1", "iat": int(NOW), "exp": int(NOW) + 600, **extra}
        return jwt.encode(body, rsa_key(key_name), algorithm="RS256", headers={"kid": kid})

    async def discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(self.document)

    async def jwks(self, _request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": self.keys})

    async def introspect(self, request: web.Request) -> web.Response:
        self.introspections += 1
        form = await request.post()
        assert form["token_type_hint"] == "access_token" and form["token"]
        if self.hang:
            await self.release.wait()
        body = self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode()
        return web.Response(body=body, status=self.status, content_type="application/json")


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    server = Idp(keys=[public_jwk(rsa_key("rsa-1"), "k1", alg="RS256")])
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", server.discovery)
    app.router.add_get("/jwks", server.jwks)
    app.router.add_post("/introspect", server.introspect)
    async with serve_app(app) as server.port:
        server.document = {"issuer": server.issuer, "jwks_uri": f"{server.issuer}/jwks",
                           "introspection_endpoint": f"{server.issuer}/introspect"}
        try:
            yield server
        finally:
            server.release.set()


def _yaml(idp: Idp, *, issuer_extra: str = "", shield: str = "", routes: str = "") -> str:
    return f"""
{shield}
jwt_issuers:
  - name: op
    issuer: "{idp.issuer}"
    discovery: true
    allow_http_jwks: true
    audiences: [{AUD}]
    algorithms: [RS256]
    introspection: {{client_id: gateway, client_secret: "${{OP_SECRET}}", timeout: 1s}}
{issuer_extra}
routes:
  - {{name: jwt, path: "/jwt", upstream: api, auth: {{jwt: {{issuers: [op]}}}}}}
  - {{name: opaque, path: "/opaque", upstream: api, auth: {{introspection: {{issuer: op}}}}}}
  - name: mfa
    path: "/mfa"
    upstream: api
    auth: {{jwt: {{}}}}
    authorize: {{acr_values: ["urn:example:loa:3"], amr_any: [mfa, hwk]}}
{routes}
"""


async def _gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, **kw: str) -> Gateway:
    return await make_gateway(gateway_yaml(upstream.url, _yaml(idp, **kw)), env={"OP_SECRET": OP_SECRET})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _last_decision(gw: Gateway) -> str:
    decision: str = (await gw.audit_records())[-1]["decision"]
    return decision


# --- discovery -----------------------------------------------------------------------------------

async def test_legitimate_discovery_document_verifies_tokens(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    assert (await gw.client.get("/jwt", headers=_bearer(idp.token()))).status_code == 200


async def test_discovery_document_naming_another_issuer_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    """The mix-up attack (RFC 9207 section 1; OpenID Connect Discovery 1.0 section 4.3): a document
    served at this issuer's address that claims to be another issuer is not this issuer's."""
    idp.document["issuer"] = "https://attacker.example"
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/jwt", headers=_bearer(idp.token()))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.invalid_credentials"
    assert await _last_decision(gw) == "auth_failed:jwks_unavailable"
    assert idp.jwks_fetches == 0


@pytest.mark.parametrize("issuer_suffix", ["/", "/tenant", "?x=1"], ids=["trailing-slash", "path", "query"])
async def test_discovery_issuer_must_match_character_for_character(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, issuer_suffix: str
) -> None:
    idp.document["issuer"] = idp.issuer + issuer_suffix  # OpenID Connect Discovery 1.0 section 4.3: exact
    gw = await _gateway(make_gateway, upstream, idp)
    assert (await gw.client.get("/jwt", headers=_bearer(idp.token()))).status_code == 401


async def test_jwks_uri_on_another_host_is_refused_unless_listed(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    """A document that moves key fetches to another host would let whoever serves it choose the keys."""
    idp.document["jwks_uri"] = f"http://localhost:{idp.port}/jwks"
    gw = await _gateway(make_gateway, upstream, idp)
    assert (await gw.client.get("/jwt", headers=_bearer(idp.token()))).status_code == 401
    assert await _last_decision(gw) == "auth_failed:jwks_unavailable"
    assert idp.jwks_fetches == 0
    listed = await _gateway(make_gateway, upstream, idp, issuer_extra="    discovery_hosts: [localhost]")
    assert (await listed.client.get("/jwt", headers=_bearer(idp.token()))).status_code == 200


@pytest.mark.parametrize("jwks_uri", [
    "https://user:pass@127.0.0.1/jwks",  # userinfo: RFC 3986 authority confusion
    "file:///etc/passwd",  # not http(s)
    "/jwks",  # relative
], ids=["userinfo", "file-scheme", "relative"])
async def test_jwks_uri_that_is_not_a_plain_absolute_url_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, jwks_uri: str
) -> None:
    idp.document["jwks_uri"] = jwks_uri
    gw = await _gateway(make_gateway, upstream, idp)
    assert (await gw.client.get("/jwt", headers=_bearer(idp.token()))).status_code == 401


# --- introspection ---------------------------------------------------------------------------------

async def test_active_token_for_this_audience_passes_introspection(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/opaque", headers=_bearer("opaque-" + secrets.token_urlsafe(24)))
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "svc-1"


@pytest.mark.parametrize(("answer", "reason"), [
    ({**ACTIVE, "aud": "another-api"}, "bad_audience"),  # RFC 7662 section 4: check the audience yourself
    ({**ACTIVE, "iss": "https://other-issuer.test"}, "bad_issuer"),  # token substitution between issuers
    ({"active": False}, "inactive"),
    ({**ACTIVE, "active": "true"}, "malformed_token"),  # a string is not the boolean RFC 7662 section 2.2 says
    ({**ACTIVE, "active": 1}, "malformed_token"),
    ({k: v for k, v in ACTIVE.items() if k != "active"}, "malformed_token"),
    ({**ACTIVE, "exp": int(NOW) - 3600}, "expired"),  # a provider that says active for an expired token
    ({**ACTIVE, "nbf": int(NOW) + 3600}, "not_yet_valid"),
    ({k: v for k, v in ACTIVE.items() if k != "exp"}, "missing_claim"),
    ({k: v for k, v in ACTIVE.items() if k != "aud"}, "missing_claim"),
    ({k: v for k, v in ACTIVE.items() if k != "sub"}, "missing_claim"),
    ({**ACTIVE, "scope": {"read": True}}, "malformed_token"),  # scope shape as for JWTs
    ({**ACTIVE, "sub": "svc\r\nX-Injected: 1"}, "malformed_token"),  # header injection via the consumer id
    ({**ACTIVE, "token_type": "refresh_token"}, "malformed_token"),
], ids=["other-audience", "other-issuer", "inactive", "active-string", "active-int", "active-missing",
        "expired", "not-yet-valid", "exp-missing", "aud-missing", "sub-missing", "scope-object", "sub-crlf",
        "refresh-token"])
async def test_introspection_answer_that_must_not_be_believed_is_401(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, answer: dict[str, Any], reason: str
) -> None:
    idp.answer = answer
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/opaque", headers=_bearer("opaque-" + secrets.token_urlsafe(24)))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.invalid_credentials"
    assert await _last_decision(gw) == f"auth_failed:{reason}"
    assert upstream.seen == []


@pytest.mark.parametrize(("answer", "status"), [
    (b"x" * (64 * 1024 + 1), 200),  # huge: bounded read, then refused
    (json.dumps({**ACTIVE, "pad": "x" * 70_000}).encode(), 200),  # huge but valid JSON
    (b"<html>login</html>", 200),
    (b"[true]", 200),
    (json.dumps(ACTIVE).encode(), 500),
    (json.dumps(ACTIVE).encode(), 401),  # our client authentication refused: our problem, not the caller's
], ids=["huge-garbage", "huge-json", "not-json", "json-array", "status-500", "status-401"])
async def test_introspection_failure_is_503_never_a_pass(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, answer: bytes, status: int
) -> None:
    idp.answer, idp.status = answer, status
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/opaque", headers=_bearer("opaque-" + secrets.token_urlsafe(24)))
    assert r.status_code == 503
    assert r.json()["code"] == "service.unavailable"
    assert await _last_decision(gw) == "auth_failed:idp_unavailable"
    assert upstream.seen == []


async def test_introspection_timeout_is_503(make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp) -> None:
    idp.hang = True
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/opaque", headers=_bearer("opaque-" + secrets.token_urlsafe(24)))
    assert r.status_code == 503
    assert await _last_decision(gw) == "auth_failed:idp_unavailable"


async def test_flood_of_random_opaque_tokens_costs_only_the_failed_auth_budget(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    """Credential stuffing with invented tokens (OWASP API2): each unknown token reserves a failure
    before the provider is asked, so the IP's budget bounds the introspection calls."""
    idp.answer = {"active": False}
    gw = await _gateway(make_gateway, upstream, idp, shield="shield: {failed_auth_rate: 5/minute}")
    statuses = [(await gw.client.get("/opaque", headers=_bearer(secrets.token_urlsafe(32)))).status_code
                for _ in range(40)]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert idp.introspections == 5


async def test_concurrent_requests_with_one_token_share_one_introspection(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    token = "opaque-" + secrets.token_urlsafe(24)
    responses = await asyncio.gather(*(gw.client.get("/opaque", headers=_bearer(token)) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert idp.introspections == 1


async def test_positive_answer_is_reused_no_longer_than_the_tokens_exp(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    idp.answer = {**ACTIVE, "exp": int(NOW) + 10}  # expires before the 60 s cache_ttl
    gw = await _gateway(make_gateway, upstream, idp)
    token = "opaque-" + secrets.token_urlsafe(24)
    assert (await gw.client.get("/opaque", headers=_bearer(token))).status_code == 200
    gw.clock.advance(11 + 30)  # past exp and the leeway, well within cache_ttl
    assert (await gw.client.get("/opaque", headers=_bearer(token))).status_code == 401
    assert await _last_decision(gw) == "auth_failed:expired"
    assert idp.introspections == 2


# --- tokens from one issuer on another's route, algorithm confusion ------------------------------

async def test_token_from_another_configured_issuer_is_refused_on_this_route(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    other = f"""  - name: partner
    issuer: https://partner.test
    audiences: [{AUD}]
    algorithms: [RS256]
    keys: [{json.dumps(public_jwk(rsa_key("rsa-2"), "p1", alg="RS256"))}]"""
    gw = await _gateway(make_gateway, upstream, idp, issuer_extra=other)
    partner = jwt.encode({"iss": "https://partner.test", "aud": AUD, "sub": "user-1", "exp": int(NOW) + 600},
                         rsa_key("rsa-2"), algorithm="RS256", headers={"kid": "p1"})
    assert (await gw.client.get("/jwt", headers=_bearer(partner))).status_code == 401
    assert await _last_decision(gw) == "auth_failed:bad_issuer"
    # The partner's key signing a token that claims our issuer: its kid is not in our JWKS.
    forged = idp.token(kid="p1", key_name="rsa-2")
    assert (await gw.client.get("/jwt", headers=_bearer(forged))).status_code == 401
    assert await _last_decision(gw) == "auth_failed:unknown_kid"


async def test_hs256_token_signed_with_the_discovered_public_key_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    """CVE-2016-10555 / CVE-2022-29217 through discovery: the public key fetched via the discovered
    jwks_uri used as an HMAC secret."""
    gw = await _gateway(make_gateway, upstream, idp)
    pem = rsa_key("rsa-1").public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    body = {"iss": idp.issuer, "aud": AUD, "sub": "user-1", "exp": int(NOW) + 600}
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    forged = signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert (await gw.client.get("/jwt", headers=_bearer(forged))).status_code == 401
    assert await _last_decision(gw) == "auth_failed:algorithm_not_allowed"


# --- step-up -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    {"acr": "urn:example:loa:3", "amr": ["pwd", "mfa"]},
    {"acr": "urn:example:loa:3", "amr": ["hwk"]},
], ids=["mfa", "hardware-key"])
async def test_strong_enough_authentication_passes_the_step_up_route(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, extra: dict[str, Any]
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    assert (await gw.client.get("/mfa", headers=_bearer(idp.token(**extra)))).status_code == 200


@pytest.mark.parametrize(("extra", "reason"), [
    ({"amr": ["mfa"]}, "acr"),  # acr missing
    ({"acr": "urn:example:loa:1", "amr": ["mfa"]}, "acr"),  # too weak
    ({"acr": ["urn:example:loa:3"], "amr": ["mfa"]}, "acr"),  # a list where OIDC Core section 2 says string
    ({"acr": 3, "amr": ["mfa"]}, "acr"),
    ({"acr": "urn:example:loa:3"}, "amr"),  # amr missing
    ({"acr": "urn:example:loa:3", "amr": "mfa"}, "amr"),  # a string where RFC 8176 says array
    ({"acr": "urn:example:loa:3", "amr": ["pwd"]}, "amr"),
    ({"acr": "urn:example:loa:3", "amr": [{"mfa": True}]}, "amr"),
], ids=["acr-missing", "acr-weak", "acr-list", "acr-int", "amr-missing", "amr-string", "amr-pwd-only",
        "amr-objects"])
async def test_weak_or_malformed_authentication_gets_the_rfc9470_challenge(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, extra: dict[str, Any], reason: str
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/mfa", headers=_bearer(idp.token(**extra)))
    assert r.status_code == 401
    assert r.json()["code"] == "auth.insufficient_user_authentication"
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="urn:example:loa:3"' in challenge
    assert await _last_decision(gw) == f"step_up:{reason}"
    assert upstream.seen == []


# --- identities asserted by a proxy or mesh -------------------------------------------------------

_ASSERTED = """
  - name: meshed
    path: "/meshed"
    upstream: api
    auth: {{jwt_assertion: {{issuers: [op], trusted_peers: ["{peers}"]}}}}
"""


@pytest.mark.parametrize("peers", ["10.0.0.0/8", "::1/128"], ids=["other-network", "other-family"])
async def test_asserted_identity_from_an_untrusted_peer_is_ignored_and_not_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, peers: str
) -> None:
    """Header spoofing (OWASP API2; Istio's x-forwarded-client-cert and oauth2-proxy's X-Auth-Request
    advisories): only the mesh may assert; a client sending the header itself is nobody."""
    gw = await _gateway(make_gateway, upstream, idp, routes=_ASSERTED.format(peers=peers))
    r = await gw.client.get("/meshed", headers={"X-JWT-Assertion": idp.token()})
    assert r.status_code == 401
    assert r.json()["code"] == "auth.missing_credentials"
    assert upstream.seen == []


async def test_asserted_identity_from_a_trusted_peer_is_verified_and_not_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    gw = await _gateway(make_gateway, upstream, idp, routes=_ASSERTED.format(peers="127.0.0.1/32"))
    r = await gw.client.get("/meshed", headers={"X-JWT-Assertion": idp.token(sub="mesh-user")})
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-consumer-id") == "mesh-user"
    assert upstream.seen[-1].header("x-jwt-assertion") is None
    forged = idp.token(sub="mesh-user", kid="k1", key_name="rsa-2")  # right kid, wrong key
    r = await gw.client.get("/meshed", headers={"X-JWT-Assertion": forged})
    assert r.status_code == 401
    assert await _last_decision(gw) == "auth_failed:bad_signature"


async def test_assertion_header_on_a_route_that_does_not_use_it_never_reaches_the_backend(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp
) -> None:
    gw = await _gateway(make_gateway, upstream, idp)
    r = await gw.client.get("/jwt", headers={**_bearer(idp.token()), "X-JWT-Assertion": idp.token(sub="admin")})
    assert r.status_code == 200
    assert upstream.seen[-1].header("x-jwt-assertion") is None


_RECENT = """
  - name: recent
    path: "/recent"
    upstream: api
    auth: {jwt: {}}
    authorize: {max_auth_age: 5m}
"""


@pytest.mark.parametrize(("auth_time", "status"), [
    (int(NOW) - 60, 200),  # signed in a minute ago
    (int(NOW) - 301, 401),  # a session older than the route allows
    (None, 401),  # no auth_time at all
    ("1700000000", 401),  # a string is not a NumericDate
    (True, 401),
], ids=["recent-login", "old-login", "auth-time-missing", "auth-time-string", "auth-time-bool"])
async def test_route_needing_a_recent_login_checks_auth_time(
    make_gateway: GatewayFactory, upstream: UpstreamServer, idp: Idp, auth_time: Any, status: int
) -> None:
    gw = await _gateway(make_gateway, upstream, idp, routes=_RECENT)
    extra = {} if auth_time is None else {"auth_time": auth_time}
    r = await gw.client.get("/recent", headers=_bearer(idp.token(**extra)))
    assert r.status_code == status
    if status == 401:
        assert 'error="insufficient_user_authentication"' in r.headers["www-authenticate"]
        assert "max_age=300" in r.headers["www-authenticate"]
        assert await _last_decision(gw) == "step_up:auth_time"
