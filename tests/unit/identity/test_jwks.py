"""JwksCache against a real JWKS server on 127.0.0.1: parsing, TTL, refresh limits, stale-while-error."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from tests.jwt_fixtures import JwksServer, ec_key, ed_key, public_jwk, rsa_key, serve_jwks

from portcullis.errors import Unauthenticated
from portcullis.identity.jwks import JwksCache
from portcullis.testing import ManualClock

TTL, INTERVAL, STALE = 600.0, 30.0, 3600.0


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    async with serve_jwks([public_jwk(rsa_key(), "k1", alg="RS256")]) as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


CacheFactory = Callable[..., JwksCache]


@pytest.fixture
async def make_cache(
    server: JwksServer, session: aiohttp.ClientSession, clock: ManualClock
) -> AsyncIterator[CacheFactory]:
    made: list[JwksCache] = []

    def factory(**overrides: Any) -> JwksCache:
        options: dict[str, Any] = {
            "clock": clock, "session_factory": lambda: session, "timeout_s": 2.0, "ttl_s": TTL,
            "min_refresh_interval_s": INTERVAL, "max_stale_s": STALE,
        }
        options.update(overrides)
        cache = JwksCache(options.pop("uri", server.uri), **options)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        await cache.aclose()


async def reason_of(cache: JwksCache, kid: str | None, alg: str = "RS256") -> str:
    with pytest.raises(Unauthenticated) as exc:
        await cache.key_for(kid, alg)
    return exc.value.reason


async def test_keys_of_every_supported_family_are_served(server: JwksServer, make_cache: CacheFactory) -> None:
    server.keys += [public_jwk(ec_key(), "e1"), public_jwk(ed_key(), "o1")]
    cache = make_cache()
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    assert (await cache.key_for("e1", "ES256")).kid == "e1"
    assert (await cache.key_for("o1", "EdDSA")).kid == "o1"
    assert server.hits == 1


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"kty": "XYZ", "kid": "bad"}, id="unknown-kty"),
        pytest.param({**public_jwk(rsa_key(), "bad"), "alg": "RS1"}, id="unknown-alg"),
        pytest.param({**public_jwk(rsa_key(), "bad"), "alg": "none"}, id="alg-none"),
        pytest.param({**public_jwk(rsa_key(), "bad"), "alg": "HS256"}, id="rsa-key-claiming-hs256"),
        pytest.param(public_jwk(rsa_key(), "bad", use="enc"), id="use-enc"),
        pytest.param(public_jwk(rsa_key(), "bad", key_ops=["encrypt"]), id="key-ops-without-verify"),
        pytest.param({"kty": "oct", "kid": "bad", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}, id="oct-secret"),
        # RFC 7518 section 3.3: RSA keys of 2048 bits or more.
        pytest.param(public_jwk(rsa_key("small", 1024), "bad"), id="rsa-1024"),
        pytest.param({"kty": "RSA", "kid": "bad", "n": 5, "e": "AQAB"}, id="rsa-garbage-modulus"),
        pytest.param({"kty": "EC", "kid": "bad", "crv": "P-256", "x": "AA", "y": "AA"}, id="ec-point-not-on-curve"),
        pytest.param({**public_jwk(rsa_key(), None), "kid": 7}, id="kid-not-a-string"),
        pytest.param("not-an-object", id="not-an-object"),
    ],
)
async def test_unusable_entries_are_skipped_and_the_rest_still_serve(
    entry: Any, server: JwksServer, make_cache: CacheFactory
) -> None:
    server.keys.insert(0, entry)
    cache = make_cache()
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    assert await reason_of(cache, "bad") == "unknown_kid"


async def test_private_half_of_an_inline_key_is_reduced_to_the_public_key(make_cache: CacheFactory) -> None:
    private_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key(), as_dict=True)
    del private_jwk["key_ops"]  # PyJWT marks it ["sign"], which alone would make it skipped
    cache = make_cache(uri=None, session_factory=None, inline_keys=[{**private_jwk, "kid": "p"}])
    key = await cache.key_for("p", "RS256")
    assert key.key.public_numbers() == rsa_key().public_key().public_numbers()  # type: ignore[union-attr]


async def test_keys_are_cached_for_the_ttl_then_refetched(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache()
    await cache.key_for("k1", "RS256")
    clock.advance(TTL - 1)
    await cache.key_for("k1", "RS256")
    assert server.hits == 1
    clock.advance(1)
    await cache.key_for("k1", "RS256")
    assert server.hits == 2


async def test_unknown_kid_refreshes_at_most_once_per_interval(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache()
    await cache.key_for("k1", "RS256")
    assert await reason_of(cache, "nope") == "unknown_kid"
    assert await reason_of(cache, "nope-again") == "unknown_kid"
    assert server.hits == 2, "the first load, then one refresh for the unknown kids"
    clock.advance(INTERVAL - 1)
    assert await reason_of(cache, "nope") == "unknown_kid"
    assert server.hits == 2
    clock.advance(1)
    assert await reason_of(cache, "nope") == "unknown_kid"
    assert server.hits == 3


# A TTL shorter than the unknown-kid interval: the case where one used to hold back the other.
SHORT_TTL = 5.0


async def test_a_key_the_issuer_withdrew_is_refused_after_the_ttl_not_the_refresh_interval(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    # OpenID Connect Core 1.0 section 10.1.1: an issuer rotates by editing its published set.
    server.keys.append(public_jwk(rsa_key("rsa-2"), "k2", alg="RS256"))
    cache = make_cache(ttl_s=SHORT_TTL)
    await cache.key_for("k1", "RS256")
    server.keys = server.keys[1:]
    clock.advance(SHORT_TTL)
    assert await reason_of(cache, "k1") == "unknown_kid"
    assert (await cache.key_for("k2", "RS256")).kid == "k2"


async def test_a_ttl_refresh_right_after_an_unknown_kid_refresh_still_happens_at_the_ttl(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache(ttl_s=SHORT_TTL)
    await cache.key_for("k1", "RS256")
    clock.advance(1)
    assert await reason_of(cache, "unheard-of") == "unknown_kid"
    assert server.hits == 2, "the unknown kid refreshed"
    server.keys = []
    clock.advance(SHORT_TTL - 1)
    assert (await cache.key_for("k1", "RS256")).kid == "k1", "still within the TTL of that refresh"
    clock.advance(1)
    assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert server.hits == 3


async def test_an_unknown_kid_flood_adds_at_most_one_fetch_per_interval_to_the_ttl_refreshes(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache(ttl_s=SHORT_TTL)
    await cache.key_for("k1", "RS256")
    for _second in range(2 * int(INTERVAL)):
        for _ in range(10):
            assert await reason_of(cache, secrets.token_hex(8)) == "unknown_kid"
        clock.advance(1)
    ttl_fetches = 2 * int(INTERVAL / SHORT_TTL)  # the first load included
    assert server.hits == ttl_fetches + 2, "one TTL fetch per TTL, one unknown-kid fetch per interval"


async def test_a_failed_fetch_holds_the_ttl_refresh_back_no_longer_than_the_ttl(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache(ttl_s=SHORT_TTL)
    await cache.key_for("k1", "RS256")
    server.status = 500
    clock.advance(SHORT_TTL)
    assert (await cache.key_for("k1", "RS256")).kid == "k1", "the last good keys serve while the issuer fails"
    assert server.hits == 2
    server.status, server.keys = 200, []
    clock.advance(SHORT_TTL - 1)
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    assert server.hits == 2, "no retry before the delay"
    clock.advance(1)
    assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert server.hits == 3


async def test_a_hundred_concurrent_random_kids_cause_at_most_one_fetch(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    cache = make_cache()
    await cache.key_for("k1", "RS256")
    clock.advance(INTERVAL)
    results = await asyncio.gather(
        *(cache.key_for(secrets.token_hex(8), "RS256") for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(r, Unauthenticated) and r.reason == "unknown_kid" for r in results)
    assert server.hits == 2


async def test_concurrent_cold_lookups_share_one_fetch(server: JwksServer, make_cache: CacheFactory) -> None:
    cache = make_cache()
    keys = await asyncio.gather(*(cache.key_for("k1", "RS256") for _ in range(50)))
    assert {k.kid for k in keys} == {"k1"}
    assert server.hits == 1


async def test_rotation_is_picked_up_on_an_unknown_kid_and_reported(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    changes: list[int] = []
    cache = make_cache(on_change=lambda: changes.append(1))
    await cache.key_for("k1", "RS256")
    server.keys = [public_jwk(rsa_key("rsa-2"), "k2", alg="RS256")]
    clock.advance(INTERVAL)
    assert (await cache.key_for("k2", "RS256")).kid == "k2"
    assert await reason_of(cache, "k1") == "unknown_kid"
    assert len(changes) == 2  # first load, then the rotation


async def test_an_unchanged_refetch_reports_no_change(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    changes: list[int] = []
    cache = make_cache(on_change=lambda: changes.append(1))
    await cache.key_for("k1", "RS256")
    clock.advance(TTL)
    await cache.key_for("k1", "RS256")
    assert server.hits == 2
    assert len(changes) == 1


async def test_a_failing_fetch_keeps_serving_the_last_good_keys_until_the_hard_limit(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    changes: list[int] = []
    cache = make_cache(on_change=lambda: changes.append(1))
    await cache.key_for("k1", "RS256")
    server.status = 500
    clock.advance(TTL)
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    assert server.hits == 2
    clock.advance(STALE - 1)
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    clock.advance(1)
    assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert len(changes) == 2, "dropping stale keys counts as a change"


async def test_a_failing_endpoint_is_retried_once_per_interval_not_per_request(
    server: JwksServer, make_cache: CacheFactory, clock: ManualClock
) -> None:
    server.status = 503
    cache = make_cache()
    for _ in range(20):
        assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert server.hits == 1
    server.status = 200
    clock.advance(INTERVAL)
    assert (await cache.key_for("k1", "RS256")).kid == "k1"
    assert server.hits == 2


BIG = json.dumps({"keys": [], "pad": "x" * (300 * 1024)}).encode()


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({"status": 500}, id="status-500"),
        pytest.param({"status": 302}, id="redirect-not-followed"),
        pytest.param({"content_type": "text/html"}, id="not-json-content-type"),
        pytest.param({"body": b"{not json"}, id="invalid-json"),
        pytest.param({"body": b'{"keys": NaN}'}, id="json-without-a-keys-list"),
        pytest.param({"body": b'[{"kty": "RSA"}]'}, id="json-array-not-a-jwk-set"),
        pytest.param({"body": b"[" * 100_000}, id="deeply-nested-json"),
        pytest.param({"body": BIG}, id="over-max-bytes-with-content-length"),
        pytest.param({"body": BIG, "chunked": True}, id="over-max-bytes-chunked"),
    ],
)
async def test_a_bad_jwks_response_is_jwks_unavailable(
    setup: dict[str, Any], server: JwksServer, make_cache: CacheFactory
) -> None:
    for name, value in setup.items():
        setattr(server, name, value)
    cache = make_cache()
    assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert server.hits == 1


async def test_a_hanging_jwks_endpoint_times_out(server: JwksServer, make_cache: CacheFactory) -> None:
    server.hang = True
    cache = make_cache(timeout_s=0.2)
    assert await reason_of(cache, "k1") == "jwks_unavailable"


async def test_an_unreachable_jwks_endpoint_is_jwks_unavailable(make_cache: CacheFactory) -> None:
    async with serve_jwks() as gone:
        uri = gone.uri
    cache = make_cache(uri=uri)
    assert await reason_of(cache, "k1") == "jwks_unavailable"


async def test_inline_keys_are_served_without_any_fetch(server: JwksServer, make_cache: CacheFactory) -> None:
    cache = make_cache(uri=None, session_factory=None, inline_keys=[public_jwk(ed_key(), "inline")])
    assert (await cache.key_for("inline", "EdDSA")).kid == "inline"
    assert await reason_of(cache, "k1") == "unknown_kid"
    assert server.hits == 0


async def test_without_kid_the_single_fitting_key_is_used(server: JwksServer, make_cache: CacheFactory) -> None:
    server.keys.append(public_jwk(ec_key(), "e1"))
    cache = make_cache()
    assert (await cache.key_for(None, "RS256")).kid == "k1"
    assert (await cache.key_for(None, "ES256")).kid == "e1"


async def test_without_kid_several_fitting_keys_are_refused(server: JwksServer, make_cache: CacheFactory) -> None:
    server.keys.append(public_jwk(rsa_key("rsa-2"), "k2"))
    cache = make_cache()
    assert await reason_of(cache, None) == "unknown_kid"


@pytest.mark.parametrize(
    ("entry", "alg"),
    [
        pytest.param(public_jwk(rsa_key(), "x"), "ES256", id="rsa-key-for-es256"),
        pytest.param(public_jwk(ec_key(), "x"), "RS256", id="ec-key-for-rs256"),
        pytest.param(public_jwk(ec_key("p384", "P-384"), "x"), "ES256", id="p384-key-for-es256"),
        pytest.param(public_jwk(ed_key(), "x"), "ES256", id="okp-key-for-es256"),
        pytest.param(public_jwk(rsa_key(), "x", alg="RS256"), "PS256", id="jwk-alg-rs256-used-as-ps256"),
    ],
)
async def test_a_key_is_never_used_with_another_family_or_curve(
    entry: dict[str, Any], alg: str, server: JwksServer, make_cache: CacheFactory
) -> None:
    server.keys = [entry]
    cache = make_cache()
    assert await reason_of(cache, "x", alg) == "algorithm_not_allowed"


async def test_after_aclose_nothing_is_fetched(server: JwksServer, make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.aclose()
    assert await reason_of(cache, "k1") == "jwks_unavailable"
    assert server.hits == 0


async def test_aclose_cancels_a_fetch_in_flight(server: JwksServer, make_cache: CacheFactory) -> None:
    server.hang = True
    cache = make_cache(timeout_s=30.0)
    lookup = asyncio.create_task(cache.key_for("k1", "RS256"))
    while server.hits == 0:
        await asyncio.sleep(0)
    await cache.aclose()
    with pytest.raises(Unauthenticated) as exc:
        await lookup
    assert exc.value.reason == "jwks_unavailable"
