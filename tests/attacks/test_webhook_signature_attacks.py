"""Attacks on webhooks signed in the common ``t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`` scheme.

Sources, named in each case's id: Stripe's webhook signature documentation (timestamp tolerance,
several ``v1`` during a secret roll, replay), CWE-294 (capture-replay), CWE-347 (improper
verification of a signature), OWASP API2. Every refusal is the generic 401; the audit names the
check. The legitimate deliveries are at the end.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml
from tests.signing_fixtures import signature_env

from portcullis.signing import webhook_signature_header

SECRET = "whsec_" + "a" * 32
NEXT_SECRET = "whsec_" + "b" * 32
ROUTES = """
routes:
  - name: hooks
    path: /hooks/payments
    methods: [POST]
    upstream: api
    auth: {webhook_signature: {consumer: payments-provider, secrets: [hook_secret, hook_secret_next],
                               header: stripe-signature, tolerance: 300s}}
"""
EVENT = b'{"id": "evt_1", "type": "payment.succeeded", "amount": 1200}'


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: UpstreamServer) -> Gateway:
    return await make_gateway(gateway_yaml(upstream.url, ROUTES, keys=False), env=signature_env(),
                              secrets={"hook_secret": SECRET, "hook_secret_next": NEXT_SECRET})


def signed(gw: Gateway, body: bytes = EVENT, *, secret: str = SECRET, offset_s: int = 0) -> dict[str, str]:
    return {"Stripe-Signature": webhook_signature_header(secret.encode(), body, int(gw.clock.wall()) + offset_s),
            "Content-Type": "application/json"}


async def deliver(gw: Gateway, headers: dict[str, str] | list[tuple[str, str]], body: bytes = EVENT) -> httpx.Response:
    return await gw.client.post("/hooks/payments", headers=headers, content=body)


async def refused_because(gw: Gateway, response: httpx.Response, reason: str) -> bool:
    decision = (await gw.audit_records())[-1]["decision"]
    assert (response.status_code, response.json()["code"], decision) == (
        401, "auth.invalid_credentials", f"auth_failed:{reason}")
    return True


async def test_an_unsigned_delivery_is_401_missing_credentials(gw: Gateway, upstream: UpstreamServer) -> None:
    response = await deliver(gw, {"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["code"] == "auth.missing_credentials"
    assert upstream.seen == []


async def test_a_replayed_delivery_is_refused(gw: Gateway, upstream: UpstreamServer) -> None:
    # CWE-294: the same delivery, byte for byte, a second time
    headers = signed(gw)
    assert (await deliver(gw, headers)).status_code == 200
    assert await refused_because(gw, await deliver(gw, headers), "replayed_nonce")
    assert len(upstream.seen) == 1


async def test_two_identical_deliveries_at_once_are_one_admitted(gw: Gateway, upstream: UpstreamServer) -> None:
    headers = signed(gw)
    first, second = await asyncio.gather(deliver(gw, headers), deliver(gw, headers))
    assert sorted([first.status_code, second.status_code]) == [200, 401]
    assert len(upstream.seen) == 1


@pytest.mark.parametrize(("offset_s", "reason"), [(-301, "created_too_old"), (301, "created_in_future")],
                         ids=["stripe-tolerance-too-old", "stripe-tolerance-in-the-future"])
async def test_a_timestamp_outside_the_tolerance_is_refused(gw: Gateway, offset_s: int, reason: str) -> None:
    assert await refused_because(gw, await deliver(gw, signed(gw, offset_s=offset_s)), reason)


@pytest.mark.parametrize("offset_s", [-300, 300], ids=["oldest-accepted", "newest-accepted"])
async def test_a_timestamp_at_the_edge_of_the_tolerance_is_accepted(gw: Gateway, offset_s: int) -> None:
    assert (await deliver(gw, signed(gw, offset_s=offset_s))).status_code == 200


async def test_a_changed_body_is_refused(gw: Gateway, upstream: UpstreamServer) -> None:
    # CWE-347: the signature covers "t.body"; a different body under it must not pass
    assert await refused_because(gw, await deliver(gw, signed(gw), EVENT.replace(b"1200", b"9999")), "bad_signature")
    assert upstream.seen == []


async def test_a_moved_timestamp_is_refused(gw: Gateway) -> None:
    # The timestamp is signed too: taking an old delivery and writing a fresh t does not revive it
    header = signed(gw, offset_s=-1000)["Stripe-Signature"]
    mac = header.split("v1=")[1]
    fresh = {"Stripe-Signature": f"t={int(gw.clock.wall())},v1={mac}"}
    assert await refused_because(gw, await deliver(gw, fresh), "bad_signature")


async def test_a_delivery_signed_with_another_secret_is_refused(gw: Gateway) -> None:
    assert await refused_because(gw, await deliver(gw, signed(gw, secret="whsec_" + "x" * 32)), "bad_signature")


@pytest.mark.parametrize("value", [
    "v1=" + "0" * 64,
    "t=1700000000",
    "t=1700000000,t=1700000001,v1=" + "0" * 64,
    "t=17e8,v1=" + "0" * 64,
    "t=1700000000,v1=XYZ",
    "t=1700000000,v1=" + "0" * 64 + ",v1=" + "z" * 64,
], ids=["no-timestamp", "no-v1", "two-timestamps", "not-a-decimal", "not-hex", "one-bad-v1"])
async def test_a_malformed_header_is_refused(gw: Gateway, value: str) -> None:
    assert await refused_because(gw, await deliver(gw, {"Stripe-Signature": value}), "malformed_signature")


async def test_two_signature_headers_are_refused_as_ambiguous(gw: Gateway) -> None:
    headers = [("Stripe-Signature", signed(gw)["Stripe-Signature"]),
               ("Stripe-Signature", signed(gw, secret=NEXT_SECRET)["Stripe-Signature"])]
    assert await refused_because(gw, await deliver(gw, headers), "ambiguous_signature")


async def test_an_oversize_header_is_refused(gw: Gateway) -> None:
    value = signed(gw)["Stripe-Signature"] + ",v0=" + "0" * 5000
    assert await refused_because(gw, await deliver(gw, {"Stripe-Signature": value}), "oversize_signature")


# --- legitimate deliveries ----------------------------------------------------------------------


async def test_a_signed_delivery_reaches_the_upstream_as_the_sender(gw: Gateway, upstream: UpstreamServer) -> None:
    response = await deliver(gw, signed(gw))
    assert response.status_code == 200 and upstream.seen[-1].body == EVENT
    record = (await gw.audit_records())[-1]
    assert (record["consumer_id"], record["key_id"]) == ("payments-provider", "hook_secret")


async def test_during_a_secret_roll_either_secret_verifies(gw: Gateway) -> None:
    # Stripe signs with the old and the new secret while they roll: several v1 in one header
    both = signed(gw)["Stripe-Signature"] + "," + signed(gw, secret=NEXT_SECRET)["Stripe-Signature"].split(",")[1]
    assert (await deliver(gw, {"Stripe-Signature": both})).status_code == 200
    assert (await deliver(gw, signed(gw, secret=NEXT_SECRET))).status_code == 200


async def test_a_later_delivery_with_the_same_body_is_not_a_replay(gw: Gateway) -> None:
    assert (await deliver(gw, signed(gw))).status_code == 200
    gw.clock.advance(1)
    assert (await deliver(gw, signed(gw))).status_code == 200
