"""JWT attacks against JwtVerifier, each named after its source, and the legitimate tokens that must pass.

A real JWKS server plays the issuer; a second real server plays the attacker's key host and must
never be contacted (``jku``/``x5u``/``x5c``/``jwk`` are never followed or used).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from tests.jwt_fixtures import (
    AUD,
    HS_SECRET,
    ISS,
    NOW,
    JwksServer,
    b64u,
    claims,
    ec_key,
    ed_key,
    issuer,
    public_jwk,
    raw_token,
    rsa_key,
    serve_jwks,
    sign,
)

from portcullis.config.model import JwtIssuerConfig
from portcullis.errors import Unauthenticated
from portcullis.identity.jwt_tokens import JwtVerifier
from portcullis.testing import ManualClock

EDGE_ISS, PARTNER_ISS = "https://edge.test", "https://partner.test"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass
class World:
    verifier: JwtVerifier
    idp: JwksServer
    attacker: JwksServer
    clock: ManualClock


@pytest.fixture
async def world() -> AsyncIterator[World]:
    idp_keys = [
        public_jwk(rsa_key(), "k1", alg="RS256"),
        public_jwk(ec_key(), "e1", alg="ES256"),
        public_jwk(ec_key("p384", "P-384"), "e384"),
    ]
    async with serve_jwks(idp_keys) as idp, serve_jwks([public_jwk(rsa_key("attacker"), "attacker")]) as attacker:
        clock = ManualClock(wall=NOW)
        verifier = JwtVerifier([
            issuer(algorithms=["RS256", "ES256", "ES384"], jwks_uri=idp.uri, allow_http_jwks=True),
            issuer(name="edge", issuer=EDGE_ISS, algorithms=["EdDSA"], keys=[public_jwk(ed_key(), "ed1")]),
            issuer(name="partner", issuer=PARTNER_ISS, algorithms=["HS256"], secret=HS_SECRET),
        ], clock=clock)
        # Warm the JWKS so every case below starts from a fetched key set.
        await verifier.verify(sign(claims(), rsa_key(), "RS256", kid="k1"))
        try:
            yield World(verifier, idp, attacker, clock)
        finally:
            await verifier.aclose()
        assert attacker.hits == 0, "the attacker's key host was contacted"


# --- token builders -------------------------------------------------------------------------------

Builder = Callable[[World], str]


def hmac_token(header: dict[str, Any], body: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses PEM/SSH/JWK-looking HMAC secrets (the CVE-2022-29217 fix)."""
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(mac)}"


def ecdsa_raw(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], body: dict[str, Any]) -> str:
    """ES256 computed with any curve's key (PyJWT refuses a curve that does not match the alg)."""
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return f"{signing_input}.{b64u(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"


def rsa_public_pem() -> bytes:
    return rsa_key().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def attacker_cert_b64() -> str:
    key = rsa_key("attacker")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.test")])
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def valid(**extra: Any) -> str:
    return sign(claims(**extra), rsa_key(), "RS256", kid="k1")


def with_payload(token: str, body: dict[str, Any]) -> str:
    h, _, s = token.split(".")
    return f"{h}.{b64u(json.dumps(body).encode())}.{s}"


def attacker_signed(**headers: Any) -> str:
    return sign(claims(), rsa_key("attacker"), "RS256", **headers)


NONE_SPELLINGS = ["none", "None", "NONE", "nOnE"]

