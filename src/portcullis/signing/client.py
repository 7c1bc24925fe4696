"""The client side: sign a request so a Portcullis signature route accepts it.

``RequestSigner.sign`` returns the headers to add (``Content-Digest`` when there is a body,
``Signature-Input`` and ``Signature``); ``SignatureAuth`` does it for every ``httpx`` request.
The defaults are exactly what a route requires by default: ``@method``, ``@authority``, ``@path``,
``@query`` when the URL has a query, ``content-digest`` when there is a body, and the parameters
``created``, ``keyid``, ``nonce`` (a fresh random one each time) and ``alg``.

``requests`` is not a dependency of Portcullis, so there is no ``requests`` auth here; with
``requests``, call ``sign`` and pass the headers.

What it refuses to do: reuse a nonce, or put the secret anywhere but the MAC.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Generator, Iterable, Sequence
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_sf.dictionary import ser_dictionary

from portcullis.clock import Clock, SystemClock
from portcullis.signing.algorithms import Algorithm, SigningSecret
from portcullis.signing.digest import DigestAlgorithm, content_digest
from portcullis.signing.message import RequestFacts, signature_base, signature_params

__all__ = ["RequestSigner", "SignatureAuth", "load_signing_secret"]


def load_signing_secret(text: str | bytes, algorithm: Algorithm | None = None) -> SigningSecret:
    """The signing secret in a key file: a PEM Ed25519 private key, or the base64 HMAC secret that
    ``portcullis signing-keys create`` printed. ``algorithm`` None: a PEM is Ed25519, else HMAC."""
    raw = text.encode("ascii") if isinstance(text, str) else text
    raw = raw.strip()
    if algorithm == "ed25519" or (algorithm is None and raw.startswith(b"-----BEGIN")):
        key = serialization.load_pem_private_key(raw, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return SigningSecret("ed25519", private_key=key)
    try:
        secret = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ValueError("the HMAC secret must be base64 (as `portcullis signing-keys create` prints it)") from None
    if len(secret) < 16:
        raise ValueError("the HMAC secret is shorter than 16 bytes")
    return SigningSecret("hmac-sha256", hmac_secret=secret)


class RequestSigner:
    """Signs requests for one key id (RFC 9421, with RFC 9530 ``Content-Digest`` for bodies)."""

    def __init__(
        self, key_id: str, secret: SigningSecret, *, clock: Clock | None = None, label: str = "sig1",
        components: Sequence[str] | None = None, digest: DigestAlgorithm = "sha-256", include_alg: bool = True,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self._clock: Clock = clock or SystemClock()
        self._label = label
        self._components = tuple(components) if components is not None else None
        self._digest: DigestAlgorithm = digest
        self._alg = include_alg
        self._nonce = nonce or (lambda: secrets.token_urlsafe(16))

    def sign(self, method: str, url: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> dict[str, str]:
        """The headers to add to the request (``method`` ``url`` with ``headers`` and ``body``)."""
        parts = urlsplit(url)
        added: dict[str, str] = {}
        if body:
            added["Content-Digest"] = content_digest(body, self._digest)
        pairs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        pairs += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in added.items()]
        scheme = parts.scheme or "https"
        facts = RequestFacts(
            method=method.upper(), scheme=scheme, authority=RequestFacts.normal_authority(scheme, parts.netloc),
            path=parts.path or "/", query=parts.query or None, headers=pairs,
        )
        components = self._components if self._components is not None else self.default_components(facts, body)
        params: dict[str, int | str] = {"created": int(self._clock.wall()), "keyid": self.key_id,
                                        "nonce": self._nonce()}
        if self._alg:
            params["alg"] = self._secret.algorithm
        inner = signature_params(components, params)
        signature = self._secret.sign(signature_base(facts, components, inner))
        added["Signature-Input"] = ser_dictionary({self._label: inner})
        added["Signature"] = ser_dictionary({self._label: (signature, {})})
        return added

    @staticmethod
    def default_components(facts: RequestFacts, body: bytes) -> tuple[str, ...]:
        names = ["@method", "@authority", "@path"]
        if facts.query:
            names.append("@query")
        if body:
            names.append("content-digest")
        return tuple(names)


class SignatureAuth(httpx.Auth):
    """``httpx`` auth that signs every request: ``httpx.Client(auth=SignatureAuth(signer))``."""

    requires_request_body = True

    def __init__(self, signer: RequestSigner) -> None:
        self._signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() in ("content-type", "date")]
        for name, value in self._signer.sign(request.method, str(request.url), headers, request.content).items():
            request.headers[name] = value
        yield request
