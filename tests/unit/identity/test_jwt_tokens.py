"""JwtVerifier: claims → Principal, time on the clock, issuer selection, the verified-token cache."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from pydantic import ValidationError
from tests.jwt_fixtures import (
    AUD,
    HS_SECRET,
    ISS,
    NOW,
    JwksServer,
    b64u,
    claims,
    issuer,
    public_jwk,
    rsa_key,
    serve_jwks,
    sign,
)

from portcullis.config.model import JwtIssuerConfig
from portcullis.errors import Unauthenticated
from portcullis.identity.jwt_tokens import JwtVerifier
from portcullis.testing import ManualClock


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    async with serve_jwks([public_jwk(rsa_key(), "k1", alg="RS256")]) as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=NOW)


VerifierFactory = Callable[..., JwtVerifier]


@pytest.fixture
async def make_verifier(idp: JwksServer, clock: ManualClock) -> AsyncIterator[VerifierFactory]:
    made: list[JwtVerifier] = []

    def factory(*issuers: JwtIssuerConfig, cache_size: int = 10000) -> JwtVerifier:
        configs = issuers or (issuer(jwks_uri=idp.uri, allow_http_jwks=True),)
        verifier = JwtVerifier(list(configs), clock=clock, cache_size=cache_size)
        made.append(verifier)
        return verifier

    yield factory
    for verifier in made:
        await verifier.aclose()


def rs256(**extra: Any) -> str:
    return sign(claims(**extra), rsa_key(), "RS256", kid="k1")


def hs256(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> str:
    signing_input = f"{b64u(header)}.{b64u(payload)}"
    mac = hmac.new(HS_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(mac)}"


async def reason(verifier: JwtVerifier, token: str, **kwargs: Any) -> str:
    with pytest.raises(Unauthenticated) as exc:
        await verifier.verify(token, **kwargs)
    return exc.value.reason


async def test_valid_token_becomes_a_jwt_principal(make_verifier: VerifierFactory) -> None:
    verifier = make_verifier()
    principal = await verifier.verify(rs256(scope="orders:read orders:write", roles=["admin"]))
    assert principal.method == "jwt"
    assert principal.consumer_id == "user-1"
    assert principal.scopes == frozenset({"orders:read", "orders:write"})
    assert principal.roles == frozenset({"admin"})
    assert principal.issuer == "idp"
    assert principal.claims["iss"] == ISS


@pytest.mark.parametrize(
    ("extra", "scopes"),
    [
        pytest.param({"scope": "a b  c"}, {"a", "b", "c"}, id="scope-space-string"),
        pytest.param({"scope": ["a", "b"]}, {"a", "b"}, id="scope-list"),
        pytest.param({"scp": ["a", "b"]}, {"a", "b"}, id="scp-list-azure"),
        pytest.param({"scp": "a b"}, {"a", "b"}, id="scp-string"),
        pytest.param({"scope": "a", "scp": ["b"]}, {"a"}, id="scope-wins-over-scp"),
        pytest.param({}, set(), id="no-scopes"),
    ],
)
async def test_scopes_map_from_scope_or_scp(
    extra: dict[str, Any], scopes: set[str], make_verifier: VerifierFactory
) -> None:
    principal = await make_verifier().verify(rs256(**extra))
    assert principal.scopes == frozenset(scopes)


async def test_configured_claim_names_are_used(make_verifier: VerifierFactory, idp: JwksServer) -> None:
    verifier = make_verifier(issuer(
        jwks_uri=idp.uri, allow_http_jwks=True, consumer_claim="client_id", scopes_claim="perms", roles_claim="groups",
    ))
    principal = await verifier.verify(rs256(client_id="svc-9", perms=["x"], groups="ops dev"))
    assert principal.consumer_id == "svc-9"
    assert principal.scopes == frozenset({"x"})
    assert principal.roles == frozenset({"ops", "dev"})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"sub": None}, "missing_claim", id="no-consumer-claim"),
        pytest.param({"sub": ""}, "missing_claim", id="empty-consumer-claim"),
        pytest.param({"exp": None}, "missing_claim", id="no-exp-required-by-default"),
        pytest.param({"aud": None}, "missing_claim", id="no-aud"),
        pytest.param({"sub": 42}, "malformed_token", id="consumer-claim-not-a-string"),
        pytest.param({"scope": {"a": 1}}, "malformed_token", id="scope-an-object"),
        pytest.param({"roles": [1, 2]}, "malformed_token", id="roles-not-strings"),
        pytest.param({"exp": "tomorrow"}, "malformed_token", id="exp-not-a-number"),
        pytest.param({"exp": True}, "malformed_token", id="exp-a-boolean"),
        pytest.param({"exp": 10**30}, "malformed_token", id="exp-beyond-year-9999"),
        pytest.param({"aud": ["other", "another"]}, "bad_audience", id="aud-list-without-ours"),
    ],
)
async def test_bad_claims_are_refused_with_their_reason(
    extra: dict[str, Any], expected: str, make_verifier: VerifierFactory
) -> None:
    assert await reason(make_verifier(), rs256(**extra)) == expected


async def test_aud_list_with_one_match_passes(make_verifier: VerifierFactory) -> None:
    principal = await make_verifier().verify(rs256(aud=["other", AUD]))
    assert principal.consumer_id == "user-1"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"exp": int(NOW) - 29}, None, id="exp-within-leeway"),
        pytest.param({"exp": int(NOW) - 30}, "expired", id="exp-at-leeway"),
        pytest.param({"nbf": int(NOW) + 30}, None, id="nbf-within-leeway"),
        pytest.param({"nbf": int(NOW) + 31}, "not_yet_valid", id="nbf-beyond-leeway"),
        pytest.param({"iat": int(NOW) + 30}, None, id="iat-within-leeway"),
        pytest.param({"iat": int(NOW) + 31}, "issued_in_future", id="iat-beyond-leeway"),
    ],
)
async def test_times_are_checked_on_the_injected_clock_with_leeway(
    extra: dict[str, Any], expected: str | None, make_verifier: VerifierFactory
) -> None:
    # NOW is years away from time.time(): passing here proves PyJWT's own clock is not consulted.
    assert abs(time.time() - NOW) > 86400
    verifier = make_verifier()
    if expected is None:
        assert (await verifier.verify(rs256(**extra))).consumer_id == "user-1"
    else:
        assert await reason(verifier, rs256(**extra)) == expected


async def test_non_finite_exp_is_malformed(make_verifier: VerifierFactory) -> None:
    verifier = make_verifier(issuer(algorithms=["HS256"], secret=HS_SECRET))
    body = json.dumps(claims()).replace(f'"exp": {int(NOW) + 600}', '"exp": Infinity').encode()
    assert b"Infinity" in body
    assert await reason(verifier, hs256(body)) == "malformed_token"


async def test_unknown_issuer_is_refused(make_verifier: VerifierFactory) -> None:
    assert await reason(make_verifier(), rs256(iss="https://elsewhere.test")) == "unknown_issuer"


async def test_issuer_not_accepted_on_the_route_is_refused(make_verifier: VerifierFactory, idp: JwksServer) -> None:
    verifier = make_verifier(
        issuer(jwks_uri=idp.uri, allow_http_jwks=True),
        issuer(name="partner", issuer="https://partner.test", algorithms=["HS256"], secret=HS_SECRET),
    )
    token = rs256()
    assert (await verifier.verify(token, allowed_issuers=frozenset({"idp"}))).issuer == "idp"
    assert await reason(verifier, token, allowed_issuers=frozenset({"partner"})) == "bad_issuer"


async def test_two_issuers_sharing_an_iss_are_told_apart_by_audience(
    make_verifier: VerifierFactory, idp: JwksServer
) -> None:
    verifier = make_verifier(
        issuer(jwks_uri=idp.uri, allow_http_jwks=True),
        issuer(name="mobile", jwks_uri=idp.uri, allow_http_jwks=True, audiences=["mobile-app"]),
    )
    assert (await verifier.verify(rs256(aud="mobile-app"))).issuer == "mobile"
    assert (await verifier.verify(rs256())).issuer == "idp"


async def test_a_jwks_outage_on_first_use_is_jwks_unavailable(make_verifier: VerifierFactory, idp: JwksServer) -> None:
    idp.status = 500
    assert await reason(make_verifier(), rs256()) == "jwks_unavailable"


def test_an_hs512_secret_shorter_than_the_hash_is_a_config_error() -> None:
    # RFC 7518 section 3.2: refused when the config is validated, before any verifier exists.
    with pytest.raises(ValidationError, match="at least 64 bytes"):
        issuer(algorithms=["HS512"], secret="k" * 40)


async def test_a_cached_token_is_answered_without_verifying_again(
    make_verifier: VerifierFactory, idp: JwksServer
) -> None:
    verifier = make_verifier()
    token = rs256()
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert verifier.cached_tokens == 1
    assert idp.hits == 1


async def test_a_cached_token_expires_at_its_exp(
    make_verifier: VerifierFactory, idp: JwksServer, clock: ManualClock
) -> None:
    verifier = make_verifier(issuer(jwks_uri=idp.uri, allow_http_jwks=True, leeway=0))
    token = rs256(exp=int(NOW) + 60)
    await verifier.verify(token)
    clock.advance(60)
    assert await reason(verifier, token) == "expired"
    assert verifier.cached_tokens == 0


async def test_the_cache_is_bounded(make_verifier: VerifierFactory) -> None:
    verifier = make_verifier(cache_size=2)
    for n in range(3):
        await verifier.verify(rs256(sub=f"user-{n}"))
    assert verifier.cached_tokens == 2


async def test_a_cache_hit_respects_the_routes_issuers(make_verifier: VerifierFactory, idp: JwksServer) -> None:
    verifier = make_verifier(
        issuer(jwks_uri=idp.uri, allow_http_jwks=True),
        issuer(name="partner", issuer="https://partner.test", algorithms=["HS256"], secret=HS_SECRET),
    )
    token = rs256()
    await verifier.verify(token)
    assert await reason(verifier, token, allowed_issuers=frozenset({"partner"})) == "bad_issuer"


async def test_key_rotation_clears_the_cache(
    make_verifier: VerifierFactory, idp: JwksServer, clock: ManualClock
) -> None:
    verifier = make_verifier()
    old = rs256()
    await verifier.verify(old)
    idp.keys = [public_jwk(rsa_key("rsa-2"), "k2", alg="RS256")]
    clock.advance(30)
    new = sign(claims(), rsa_key("rsa-2"), "RS256", kid="k2")
    assert (await verifier.verify(new)).consumer_id == "user-1"
    assert verifier.cached_tokens == 1, "only the token verified after the rotation"
    assert await reason(verifier, old) == "unknown_kid"


async def test_a_cached_token_signed_with_a_withdrawn_key_is_refused_after_the_jwks_ttl(
    make_verifier: VerifierFactory, idp: JwksServer, clock: ManualClock
) -> None:
    # A hit looks up no key, so the cache must end where the key set is due for its refresh.
    idp.keys.append(public_jwk(rsa_key("rsa-2"), "k2", alg="RS256"))
    verifier = make_verifier(issuer(
        jwks_uri=idp.uri, allow_http_jwks=True, jwks_cache_ttl="5s", jwks_min_refresh_interval="30s",
    ))
    token = rs256()
    await verifier.verify(token)
    idp.keys = idp.keys[1:]
    clock.advance(5)
    assert await reason(verifier, token) == "unknown_kid"


async def test_a_cache_hit_checks_no_signature_and_fetches_no_keys(
    make_verifier: VerifierFactory, idp: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a hit saves is the work, so count the work (not the wall clock, which a loaded CI
    # machine makes meaningless): RSA signature checks inside PyJWT, and requests to the JWKS.
    checks: list[str] = []
    real_verify = jwt.algorithms.RSAAlgorithm.verify

    def counting_verify(self: Any, msg: bytes, key: Any, sig: bytes) -> bool:
        checks.append("rsa")
        return bool(real_verify(self, msg, key, sig))

    monkeypatch.setattr(jwt.algorithms.RSAAlgorithm, "verify", counting_verify)
    verifier = make_verifier()
    token = rs256()
    first = await verifier.verify(token)
    assert (len(checks), idp.hits) == (1, 1)
    for _ in range(1000):
        assert await verifier.verify(token) == first
    assert (len(checks), idp.hits) == (1, 1), "a cache hit did the work of a miss"
    await verifier.verify(rs256(sub="user-2"))  # a different token is a miss: one more check
    assert (len(checks), idp.hits) == (2, 1)


async def test_after_aclose_no_jwks_fetch_happens(
    make_verifier: VerifierFactory, idp: JwksServer, clock: ManualClock
) -> None:
    verifier = make_verifier()
    await verifier.verify(rs256())
    await verifier.aclose()
    clock.advance(3600)  # past the JWKS ttl: an open verifier would refetch here
    later = sign(claims(now=NOW + 3600), rsa_key(), "RS256", kid="k1")
    assert (await verifier.verify(later)).consumer_id == "user-1", "the last good keys still serve"
    assert idp.hits == 1
