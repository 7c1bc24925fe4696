"""Signed requests (RFC 9421 HTTP Message Signatures with RFC 9530 Content-Digest), client side.

The public API for consumers of a signature route::

    from portcullis.signing import RequestSigner, SignatureAuth, load_signing_secret

    signer = RequestSigner("sig_abc123def456", load_signing_secret(open("key.txt").read()))
    httpx.post(url, json=payload, auth=SignatureAuth(signer))

The gateway's verifier (``portcullis.identity.signatures``) builds its signature base with the
same ``message`` module, so the two sides cannot disagree on what is signed.
"""

from __future__ import annotations

from portcullis.signing.algorithms import ALGORITHMS, Algorithm, SigningSecret, VerificationKey
from portcullis.signing.client import RequestSigner, SignatureAuth, load_signing_secret
from portcullis.signing.digest import check_content_digest, content_digest
from portcullis.signing.webhook import webhook_signature_header

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "RequestSigner",
    "SignatureAuth",
    "SigningSecret",
    "VerificationKey",
    "check_content_digest",
    "content_digest",
    "load_signing_secret",
    "webhook_signature_header",
]