ATTACKS: list[Any] = [
    # alg none (jsonwebtoken CVE-2015-9235; RFC 8725 section 3.1): every spelling, with and without a signature.
    *[
        pytest.param(lambda w, a=alg: raw_token({"alg": a, "typ": "JWT"}, claims()), "algorithm_not_allowed",
                     id=f"CVE-2015-9235-alg-none-{alg}-unsigned")
        for alg in NONE_SPELLINGS
    ],
    *[
        pytest.param(lambda w, a=alg: raw_token({"alg": a, "kid": "k1"}, claims(), b"\x01" * 256),
                     "algorithm_not_allowed", id=f"RFC8725-3.1-alg-{alg}-with-signature")
        for alg in NONE_SPELLINGS
    ],
    # RS256 → HS256 key confusion: the public key used as the HMAC secret.
    pytest.param(lambda w: hmac_token({"alg": "HS256", "kid": "k1"}, claims(), rsa_public_pem()),
                 "algorithm_not_allowed", id="CVE-2016-10555-hs256-signed-with-rsa-public-pem"),
    pytest.param(lambda w: hmac_token({"alg": "HS256"}, claims(), rsa_public_pem()),
                 "algorithm_not_allowed", id="CVE-2016-10555-hs256-no-kid"),
    pytest.param(
        lambda w: hmac_token({"alg": "HS256", "kid": "k1"}, claims(), rsa_key().public_key().public_bytes(
            Encoding.OpenSSH, PublicFormat.OpenSSH)),
        "algorithm_not_allowed", id="CVE-2022-29217-pyjwt-hs256-with-ssh-public-key"),
    pytest.param(
        lambda w: hmac_token({"alg": "HS256", "kid": "k1"}, claims(), json.dumps(public_jwk(rsa_key(), "k1")).encode()),
        "algorithm_not_allowed", id="CVE-2022-29217-pyjwt-hs256-with-jwk-json"),
    # An issuer's own iss with another issuer's algorithm (HS256 belongs to "partner" only).
    pytest.param(lambda w: sign(claims(), HS_SECRET, "HS256"), "algorithm_not_allowed",
                 id="RFC8725-3.1-hs256-under-an-asymmetric-issuer"),
    # Embedded attacker key in the header.
    pytest.param(lambda w: attacker_signed(kid="attacker", jwk=public_jwk(rsa_key("attacker"), "attacker")),
                 "unknown_kid", id="CVE-2018-0114-embedded-jwk"),
    pytest.param(lambda w: attacker_signed(kid="k1", jwk=public_jwk(rsa_key("attacker"), "k1")),
                 "bad_signature", id="CVE-2018-0114-embedded-jwk-reusing-a-real-kid"),
    # Key URLs in the header point at the attacker's server; it must see zero requests.
    pytest.param(lambda w: attacker_signed(kid="attacker", jku=w.attacker.uri), "unknown_kid",
                 id="RFC8725-3.10-jku-attacker-server"),
    pytest.param(lambda w: attacker_signed(kid="attacker", x5u=w.attacker.url + "/cert.pem"), "unknown_kid",
                 id="RFC8725-3.10-x5u-attacker-server"),
    pytest.param(lambda w: attacker_signed(kid="k1", jku=w.attacker.uri), "bad_signature",
                 id="RFC8725-3.10-jku-with-a-real-kid"),
    pytest.param(lambda w: attacker_signed(kid="k1", x5c=[attacker_cert_b64()]), "bad_signature",
                 id="RFC7515-4.1.6-x5c-attacker-certificate"),
    # kid is only a lookup key (PortSwigger "JWT authentication bypass via kid header path traversal").
    *[
        pytest.param(lambda w, k=kid: attacker_signed(kid=k), "unknown_kid", id=f"portswigger-kid-injection-{name}")
        for name, kid in [
            ("path-traversal", "../../../../../../dev/null"),
            ("sql", "x' UNION SELECT 'secret' --"),
            ("url", "https://attacker.test/jwks.json"),
            ("empty", ""),
            ("nul-byte", "k1\x00"),
            ("command", "k1|rm -rf /"),
        ]
    ],
    pytest.param(lambda w: raw_token({"alg": "RS256", "kid": {"$ne": None}}, claims(), b"x" * 256),
                 "malformed_token", id="kid-nosql-object"),
    pytest.param(lambda w: raw_token({"alg": "RS256", "kid": 1}, claims(), b"x" * 256),
                 "malformed_token", id="kid-number"),
    # Claims (RFC 7519 section 4.1).
    pytest.param(lambda w: valid(exp=int(NOW) - 31), "expired", id="RFC7519-4.1.4-expired"),
    pytest.param(lambda w: valid(nbf=int(NOW) + 3600), "not_yet_valid", id="RFC7519-4.1.5-nbf-in-future"),
    pytest.param(lambda w: valid(iat=int(NOW) + 3600), "issued_in_future", id="RFC7519-4.1.6-iat-in-future"),
    pytest.param(lambda w: valid(iss="https://idp.example.test.attacker.test"), "unknown_issuer",
                 id="RFC7519-4.1.1-wrong-issuer"),
    pytest.param(lambda w: valid(iss=ISS + "/"), "unknown_issuer", id="RFC7519-4.1.1-issuer-trailing-slash"),
    pytest.param(lambda w: valid(iss=PARTNER_ISS), "algorithm_not_allowed",
                 id="issuer-confusion-rs256-token-claiming-the-hs256-issuer"),
    pytest.param(lambda w: valid(iss=None), "unknown_issuer", id="RFC7519-4.1.1-no-issuer"),
    pytest.param(lambda w: valid(aud="another-api"), "bad_audience", id="RFC7519-4.1.3-wrong-audience"),
    pytest.param(lambda w: valid(aud=["another-api"]), "bad_audience", id="RFC7519-4.1.3-wrong-audience-list"),
    # Signature integrity.
    pytest.param(lambda w: with_payload(valid(), claims(sub="admin")), "bad_signature",
                 id="RFC7515-5.2-tampered-payload-sub"),
    pytest.param(lambda w: with_payload(valid(), claims(scope="admin:all")), "bad_signature",
                 id="RFC7515-5.2-tampered-payload-scope"),
    pytest.param(lambda w: valid().rsplit(".", 1)[0] + ".", "bad_signature", id="RFC7515-5.2-signature-stripped"),
    pytest.param(lambda w: valid().rsplit(".", 1)[0], "malformed_token", id="RFC7515-5.2-signature-segment-removed"),
    pytest.param(lambda w: ecdsa_raw(ec_key("p384", "P-384"), {"alg": "ES256", "kid": "e384"}, claims()),
                 "algorithm_not_allowed", id="RFC7518-3.4-es256-with-p384-key"),
    pytest.param(lambda w: ecdsa_raw(ec_key("attacker-p256"), {"alg": "ES256", "kid": "e1"}, claims()),
                 "bad_signature", id="es256-signed-by-another-p256-key"),
    pytest.param(lambda w: raw_token({"alg": "ES256", "kid": "e1"}, claims(), bytes(64)), "bad_signature",
                 id="CVE-2022-21449-psychic-signature-r-s-zero"),
    pytest.param(lambda w: raw_token({"alg": "ES256"}, claims(), bytes(64)), "bad_signature",
                 id="CVE-2022-21449-psychic-signature-no-kid"),
    pytest.param(lambda w: raw_token({"alg": "ES256", "kid": "e1"}, claims(), P256_ORDER.to_bytes(32, "big") * 2),
                 "bad_signature", id="CVE-2022-21449-psychic-signature-r-s-equal-n"),
    # Shape.
    pytest.param(lambda w: valid(pad="x" * 9000), "token_too_large", id="OWASP-API4-oversized-token"),
    pytest.param(lambda w: valid() + "=", "malformed_token", id="RFC7515-2-base64-padding"),
    pytest.param(lambda w: valid().replace("-", "+").replace("_", "/") + "+/", "malformed_token",
                 id="RFC7515-2-standard-base64-alphabet"),
    pytest.param(lambda w: "eyJ$bGciOiJSUzI1NiJ9." + valid().split(".", 1)[1], "malformed_token",
                 id="RFC7515-2-non-base64-character"),
    pytest.param(lambda w: valid()[:10] + " " + valid()[10:], "malformed_token", id="whitespace-inside"),
    pytest.param(lambda w: valid()[:10] + "é" + valid()[10:], "malformed_token", id="non-ascii"),
    pytest.param(lambda w: valid() + ".extra", "malformed_token", id="four-segments"),
    pytest.param(lambda w: "a.b.c.d.e", "malformed_token", id="RFC7516-jwe-compact-five-segments"),
    pytest.param(lambda w: "..", "malformed_token", id="empty-segments"),
    pytest.param(lambda w: "", "malformed_token", id="empty-token"),
    # Header must be a JSON object (RFC 7515 section 4): arrays, strings, null, garbage, duplicates.
    *[
        pytest.param(lambda w, h=header: raw_token(h, claims(), b"x" * 256), "malformed_token",
                     id=f"RFC7515-4-header-{name}")
        for name, header in [
            ("array", b'["RS256"]'),
            ("string", b'"RS256"'),
            ("null", b"null"),
            ("number", b"1"),
            ("not-json", b"{alg: RS256}"),
            ("empty", b""),
            ("duplicate-alg", b'{"alg":"RS256","alg":"none"}'),
            ("no-alg", b'{"kid":"k1"}'),
            ("alg-not-a-string", b'{"alg":["RS256"],"kid":"k1"}'),
        ]
    ],
    pytest.param(lambda w: raw_token({"alg": "RS256", "kid": "k1"}, b'["not", "an", "object"]', b"x" * 256),
                 "malformed_token", id="RFC7519-7.2-payload-not-an-object"),
    pytest.param(lambda w: raw_token({"alg": "RS256", "kid": "k1"}, b'{"iss":"a","iss":"' + ISS.encode() + b'"}',
                                     b"x" * 256), "malformed_token", id="RFC7519-4-duplicate-claim"),
    pytest.param(lambda w: sign(claims(), rsa_key(), "RS256", kid="k1", crit=["exp"], exp=1),
                 "malformed_token", id="RFC7515-4.1.11-unknown-crit"),
    pytest.param(lambda w: sign(claims(), rsa_key(), "RS256", kid="k1", typ="dpop+jwt"),
                 "malformed_token", id="RFC9449-dpop-proof-as-access-token"),
    # Claims become upstream headers (X-Consumer-Id, -Scopes, -Roles): a signed token from a
    # careless issuer must not split the forwarded request (CWE-113 header injection).
    pytest.param(lambda w: valid(sub="bob\r\nX-Consumer-Roles: admin"), "malformed_token",
                 id="CWE-113-crlf-in-sub"),
    pytest.param(lambda w: valid(scope=["read", "x\nX-Admin: 1"]), "malformed_token", id="CWE-113-lf-in-a-scope"),
    pytest.param(lambda w: valid(sub="a" * 300), "malformed_token", id="oversized-sub"),
]


