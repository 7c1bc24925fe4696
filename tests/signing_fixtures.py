"""Shared kit for signed-request tests: a gateway with signature routes, real keys, and request builders.

Used by tests/attacks/test_signature_attacks.py and tests/integration/test_signature_flow.py. Keys
are issued through the same ``create_signing_key`` the CLI and the admin API use (HMAC secrets go
into the gateway's real vault); requests are signed by ``portcullis.signing`` and sent by httpx
to the gateway on a loopback socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.conftest import Gateway, gateway_yaml

from portcullis.identity.signing_keys import create_signing_key
from portcullis.signing import RequestSigner, SigningSecret, load_signing_secret
from portcullis.vault.vault import generate_master_key

ROUTES = """
routes:
  - {name: orders, path: "/orders", methods: [GET, POST], upstream: api, auth: {signature: {}}}
  - {name: order, path: "/orders/{id}", methods: [GET, DELETE], upstream: api, auth: {signature: {}}}
  - {name: hmac_only, path: "/hmac", methods: [GET], upstream: api, auth: {signature: {algorithms: [hmac-sha256]}}}
  - {name: strict, path: "/strict", methods: [POST], upstream: api,
     auth: {signature: {components: ["@method", "@target-uri", "content-type"], skew: 30s}}}
  - {name: admin_area, path: "/admin-area", methods: [GET], upstream: api, auth: {signature: {}}}
"""


def signature_env() -> dict[str, str]:
    return {"PORTCULLIS_SECRET_KEY": generate_master_key()}


def signature_yaml(upstream_url: str, extra: str = "") -> str:
    return gateway_yaml(upstream_url, extra + ROUTES, keys=False)


@dataclass
class SigningKey:
    """A consumer's key as the consumer holds it: the key id and the signing secret."""

    key_id: str
    secret: SigningSecret

    def signer(self, gw: Gateway, **options: object) -> RequestSigner:
        return RequestSigner(self.key_id, self.secret, clock=gw.clock, **options)  # type: ignore[arg-type]


async def hmac_key(gw: Gateway, consumer: str = "alice", scopes: Sequence[str] = ()) -> SigningKey:
    issued = await create_signing_key(gw.services.store, gw.services.vault, consumer, "hmac-sha256",
                                      clock=gw.clock, scopes=scopes)
    assert issued.secret is not None
    return SigningKey(issued.record.key_id, load_signing_secret(issued.secret))


async def ed25519_key(gw: Gateway, consumer: str = "bob") -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    issued = await create_signing_key(gw.services.store, gw.services.vault, consumer, "ed25519", clock=gw.clock,
                                      public_key=public_pem)
    return SigningKey(issued.record.key_id, SigningSecret("ed25519", private_key=private))


def signed_headers(gw: Gateway, signer: RequestSigner, method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None, *, sign_path: str | None = None,
                   sign_method: str | None = None, sign_authority: str | None = None) -> dict[str, str]:
    """Headers for ``method path`` on ``gw``, signed (optionally over another path, method or authority)."""
    extra = dict(headers or {})
    authority = sign_authority or f"127.0.0.1:{gw.port}"
    url = f"http://{authority}{sign_path or path}"
    return {**extra, **signer.sign(sign_method or method, url, extra.items(), body)}


async def send(gw: Gateway, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> httpx.Response:
    return await gw.client.request(method, path, headers=headers, content=body or None)
