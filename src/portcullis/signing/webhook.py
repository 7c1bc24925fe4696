"""The common webhook signature scheme (Stripe's shape): ``t=<unix time>,v1=<hex HMAC-SHA256>``.

The MAC is HMAC-SHA256 over ``"<t>.<raw body>"`` with the endpoint's shared secret, hex-encoded.
A header may carry several ``v1`` values (a sender rotating its secret signs with both), and other
schemes (``v0=…``) are ignored. This module makes and parses the header; the gateway's check, with
the timestamp window and the replay guard, is ``identity/webhook_signatures.py``.

What it refuses: a header without exactly one ``t`` or without any ``v1``, a ``t`` that is not a
plain decimal, a ``v1`` that is not 64 hex digits, and headers over ``MAX_HEADER_BYTES``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from portcullis.errors import Unauthenticated

__all__ = ["MAX_HEADER_BYTES", "WebhookSignature", "parse_webhook_signature", "webhook_signature_header",
           "webhook_signatures_match"]

MAX_HEADER_BYTES = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class WebhookSignature:
    """A parsed header: the signed timestamp and every ``v1`` MAC (bytes)."""

    timestamp: int
    macs: tuple[bytes, ...]


def webhook_signature_header(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header a sender puts on ``body`` at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body).hex()}"


def parse_webhook_signature(value: bytes) -> WebhookSignature:
    if len(value) > MAX_HEADER_BYTES:
        raise Unauthenticated("oversize_signature")
    timestamps: list[int] = []
    macs: list[bytes] = []
    for part in value.decode("latin-1").split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            raise Unauthenticated("malformed_signature")
        if name == "t":
            if not item.isascii() or not item.isdigit() or len(item) > 12:
                raise Unauthenticated("malformed_signature")
            timestamps.append(int(item))
        elif name == "v1":
            if not _HEX64.fullmatch(item):
                raise Unauthenticated("malformed_signature")
            macs.append(bytes.fromhex(item))
    if len(timestamps) != 1 or not macs:
        raise Unauthenticated("malformed_signature")
    return WebhookSignature(timestamps[0], tuple(macs))


def webhook_signatures_match(signature: WebhookSignature, secret: bytes, body: bytes) -> bool:
    """Whether any ``v1`` is the MAC of ``body`` at the signed time under ``secret`` (constant time each)."""
    expected = _mac(secret, signature.timestamp, body)
    found = False
    for mac in signature.macs:
        found |= hmac.compare_digest(expected, mac)
    return found


def _mac(secret: bytes, timestamp: int, body: bytes) -> bytes:
    return hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).digest()