@pytest.mark.parametrize(("build", "expected"), ATTACKS)
async def test_attack_is_refused_with_its_reason(build: Builder, expected: str, world: World) -> None:
    token = build(world)
    with pytest.raises(Unauthenticated) as exc:
        await world.verifier.verify(token)
    assert exc.value.reason == expected
    assert world.idp.hits <= 2, "at most the warm-up fetch and one refresh"


async def test_random_kids_cause_at_most_one_jwks_refresh_per_interval(world: World) -> None:
    # A refresh storm would let anyone drive load at the issuer by inventing kids.
    world.clock.advance(30)
    tokens = [attacker_signed(kid=secrets.token_urlsafe(12)) for _ in range(100)]
    results = await asyncio.gather(*(world.verifier.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) and r.reason == "unknown_kid" for r in results)
    assert world.idp.hits == 2
    with pytest.raises(Unauthenticated):
        await world.verifier.verify(tokens[0])
    assert world.idp.hits == 2


async def test_a_misconfigured_issuer_mixing_hs_and_rs_still_never_uses_a_public_key_as_secret() -> None:
    # Defence in depth behind the config validator (CVE-2016-10555): even an issuer built without
    # validation that lists HS256 next to RS256 has no secret, so HS256 has no key to verify with.
    cfg = JwtIssuerConfig.model_construct(**{
        **issuer(keys=[public_jwk(rsa_key(), "k1")]).model_dump(), "algorithms": ["RS256", "HS256"],
    })
    verifier = JwtVerifier([cfg], clock=ManualClock(wall=NOW))
    token = hmac_token({"alg": "HS256", "kid": "k1"}, claims(), rsa_public_pem())
    with pytest.raises(Unauthenticated) as exc:
        await verifier.verify(token)
    assert exc.value.reason == "algorithm_not_allowed"
    await verifier.aclose()


