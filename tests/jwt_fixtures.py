"""Shared JWT test kit: real keys, a real JWKS server on 127.0.0.1:0, and token builders.

Used by tests/unit/identity/test_jwks.py, test_jwt_tokens.py and tests/attacks/test_jwt_attacks.py.
Nothing here is a mock: the server is aiohttp.web on a loopback socket, keys come from
``cryptography`` and tokens are signed by PyJWT (or assembled byte by byte for forged ones).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from portcullis.config.model import JwtIssuerConfig
from portcullis.testing import catch_all, serve_app

ISS = "https://idp.example.test"
AUD = "portcullis-api"
NOW = 1_700_000_000.0  # ManualClock's default wall time
HS_SECRET = "s" * 64


@functools.cache
def rsa_key(name: str = "rsa-1", bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str = "ec-1", curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
    return ec.generate_private_key(curves[curve])


@functools.cache
def ed_key(name: str = "ed-1") -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(private: Any, kid: str | None, *, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``private`` with ``kid``/``alg``/``use`` set as asked."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk.update({"use": "sig", **extra})
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def claims(now: float = NOW, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "user-1", "iat": int(now), "exp": int(now) + 600}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def sign(body: dict[str, Any], key: Any, alg: str = "RS256", **headers: Any) -> str:
    return jwt.encode(body, key, algorithm=alg, headers=headers or None)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, signature: bytes = b"") -> str:
    """A token assembled by hand, for headers and signatures PyJWT refuses to produce."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64u(h)}.{b64u(p)}.{b64u(signature)}"


def issuer(**overrides: Any) -> JwtIssuerConfig:
    fields: dict[str, Any] = {
        "name": "idp", "issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"], "leeway": "30s",
    }
    fields.update(overrides)
    return JwtIssuerConfig.model_validate(fields)


@dataclass
class JwksServer:
    """A real JWKS endpoint. Set ``keys``, ``status``, ``content_type``, ``body`` or ``hang``;
    ``hits`` counts every request that reached it. ``chunked`` sends no Content-Length."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    content_type: str = "application/json"
    body: bytes | None = None
    hang: bool = False
    chunked: bool = False
    hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.hang:
            await self.release.wait()
        payload = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        if not self.chunked:
            return web.Response(body=payload, status=self.status, content_type=self.content_type)
        response = web.StreamResponse(status=self.status, headers={"Content-Type": self.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 16384):
            await response.write(payload[start:start + 16384])
        await response.write_eof()
        return response

    @property
    def uri(self) -> str:
        return self.url + "/.well-known/jwks.json"


@asynccontextmanager
async def serve_jwks(keys: list[dict[str, Any]] | None = None) -> AsyncIterator[JwksServer]:
    server = JwksServer(keys=list(keys or []))
    async with serve_app(catch_all(server.handle)) as port:
        server.url = f"http://127.0.0.1:{port}"
        try:
            yield server
        finally:
            server.release.set()
