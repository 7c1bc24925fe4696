"""Attacks on signed requests (RFC 9421 HTTP Message Signatures with RFC 9530 Content-Digest).

Sources, named in each case's id: RFC 9421 section 7 (security considerations: 7.2.1 replay,
7.2.2 insufficient coverage, 7.2.5 multiple signatures and ambiguity, 7.2.8 message content,
7.3.3 symmetric key confusion, 7.3.4 algorithm confusion, 7.5.2 large signature input), RFC 9530
section 6 (digest of different content), OWASP API2 (broken authentication) and CWE-294
(authentication bypass by capture-replay). Every refusal is the same public 401
``auth.invalid_credentials`` (no oracle); the audit record says which check refused it, and the
tests read it to prove the right defence fired. The legitimate traffic each defence lets through
is at the end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_sf.dictionary import ser_dictionary
from tests.conftest import Gateway, GatewayFactory, UpstreamServer
from tests.signing_fixtures import (
    SigningKey,
    ed25519_key,
    hmac_key,
    send,
    signature_env,
    signature_yaml,
    signed_headers,
)

from portcullis.signing import RequestSigner, SigningSecret, content_digest, load_signing_secret
from portcullis.signing.message import RequestFacts, signature_base, signature_params
from portcullis.testing import ManualClock

INVALID = {"type": "https://portcullis.dev/errors/auth.invalid_credentials", "title": "Invalid credentials.",
           "status": 401, "code": "auth.invalid_credentials"}


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: UpstreamServer) -> Gateway:
    return await make_gateway(signature_yaml(upstream.url), env=signature_env())


@pytest.fixture
async def alice(gw: Gateway) -> SigningKey:
    return await hmac_key(gw, "alice")


@pytest.fixture
async def bob(gw: Gateway) -> SigningKey:
    return await ed25519_key(gw, "bob")


async def refused_because(gw: Gateway, response: httpx.Response, reason: str) -> bool:
    """The response is the generic 401 problem document, and the audit names ``reason``."""
    body = response.json()
    problem = {k: body.get(k) for k in INVALID}
    decision = (await gw.audit_records())[-1]["decision"]
    assert (response.status_code, problem, decision) == (401, INVALID, f"auth_failed:{reason}")
    assert body["request_id"] == response.headers["x-request-id"]
    return True


def _hmac_over(secret: bytes, facts: RequestFacts, components: tuple[str, ...], params: Mapping[str, int | str]) -> bytes:
    inner = signature_params(components, params)
    return hmac.new(secret, signature_base(facts, components, inner), hashlib.sha256).digest()


# --- signature stripping --------------------------------------------------------------------


async def test_a_request_without_a_signature_is_401_missing_credentials(gw: Gateway, upstream: UpstreamServer) -> None:
    # RFC 9421 section 7.2.1 (an unsigned request must not pass as if signing were optional)
    response = await gw.client.get("/orders")
    assert response.status_code == 401 and response.json()["code"] == "auth.missing_credentials"
    assert response.headers["accept-signature"] == 'sig1=("@method" "@authority" "@path");created;keyid;nonce'
    assert upstream.seen == []


@pytest.mark.parametrize("dropped", ["Signature", "Signature-Input"], ids=["OWASP-API2-signature-stripped",
                                                                          "OWASP-API2-signature-input-stripped"])
async def test_half_a_signature_is_refused(gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
                                           dropped: str) -> None:
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    del headers[dropped]
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "malformed_signature")
    assert upstream.seen == []


# --- component substitution ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "signed"), [
    ("GET", "/orders/2", {"sign_path": "/orders/1"}),
    ("DELETE", "/orders/1", {"sign_method": "GET"}),
    ("GET", "/orders/1", {"sign_authority": "other-tenant.example:8443"}),
], ids=["RFC9421-7.2.2-path-substituted", "RFC9421-7.2.2-method-substituted", "RFC9421-7.2.2-authority-substituted"])
async def test_a_signature_over_another_request_is_refused(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer, method: str, path: str, signed: dict[str, Any],
) -> None:
    headers = signed_headers(gw, alice.signer(gw), method, path, **signed)
    assert await refused_because(gw, await send(gw, method, path, headers), "bad_signature")
    assert upstream.seen == []


# --- missing required components -----------------------------------------------------------


@pytest.mark.parametrize(("path", "components", "missing"), [
    ("/orders", ("@method", "@path"), "@authority"),
    ("/orders", ("@authority", "@path"), "@method"),
    ("/orders", ("@method", "@authority"), "@path"),
    ("/orders?page=2", ("@method", "@authority", "@path"), "@query"),
], ids=["RFC9421-7.2.2-no-authority", "RFC9421-7.2.2-no-method", "RFC9421-7.2.2-no-path", "RFC9421-7.2.2-no-query"])
async def test_a_signature_that_leaves_a_required_component_out_is_refused(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer, path: str, components: tuple[str, ...], missing: str,
) -> None:
    headers = signed_headers(gw, alice.signer(gw, components=components), "GET", path)
    assert await refused_because(gw, await send(gw, "GET", path, headers), f"missing_component:{missing}")
    assert upstream.seen == []


async def test_a_route_s_declared_components_are_required(gw: Gateway, alice: SigningKey) -> None:
    # /strict requires content-type besides @method and @target-uri
    signer = alice.signer(gw, components=("@method", "@target-uri", "content-digest"))
    headers = signed_headers(gw, signer, "POST", "/strict", b"{}", {"Content-Type": "application/json"})
    assert await refused_because(gw, await send(gw, "POST", "/strict", headers, b"{}"),
                                 "missing_component:content-type")


# --- replay ------------------------------------------------------------------------------------


async def test_a_replayed_request_is_refused_on_the_same_instance(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
) -> None:
    # CWE-294, RFC 9421 section 7.2.2 (nonce): the same signed request, sent twice
    headers = signed_headers(gw, alice.signer(gw), "POST", "/orders", b'{"qty": 1}')
    assert (await send(gw, "POST", "/orders", headers, b'{"qty": 1}')).status_code == 200
    assert await refused_because(gw, await send(gw, "POST", "/orders", headers, b'{"qty": 1}'), "replayed_nonce")
    assert len(upstream.seen) == 1


async def test_a_nonce_is_remembered_for_the_whole_skew_window(gw: Gateway, alice: SigningKey) -> None:
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    assert (await send(gw, "GET", "/orders", headers)).status_code == 200
    gw.clock.advance(300)  # still within the 300 s skew: the signature would verify, the nonce is spent
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "replayed_nonce")


async def test_two_identical_requests_at_once_are_one_admitted_and_one_replay(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
) -> None:
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    first, second = await asyncio.gather(send(gw, "GET", "/orders", headers), send(gw, "GET", "/orders", headers))
    assert sorted([first.status_code, second.status_code]) == [200, 401]
    assert len(upstream.seen) == 1


def _shared(upstream_url: str, prefix: str, *, url: str = "redis://127.0.0.1:6379/0", on_failure: str = "closed",
            shield: str = "") -> str:
    return signature_yaml(upstream_url, f"""