# --- a key the issuer withdrew --------------------------------------------------------------------

WITHDRAWN = [
    # OpenID Connect Core 1.0 section 10.1.1: an issuer rotates (or drops a leaked key) by editing its
    # published JWKS. With a 5s TTL and a 30s unknown-kid interval, the withdrawal must count at 5s.
    pytest.param(False, id="OIDC-Core-10.1.1-withdrawn-key-signs-a-new-token"),
    pytest.param(True, id="OIDC-Core-10.1.1-token-cached-before-its-key-was-withdrawn"),
]


@pytest.mark.parametrize("cached_before", WITHDRAWN)
async def test_a_key_withdrawn_from_the_jwks_stops_verifying_within_the_cache_ttl(cached_before: bool) -> None:
    kept = public_jwk(rsa_key("rsa-2"), "k2", alg="RS256")
    async with serve_jwks([public_jwk(rsa_key(), "k1", alg="RS256"), kept]) as idp:
        clock = ManualClock(wall=NOW)
        verifier = JwtVerifier([issuer(
            jwks_uri=idp.uri, allow_http_jwks=True, jwks_cache_ttl="5s", jwks_min_refresh_interval="30s",
        )], clock=clock)
        genuine = sign(claims(), rsa_key("rsa-2"), "RS256", kid="k2")
        try:
            old = valid(sub="user-1")
            await verifier.verify(old if cached_before else genuine)
            idp.keys = [kept]
            clock.advance(5)
            with pytest.raises(Unauthenticated) as exc:
                await verifier.verify(old if cached_before else valid(jti="minted-after-the-withdrawal"))
            assert exc.value.reason == "unknown_kid"
            assert (await verifier.verify(genuine)).consumer_id == "user-1", "the key still published verifies"
        finally:
            await verifier.aclose()


