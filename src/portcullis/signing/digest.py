"""Content-Digest (RFC 9530): make one for a body, and check one against the body actually received.

Why the gateway checks it itself: a signature covers the ``content-digest`` header, not the body;
only comparing the header with a digest of the bytes that arrived binds the signature to the body.
So a signed route always has its whole body before the check (signature routes are buffered).

Rules: the field is an RFC 8941 dictionary parsed by ``http_sf``; ``sha-256`` and ``sha-512`` are
understood, other algorithms are ignored (RFC 9530 section 2), at least one understood digest must
be present, and every understood digest present must match (compared in constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

import http_sf

from portcullis.errors import Unauthenticated

__all__ = ["DIGEST_ALGORITHMS", "check_content_digest", "content_digest"]

DigestAlgorithm = Literal["sha-256", "sha-512"]
DIGEST_ALGORITHMS: dict[str, str] = {"sha-256": "sha256", "sha-512": "sha512"}


def content_digest(body: bytes, algorithm: DigestAlgorithm = "sha-256") -> str:
    """The ``Content-Digest`` value for ``body``: ``sha-256=:<base64>:``."""
    digest = hashlib.new(DIGEST_ALGORITHMS[algorithm], body).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode('ascii')}:"


def check_content_digest(values: Sequence[bytes], body: bytes) -> None:
    """Raise ``Unauthenticated`` unless ``values`` (the field's lines) carry a matching digest of ``body``."""
    if not values:
        raise Unauthenticated("missing_digest")
    try:
        parsed = http_sf.parse(b", ".join(values), tltype="dictionary", on_duplicate_key=_refuse_duplicate)
    except (http_sf.StructuredFieldError, ValueError):
        raise Unauthenticated("malformed_digest") from None
    if not isinstance(parsed, dict):  # pragma: no cover - a dictionary was asked for
        raise Unauthenticated("malformed_digest")
    checked = 0
    for name, member in parsed.items():
        hash_name = DIGEST_ALGORITHMS.get(name)
        if hash_name is None:
            continue
        value = member[0] if isinstance(member, tuple) else member
        if not isinstance(value, bytes):
            raise Unauthenticated("malformed_digest")
        if not hmac.compare_digest(hashlib.new(hash_name, body).digest(), value):
            raise Unauthenticated("digest_mismatch")
        checked += 1
    if not checked:
        raise Unauthenticated("digest_unsupported")


def _refuse_duplicate(key: str, _context: str) -> None:
    raise ValueError(f"duplicate member {key!r}")
