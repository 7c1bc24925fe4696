"""Interop with an independent RFC 9421 implementation: the ``http-message-signatures`` package.

Its signer's requests verify at a real gateway, and our signer's requests verify with its verifier,
for both algorithms and with a body (Content-Digest, RFC 9530). Two implementations that agree on
the signature base of real requests are the best evidence that ours follows the RFC rather than
itself.
"""

from __future__ import annotations

import datetime

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from tests.conftest import Gateway, GatewayFactory, UpstreamServer
from tests.signing_fixtures import ed25519_key, hmac_key, signature_env, signature_yaml

from portcullis.signing import RequestSigner, SigningSecret

BODY = b'{"hello": "world"}'


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: UpstreamServer) -> Gateway:
    return await make_gateway(signature_yaml(upstream.url), env=signature_env())


def _their_signer(algorithm: type[algorithms.HTTPSignatureAlgorithm], key_id: str, key: object) -> HTTPMessageSigner:
    return HTTPMessageSigner(signature_algorithm=algorithm,
                             key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key}))


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
@pytest.mark.parametrize("body", [b"", BODY], ids=["get", "post-with-content-digest"])
async def test_a_request_signed_by_http_message_signatures_verifies_at_the_gateway(
    gw: Gateway, upstream: UpstreamServer, algorithm: str, body: bytes,
) -> None:
    if algorithm == "hmac-sha256":
        key = await hmac_key(gw, "alice")
        assert key.secret.hmac_secret is not None
        signer = _their_signer(algorithms.HMAC_SHA256, key.key_id, key.secret.hmac_secret)
    else:
        key = await ed25519_key(gw, "bob")
        signer = _their_signer(algorithms.ED25519, key.key_id, key.secret.private_key)
    method = "POST" if body else "GET"
    request = httpx.Request(method, f"{gw.base_url}/orders?page=1", content=body or None,
                            headers={"Content-Type": "application/json"} if body else {})
    components = ["@method", "@authority", "@path", "@query"]
    signer.sign(request, key_id=key.key_id, created=datetime.datetime.fromtimestamp(gw.clock.wall(), datetime.UTC),
                nonce="their-nonce-1", label="pyhms", covered_component_ids=components,
                body=body if body else None)
    response = await gw.client.send(request)
    assert response.status_code == 200, response.text
    assert upstream.seen[-1].body == body
    assert (await gw.audit_records())[-1]["consumer_id"] == ("alice" if algorithm == "hmac-sha256" else "bob")


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
def test_a_request_signed_by_portcullis_verifies_with_http_message_signatures(algorithm: str) -> None:
    if algorithm == "hmac-sha256":
        secret = b"s" * 32
        ours = SigningSecret("hmac-sha256", hmac_secret=secret)
        their_algorithm: type[algorithms.HTTPSignatureAlgorithm] = algorithms.HMAC_SHA256
        public: object = secret
    else:
        private = Ed25519PrivateKey.generate()
        ours = SigningSecret("ed25519", private_key=private)
        their_algorithm, public = algorithms.ED25519, private.public_key()
    signer = RequestSigner("sig_abcdefghijkl", ours)
    request = httpx.Request("POST", "https://api.example.com/orders?page=2", content=BODY,
                            headers={"Content-Type": "application/json"})
    for name, value in signer.sign(request.method, str(request.url), request.headers.items(), BODY).items():
        request.headers[name] = value
    verifier = HTTPMessageVerifier(signature_algorithm=their_algorithm,
                                   key_resolver=MappingKeyResolver(public_keys={"sig_abcdefghijkl": public},
                                                                   private_keys={}))
    [result] = verifier.verify(request, body=BODY, max_age=datetime.timedelta(minutes=5),
                               require_components=["@method", "@authority", "@path", "@query", "content-digest"])
    assert result.parameters["keyid"] == "sig_abcdefghijkl" and result.parameters["alg"] == algorithm
    assert result.body == BODY


def test_a_tampered_body_fails_http_message_signatures_too() -> None:
    # The other side of the interop: both implementations refuse the same forgery.
    secret = b"s" * 32
    signer = RequestSigner("sig_abcdefghijkl", SigningSecret("hmac-sha256", hmac_secret=secret))
    request = httpx.Request("POST", "https://api.example.com/orders", content=b'{"qty": 9}')
    for name, value in signer.sign("POST", str(request.url), (), BODY).items():
        request.headers[name] = value
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.HMAC_SHA256,
                                   key_resolver=MappingKeyResolver(public_keys={"sig_abcdefghijkl": secret},
                                                                   private_keys={}))
    with pytest.raises(InvalidSignature):
        verifier.verify(request, body=b'{"qty": 9}', max_age=datetime.timedelta(minutes=5))