shared_state: {{url: "{url}", key_prefix: "{prefix}", instances: 2, on_failure: {on_failure}, timeout: 0.5s}}
{shield}""")


@pytest.mark.multi_instance
async def test_a_request_replayed_to_another_instance_sharing_redis_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer, redis_space: tuple[Any, str],
) -> None:
    # CWE-294 across a cluster: the nonce is claimed in Redis (SET NX PX), not in one process's memory
    _, prefix = redis_space
    env = signature_env()
    first = await make_gateway(_shared(upstream.url, prefix), env=env)
    second = await make_gateway(_shared(upstream.url, prefix), env=env, clock=first.clock)
    key = await hmac_key(first, "alice")  # both instances read the same store file
    headers = signed_headers(first, key.signer(first), "GET", "/orders")
    assert (await send(first, "GET", "/orders", headers)).status_code == 200
    # The same bytes to the second instance, Host included (as behind one load-balanced name)
    replayed = await second.client.get("/orders", headers={**headers, "Host": f"127.0.0.1:{first.port}"})
    assert await refused_because(second, replayed, "replayed_nonce")
    fresh = signed_headers(first, key.signer(first), "GET", "/orders")  # a new nonce is fine there
    assert (await second.client.get("/orders", headers={**fresh, "Host": f"127.0.0.1:{first.port}"})).status_code == 200
    assert len(upstream.seen) == 2


async def test_with_redis_down_and_on_failure_closed_signed_requests_get_503(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    # A nonce that cannot be checked is never admitted (shared_state.on_failure: closed). The
    # failed-auth shield is off here: with it on, its own closed counter answers 429 first.
    gw = await make_gateway(_shared(upstream.url, "pcltest:dead:", url="redis://127.0.0.1:1/0",
                                    shield="shield: {failed_auth_rate: null, unauthenticated_rate: null}"),
                            env=signature_env())
    key = await hmac_key(gw, "alice")
    response = await send(gw, "GET", "/orders", signed_headers(gw, key.signer(gw), "GET", "/orders"))
    assert (response.status_code, response.json()["code"]) == (503, "service.unavailable")
    assert (await gw.audit_records())[-1]["decision"] == "auth_failed:store_unavailable"
    assert upstream.seen == []


async def test_with_redis_down_and_on_failure_open_nonces_fall_back_to_this_instance(
    make_gateway: GatewayFactory, upstream: UpstreamServer,
) -> None:
    gw = await make_gateway(_shared(upstream.url, "pcltest:dead:", url="redis://127.0.0.1:1/0", on_failure="open"),
                            env=signature_env())
    key = await hmac_key(gw, "alice")
    headers = signed_headers(gw, key.signer(gw), "GET", "/orders")
    assert (await send(gw, "GET", "/orders", headers)).status_code == 200
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "replayed_nonce")


async def test_a_missing_nonce_is_refused(gw: Gateway, alice: SigningKey) -> None:
    facts = RequestFacts("GET", "http", f"127.0.0.1:{gw.port}", "/orders", None)
    components = ("@method", "@authority", "@path")
    params: dict[str, int | str] = {"created": int(gw.clock.wall()), "keyid": alice.key_id}
    assert alice.secret.hmac_secret is not None
    signature = _hmac_over(alice.secret.hmac_secret, facts, components, params)
    headers = {"Signature-Input": ser_dictionary({"sig1": signature_params(components, params)}),
               "Signature": ser_dictionary({"sig1": (signature, {})})}
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "missing_parameter")


# --- body and digest ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signed_body", "sent_body"), [
    (b'{"to": "alice", "amount": 10}', b'{"to": "mallory", "amount": 10}'),
    (b'{"amount": 10}', b'{"amount": 99}'),
], ids=["RFC9530-6-digest-of-a-different-body", "RFC9421-7.2.8-body-swapped-same-length"])
async def test_a_body_other_than_the_digested_one_is_refused(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer, signed_body: bytes, sent_body: bytes,
) -> None:
    headers = signed_headers(gw, alice.signer(gw), "POST", "/orders", signed_body)
    assert await refused_because(gw, await send(gw, "POST", "/orders", headers, sent_body), "digest_mismatch")
    assert upstream.seen == []


async def test_a_forged_digest_that_the_signature_covers_is_still_checked_against_the_body(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
) -> None:
    # The client signs a Content-Digest that does not match what it sends (RFC 9530 section 6)
    body = b'{"qty": 1}'
    headers = {"Content-Digest": content_digest(b"something else")}
    signer = alice.signer(gw, components=("@method", "@authority", "@path", "content-digest"))
    headers.update(signer.sign("POST", f"http://127.0.0.1:{gw.port}/orders", headers.items()))
    assert await refused_because(gw, await send(gw, "POST", "/orders", headers, body), "digest_mismatch")
    assert upstream.seen == []


async def test_a_body_without_a_digest_is_refused(gw: Gateway, alice: SigningKey, upstream: UpstreamServer) -> None:
    # RFC 9421 section 7.2.8: a signature that does not cover the content does not protect it
    headers = signed_headers(gw, alice.signer(gw), "POST", "/orders")  # signed as if bodiless
    assert await refused_because(gw, await send(gw, "POST", "/orders", headers, b'{"qty": 1}'),
                                 "missing_component:content-digest")
    assert upstream.seen == []


async def test_a_digest_the_signature_does_not_cover_is_refused(gw: Gateway, alice: SigningKey) -> None:
    body = b'{"qty": 1}'
    headers = signed_headers(gw, alice.signer(gw, components=("@method", "@authority", "@path")), "POST",
                             "/orders", body)
    assert "Content-Digest" in headers
    assert await refused_because(gw, await send(gw, "POST", "/orders", headers, body),
                                 "missing_component:content-digest")


# --- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset_s", "reason"), [
    (-301, "created_too_old"),
    (301, "created_in_future"),
], ids=["RFC9421-7.2.1-created-too-old", "RFC9421-7.2.1-created-in-the-future"])
async def test_a_signature_outside_the_skew_window_is_refused(
    gw: Gateway, alice: SigningKey, offset_s: float, reason: str,
) -> None:
    signer_clock = ManualClock(wall=gw.clock.wall() + offset_s)
    signer = RequestSigner(alice.key_id, alice.secret, clock=signer_clock)
    headers = signed_headers(gw, signer, "GET", "/orders")
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), reason)


@pytest.mark.parametrize("offset_s", [-300, 300], ids=["oldest-accepted", "newest-accepted"])
async def test_a_signature_at_the_edge_of_the_skew_window_is_accepted(
    gw: Gateway, alice: SigningKey, offset_s: float,
) -> None:
    signer = RequestSigner(alice.key_id, alice.secret, clock=ManualClock(wall=gw.clock.wall() + offset_s))
    assert (await send(gw, "GET", "/orders", signed_headers(gw, signer, "GET", "/orders"))).status_code == 200


async def test_an_expired_signature_is_refused(gw: Gateway, alice: SigningKey) -> None:
    facts = RequestFacts("GET", "http", f"127.0.0.1:{gw.port}", "/orders", None)
    components = ("@method", "@authority", "@path")
    now = int(gw.clock.wall())
    params: dict[str, int | str] = {"created": now - 10, "expires": now, "keyid": alice.key_id, "nonce": "n-expired"}
    assert alice.secret.hmac_secret is not None
    signature = _hmac_over(alice.secret.hmac_secret, facts, components, params)
    headers = {"Signature-Input": ser_dictionary({"sig1": signature_params(components, params)}),
               "Signature": ser_dictionary({"sig1": (signature, {})})}
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "signature_expired")


# --- keys ---------------------------------------------------------------------------------------


async def test_an_unknown_key_id_is_refused(gw: Gateway, alice: SigningKey) -> None:
    signer = RequestSigner("sig_000000000000", alice.secret, clock=gw.clock)
    assert await refused_because(gw, await send(gw, "GET", "/orders", signed_headers(gw, signer, "GET", "/orders")),
                                 "unknown_key")


async def test_a_revoked_key_is_refused_at_once(gw: Gateway, alice: SigningKey) -> None:
    assert (await send(gw, "GET", "/orders", signed_headers(gw, alice.signer(gw), "GET", "/orders"))).status_code == 200
    keyring = gw.runtime.signing_keys
    assert keyring is not None and await keyring.revoke(alice.key_id)
    response = await send(gw, "GET", "/orders", signed_headers(gw, alice.signer(gw), "GET", "/orders"))
    assert await refused_because(gw, response, "key_revoked")


async def test_an_hmac_key_id_with_an_ed25519_signature_is_refused(gw: Gateway, alice: SigningKey) -> None:
    # RFC 9421 section 7.3.4: the key decides the algorithm, never the request
    forged = SigningSecret("ed25519", private_key=Ed25519PrivateKey.generate())
    signer = RequestSigner(alice.key_id, forged, clock=gw.clock)
    assert await refused_because(gw, await send(gw, "GET", "/orders", signed_headers(gw, signer, "GET", "/orders")),
                                 "alg_mismatch")


async def test_an_hmac_key_id_with_an_ed25519_signature_and_no_alg_is_refused(gw: Gateway, alice: SigningKey) -> None:
    forged = SigningSecret("ed25519", private_key=Ed25519PrivateKey.generate())
    signer = RequestSigner(alice.key_id, forged, clock=gw.clock, include_alg=False)
    assert await refused_because(gw, await send(gw, "GET", "/orders", signed_headers(gw, signer, "GET", "/orders")),
                                 "bad_signature")


async def test_an_ed25519_public_key_used_as_an_hmac_secret_is_refused(gw: Gateway, bob: SigningKey) -> None:
    # RFC 9421 section 7.3.3 / the JWT "HS256 with the RSA public key" confusion (CVE-2015-9235)
    assert bob.secret.private_key is not None
    public = bob.secret.private_key.public_key()
    for material in (public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
                     public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)):
        for include_alg in (True, False):
            signer = RequestSigner(bob.key_id, SigningSecret("hmac-sha256", hmac_secret=material), clock=gw.clock,
                                   include_alg=include_alg)
            response = await send(gw, "GET", "/orders", signed_headers(gw, signer, "GET", "/orders"))
            assert await refused_because(gw, response, "alg_mismatch" if include_alg else "bad_signature")


async def test_an_alg_parameter_that_disagrees_with_the_key_is_refused(gw: Gateway, alice: SigningKey) -> None:
    # A correct HMAC signature, but the client claims ed25519 (RFC 9421 section 3.2 step 6: alg must match the key)
    facts = RequestFacts("GET", "http", f"127.0.0.1:{gw.port}", "/orders", None)
    components = ("@method", "@authority", "@path")
    params: dict[str, int | str] = {"created": int(gw.clock.wall()), "keyid": alice.key_id, "nonce": "n-alg", "alg": "ed25519"}
    assert alice.secret.hmac_secret is not None
    signature = _hmac_over(alice.secret.hmac_secret, facts, components, params)
    headers = {"Signature-Input": ser_dictionary({"sig1": signature_params(components, params)}),
               "Signature": ser_dictionary({"sig1": (signature, {})})}
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "alg_mismatch")


async def test_a_key_of_an_algorithm_the_route_does_not_allow_is_refused(gw: Gateway, bob: SigningKey) -> None:
    headers = signed_headers(gw, bob.signer(gw), "GET", "/hmac")
    assert await refused_because(gw, await send(gw, "GET", "/hmac", headers), "algorithm_not_allowed")


# --- ambiguity and size -------------------------------------------------------------------------


def _two_labels(gw: Gateway, key: SigningKey) -> tuple[dict[str, str], dict[str, str]]:
    first = signed_headers(gw, key.signer(gw, label="a"), "GET", "/orders")
    second = signed_headers(gw, key.signer(gw, label="b"), "GET", "/admin-area")
    return first, second


async def test_two_signature_labels_are_refused_as_ambiguous(gw: Gateway, alice: SigningKey) -> None:
    # RFC 9421 section 7.2.5: which signature would authorize the request?
    first, second = _two_labels(gw, alice)
    headers = {"Signature-Input": f"{first['Signature-Input']}, {second['Signature-Input']}",
               "Signature": f"{first['Signature']}, {second['Signature']}"}
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "ambiguous_signature")


async def test_two_signature_labels_on_separate_lines_are_refused_as_ambiguous(gw: Gateway, alice: SigningKey) -> None:
    first, second = _two_labels(gw, alice)
    headers = [("Signature-Input", first["Signature-Input"]), ("Signature-Input", second["Signature-Input"]),
               ("Signature", first["Signature"]), ("Signature", second["Signature"])]
    response = await gw.client.get("/orders", headers=headers)
    assert await refused_because(gw, response, "ambiguous_signature")


async def test_a_duplicated_label_is_refused(gw: Gateway, alice: SigningKey) -> None:
    # RFC 8941 section 4.2.2 lets the last duplicate win; a verifier that did would check one
    # signature while a logger or backend reads the other.
    first, second = _two_labels(gw, alice)
    headers = {"Signature-Input": f"{second['Signature-Input'].replace('b=', 'a=', 1)}, {first['Signature-Input']}",
               "Signature": first["Signature"]}
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "malformed_signature")


async def test_a_signature_under_another_label_than_its_input_is_refused(gw: Gateway, alice: SigningKey) -> None:
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    headers["Signature"] = headers["Signature"].replace("sig1=", "sig2=", 1)
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "signature_label_mismatch")


async def test_a_repeated_covered_component_is_refused(gw: Gateway, alice: SigningKey) -> None:
    signer = alice.signer(gw, components=("@method", "@authority", "@path", "@path"))
    headers = signed_headers(gw, signer, "GET", "/orders")
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "duplicate_component")


async def test_an_oversize_signature_input_is_refused_before_parsing(gw: Gateway, alice: SigningKey) -> None:
    # RFC 9421 section 7.5.2: a huge Signature-Input costs parsing and base building
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    headers["Signature-Input"] = headers["Signature-Input"] + ';tag="' + "x" * 5000 + '"'
    assert await refused_because(gw, await send(gw, "GET", "/orders", headers), "oversize_signature")


@pytest.mark.parametrize("value", [
    'sig1=("@method" "@path";req);created=1;keyid="k";nonce="n"',
    'sig1=("@query-param";name="id");created=1;keyid="k";nonce="n"',
    "sig1=not-an-inner-list",
    "sig1=(\"@method\"",
], ids=["RFC9421-2.4-req-parameter", "RFC9421-2.2.8-query-param-unsupported", "not-an-inner-list",
        "RFC8941-unterminated"])
async def test_a_signature_input_the_gateway_cannot_check_exactly_is_refused(
    gw: Gateway, alice: SigningKey, value: str,
) -> None:
    headers = signed_headers(gw, alice.signer(gw), "GET", "/orders")
    headers["Signature-Input"] = value
    response = await send(gw, "GET", "/orders", headers)
    assert response.status_code == 401 and response.json()["code"] == "auth.invalid_credentials"


# --- legitimate traffic ----------------------------------------------------------------------------


async def test_a_signed_get_reaches_the_upstream_as_its_consumer(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
) -> None:
    response = await send(gw, "GET", "/orders?page=2", signed_headers(gw, alice.signer(gw), "GET", "/orders?page=2"))
    assert response.status_code == 200
    assert upstream.seen[-1].raw_path == "/orders?page=2"
    assert (await gw.audit_records())[-1]["consumer_id"] == "alice"


@pytest.mark.parametrize("key", ["alice", "bob"], ids=["hmac-sha256", "ed25519"])
async def test_a_signed_post_reaches_the_upstream_with_its_body(
    gw: Gateway, alice: SigningKey, bob: SigningKey, upstream: UpstreamServer, key: str,
) -> None:
    signing = {"alice": alice, "bob": bob}[key]
    body = b'{"item": "widget", "qty": 3}'
    headers = signed_headers(gw, signing.signer(gw), "POST", "/orders", body, {"Content-Type": "application/json"})
    response = await send(gw, "POST", "/orders", headers, body)
    assert response.status_code == 200
    assert upstream.seen[-1].body == body
    assert upstream.seen[-1].header("content-digest") == content_digest(body)


async def test_a_route_with_declared_components_accepts_a_signature_that_covers_them(
    gw: Gateway, alice: SigningKey, upstream: UpstreamServer,
) -> None:
    signer = alice.signer(gw, components=("@method", "@target-uri", "content-type", "content-digest"),
                          digest="sha-512")
    headers = signed_headers(gw, signer, "POST", "/strict", b"{}", {"Content-Type": "application/json"})
    assert (await send(gw, "POST", "/strict", headers, b"{}")).status_code == 200


async def test_a_rotated_key_s_old_and_new_keys_both_verify_during_the_overlap(
    gw: Gateway, alice: SigningKey,
) -> None:
    keyring = gw.runtime.signing_keys
    assert keyring is not None
    issued = await keyring.rotate(alice.key_id, overlap_s=3600)
    assert issued is not None and issued.secret is not None
    new = SigningKey(issued.record.key_id, load_signing_secret(issued.secret))
    for key in (alice, new):
        response = await send(gw, "GET", "/orders", signed_headers(gw, key.signer(gw), "GET", "/orders"))
        assert response.status_code == 200, key.key_id
    gw.clock.advance(3600)
    assert (await send(gw, "GET", "/orders", signed_headers(gw, new.signer(gw), "GET", "/orders"))).status_code == 200
    response = await send(gw, "GET", "/orders", signed_headers(gw, alice.signer(gw), "GET", "/orders"))
    assert await refused_because(gw, response, "key_expired")


def test_the_kit_s_hmac_helper_signs_what_request_signer_signs() -> None:
    # A guard for the hand-built signatures above: they are the real thing, only with chosen parameters.
    secret = b"k" * 32
    facts = RequestFacts("GET", "http", "h", "/p", None)
    params: dict[str, int | str] = {"created": 1, "keyid": "sig_aaaaaaaaaaaa", "nonce": "n"}
    ours = _hmac_over(secret, facts, ("@method",), params)
    signer = RequestSigner("sig_aaaaaaaaaaaa", SigningSecret("hmac-sha256", hmac_secret=secret),
                           components=("@method",), include_alg=False, nonce=lambda: "n", clock=ManualClock(wall=1))
    assert signer.sign("GET", "http://h/p")["Signature"] == f"sig1=:{base64.b64encode(ours).decode()}:"