# --- legitimate traffic that must pass --------------------------------------------------------------

LEGITIMATE: list[Any] = [
    pytest.param(lambda w: valid(), ("idp", set()), id="rs256-via-jwks"),
    pytest.param(lambda w: sign(claims(), ec_key(), "ES256", kid="e1"), ("idp", set()), id="es256-via-jwks"),
    pytest.param(lambda w: sign(claims(), ec_key("p384", "P-384"), "ES384", kid="e384"), ("idp", set()),
                 id="es384-via-jwks-key-without-alg"),
    pytest.param(lambda w: sign(claims(iss=EDGE_ISS), ed_key(), "EdDSA", kid="ed1"), ("edge", set()),
                 id="eddsa-inline-key"),
    pytest.param(lambda w: sign(claims(iss=EDGE_ISS), ed_key(), "EdDSA"), ("edge", set()),
                 id="eddsa-inline-single-key-without-kid"),
    pytest.param(lambda w: sign(claims(iss=PARTNER_ISS), HS_SECRET, "HS256"), ("partner", set()),
                 id="hs256-secret-issuer"),
    pytest.param(lambda w: valid(aud=["someone-else", AUD]), ("idp", set()), id="aud-as-list"),
    pytest.param(lambda w: valid(exp=int(NOW) - 10, iat=int(NOW) + 10, nbf=int(NOW) + 10), ("idp", set()),
                 id="clock-skew-within-leeway"),
    pytest.param(lambda w: valid(scope="orders:read orders:write"), ("idp", {"orders:read", "orders:write"}),
                 id="scope-string"),
    pytest.param(lambda w: valid(scp=["orders:read", "orders:write"]), ("idp", {"orders:read", "orders:write"}),
                 id="scp-list"),
    pytest.param(lambda w: valid(), ("idp", set()), id="typ-jwt"),
    pytest.param(lambda w: sign(claims(), rsa_key(), "RS256", kid="k1", typ="at+jwt"), ("idp", set()),
                 id="RFC9068-typ-at-jwt"),
    pytest.param(lambda w: sign(claims(), rsa_key(), "RS256", kid="k1", jku=w.attacker.uri), ("idp", set()),
                 id="jku-header-on-a-genuine-token-is-ignored-not-fetched"),
]


@pytest.mark.parametrize(("build", "expected"), LEGITIMATE)
async def test_legitimate_token_passes(build: Builder, expected: tuple[str, set[str]], world: World) -> None:
    principal = await world.verifier.verify(build(world))
    assert (principal.issuer, principal.scopes) == (expected[0], frozenset(expected[1]))
    assert principal.consumer_id == "user-1"
    assert principal.method == "jwt"


def test_pyjwt_alone_would_refuse_a_pem_hmac_secret() -> None:
    # Why hmac_token() signs by hand: PyJWT's own guard (the CVE-2022-29217 fix) stays in force.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(claims(), rsa_public_pem(), algorithm="HS256")
