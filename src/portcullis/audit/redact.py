"""Masking before a record leaves memory: keys, tokens, secrets, e-mail addresses and card numbers.

Why here and not at the sinks: every sink (file, database, a later log shipper) must get the
same masked record, so masking happens once, when the record is built. Patterns are compiled once;
each helper has a fast path that skips the regexes when a string cannot contain what they look for.
What it refuses to do: guess at arbitrary secrets in free text. It masks known shapes; anything
else stays, which is why request bodies and headers other than the user agent are never audited.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

__all__ = ["is_sensitive_name", "redact_headers", "redact_query", "redact_text"]

MASK = "[REDACTED]"
_SENSITIVE_NAME = re.compile(
    r"(token|key|secret|passw|pwd|auth|signature|sig$|^sig|session|cookie|credential|code$|otp)", re.I
)
_API_KEY = re.compile(r"pcl_([a-z0-9]{4,32})_[A-Za-z0-9_\-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic|Digest|Token|ApiKey)\s+[A-Za-z0-9._~+/=\-]+", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")
_DIGIT_RUN = re.compile(r"\d[ \-]?\d[ \-]?\d[ \-]?\d")  # cheap pre-check: no card without four digits
_SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
})


def is_sensitive_name(name: str) -> bool:
    return bool(_SENSITIVE_NAME.search(name))


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ \-]", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


def redact_text(text: str) -> str:
    """Mask Portcullis keys (keeping the key id), JWTs, scheme credentials, e-mails and card numbers."""
    if "pcl_" in text:
        text = _API_KEY.sub(lambda m: f"pcl_{m.group(1)}_{MASK}", text)
    if "eyJ" in text:
        text = _JWT.sub("[JWT]", text)
    if " " in text:
        text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    if _DIGIT_RUN.search(text):
        text = _CARD.sub(_mask_card, text)
    return text


def redact_query(query: bytes | str) -> str:
    """A query string with the values of secret-looking parameters replaced, the rest masked as text."""
    raw = query.decode("latin-1") if isinstance(query, bytes) else query
    if not raw:
        return ""
    parts = []
    for name, value in parse_qsl(raw, keep_blank_values=True):
        shown = MASK if is_sensitive_name(name) else redact_text(value)
        parts.append(f"{quote(name, safe='')}={quote(shown, safe='[]*@')}")
    return "&".join(parts)


def redact_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header pairs with credential-bearing values masked."""
    return [
        (k, MASK if k.lower() in _SENSITIVE_HEADERS or is_sensitive_name(k) else redact_text(v)) for k, v in pairs
    ]
