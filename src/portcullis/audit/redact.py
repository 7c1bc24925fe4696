"""Masking before a record or a log line leaves memory: keys, admin tokens, passwords, secrets, e-mail
addresses and card numbers.

Why here and not at the sinks: every sink (file, database, a later log shipper) must get the
same masked record, so masking happens once, when the record is built. Patterns are compiled once.
It runs on every string of every record, so ``redact_text`` first asks a cheap prefilter
(``might_hold_a_secret``: the literal prefixes, scheme words and digit count the masks need) and
returns the string untouched when it says no, which is what nearly every path, user agent and
decision gets.

What it refuses to do: guess at arbitrary secrets in free text. It masks known shapes (ours,
JWTs, scheme credentials, the provider key formats below, e-mail addresses, Luhn-valid card
numbers) and the values of secret-named parameters; anything else stays, which is why request
bodies and headers other than the user agent are never audited.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = [
    "IDENTIFIER_FIELDS", "MASK", "PROVIDER_KEY_SHAPES", "is_sensitive_name", "might_hold_a_secret", "redact_headers",
    "redact_nested", "redact_query", "redact_text",
]

MASK = "[REDACTED]"

# A parameter or header name whose value is a secret. ``pass`` alone counts only as a whole word
# (``pass``, ``user_pass``, ``a[pass]``, ``userPass``), so ``compass`` and ``passage`` do not.
_SENSITIVE_NAME = re.compile(
    r"token|key|secret|passw|pass[_\-]?(?:word|phrase|wd|code)|pwd|auth|signature|sig$|^sig|session|cookie"
    r"|credential|code$|otp|(?:^|[^a-z0-9])pass(?:$|[^a-z])|(?-i:[a-z0-9]Pass)(?:$|[^a-z])",
    re.I,
)
_NAME_HINT = re.compile(r"token|key|secret|pass|pwd|auth|sig|session|cookie|credential|code|otp")  # lower-cased
# API keys (``pcl_``) and admin tokens (``pca_``, identity.admin_tokens) share one shape: prefix, id, secret.
_API_KEY = re.compile(r"(pc[la])_([a-z0-9]{4,32})_[A-Za-z0-9_\-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic|Digest|Token|ApiKey)\s+[A-Za-z0-9._~+/=\-]+", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
# A card number stands apart from its neighbours: a digit run inside a word (a hex request id or
# key id such as ``5607377059180f3e…``) is an identifier, and masking it broke correlation.
_CARD = re.compile(r"(?<!\w)(?:\d[ \-]?){12,18}\d(?!\w)")

# Provider key shapes, each kept with its public prefix (which says what leaked, not the secret)
# and masked after it. The key must not continue a word on its left, so ``task-…`` and ``ask_live_…``
# stay. Sources: GitHub's "Supported secret scanning patterns" and "Behind GitHub's new
# authentication token formats" (github.blog, 2021-04-05: ``gh[pousr]_`` + 36 base62 with a
# checksum, ``github_pat_`` + 22 + ``_`` + 59); gitleaks config/gitleaks.toml rules
# ``anthropic-api-key``, ``openai-api-key``, ``slack-*-token``, ``aws-access-token``,
# ``stripe-access-token``, ``gcp-api-key``; Stripe's "API keys" docs (``sk_``/``rk_`` + ``live``/``test``,
# webhook secrets ``whsec_``); AWS IAM "Unique identifiers" (``AKIA`` long-term, ``ASIA``
# temporary, 20 uppercase alphanumerics); Google Cloud "API keys" (``AIza`` + 35).
# Minimum lengths are below the published ones so a shortened copy is still masked.
PROVIDER_KEY_SHAPES: tuple[tuple[str, str], ...] = (
    ("anthropic", r"(sk-ant-)[A-Za-z0-9_\-]{20,}"),  # sk-ant-api03-… / sk-ant-admin01-…
    ("openai-project", r"(sk-(?:proj|svcacct|admin|None)-)[A-Za-z0-9_\-]{20,}"),
    ("openai-legacy", r"(sk-)[A-Za-z0-9]{32,}"),  # sk- + 48 base62; hyphenated words stay
    ("github", r"(gh[pousr]_)[A-Za-z0-9]{30,}"),  # ghp_ gho_ ghu_ ghs_ ghr_
    ("github-fine-grained", r"(github_pat_)[A-Za-z0-9_]{22,}"),
    ("slack", r"(xox[abprs]-)[A-Za-z0-9\-]{10,}"),  # xoxb- xoxp- xoxa- xoxr- xoxs-
    ("aws-access-key-id", r"(AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ("stripe", r"((?:sk|rk)_(?:live|test|prod)_)[A-Za-z0-9]{10,}"),
    ("stripe-webhook", r"(whsec_)[A-Za-z0-9]{20,}"),
    ("google-api-key", r"(AIza)[A-Za-z0-9_\-]{35}(?![A-Za-z0-9_\-])"),
)
_PROVIDER_KEY = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(shape for _, shape in PROVIDER_KEY_SHAPES) + ")")

# The prefilter: one regex pass for every literal prefix a mask needs ("@" for e-mails), a
# lower-cased look for a credential scheme (only when there is a space), and for cards 13 digits
# in a row once spaces and hyphens are dropped (one C-level ``bytes.translate``). Measured per
# string, all three cost less than ``_CARD`` alone scanning a user agent that holds nothing.
_LITERAL_HINT = re.compile(r"pc[la]_|eyJ|@|sk[-_]|rk_|gh[pousr]_|github_pat_|xox[abprs]-|A(?:KIA|SIA|Iza)|whsec_")
_SCHEMES = ("bearer", "basic", "digest", "token", "apikey")
_DIGITS_AS_D = bytes(100 if 48 <= b <= 57 else 46 for b in range(256))  # digit -> "d", other -> "."
_THIRTEEN_DIGITS = b"d" * 13


def might_hold_a_secret(text: str) -> bool:
    """The cheap prefilter ``redact_text`` asks first: ``False`` means masking would change nothing.

    Callers with several strings join them with newlines and ask once (no shape spans a newline).
    """
    if _LITERAL_HINT.search(text) is not None:
        return True
    if " " in text:
        lowered = text.lower()
        if any(scheme in lowered for scheme in _SCHEMES):
            return True
    return _THIRTEEN_DIGITS in text.encode().translate(_DIGITS_AS_D, b" -")


_PLAIN = r"[A-Za-z0-9_.~\-]"
_PLAIN_QUERY = re.compile(f"{_PLAIN}+={_PLAIN}*(?:&{_PLAIN}+={_PLAIN}*)*")  # name=value pairs, nothing encoded

_SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
})


def is_sensitive_name(name: str) -> bool:
    """True when a parameter or header of this name carries a secret (its value is masked whole)."""
    # Most names hold none of the words; the case-insensitive regex costs several times this look.
    return _NAME_HINT.search(name.lower()) is not None and _SENSITIVE_NAME.search(name) is not None


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


def _mask_provider_key(m: re.Match[str]) -> str:
    return m[m.lastindex or 0] + MASK  # the one prefix group of the shape that matched


def redact_text(text: str) -> str:
    """Mask Portcullis keys and admin tokens (keeping the key or token id), JWTs, scheme credentials,
    provider keys (keeping their public prefix), e-mails and card numbers."""
    if not might_hold_a_secret(text):
        return text
    if "pcl_" in text or "pca_" in text:
        text = _API_KEY.sub(lambda m: f"{m.group(1)}_{m.group(2)}_{MASK}", text)
    if "eyJ" in text:
        text = _JWT.sub("[JWT]", text)
    text = _PROVIDER_KEY.sub(_mask_provider_key, text)
    if " " in text:
        text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _CARD.sub(_mask_card, text)


def redact_query(query: bytes | str) -> str:
    """A query string with the values of secret-named parameters replaced, the rest masked as text.

    Names are masked as text too: a key sent as a bare parameter (``?ghp_…``) is a name.
    """
    raw = query.decode("latin-1") if isinstance(query, bytes) else query
    if not raw:
        return ""
    # Nothing percent-encoded, so nothing hides from the prefilter, and re-quoting would give back
    # the same text: only the names need a look (parsing cost more than the rest of a record).
    # A name hint anywhere in the query (names or values) sends it to the per-name look; most
    # queries hold none, and one search over the whole string beats one per parameter.
    if (
        _PLAIN_QUERY.fullmatch(raw) and not might_hold_a_secret(raw)
        and (_NAME_HINT.search(raw.lower()) is None
             or not any(is_sensitive_name(part.partition("=")[0]) for part in raw.split("&")))
    ):
        return raw
    parts = []
    for name, value in parse_qsl(raw, keep_blank_values=True):
        shown = MASK if is_sensitive_name(name) else redact_text(value)
        parts.append(f"{quote(redact_text(name), safe='')}={quote(shown, safe='[]*@')}")
    return "&".join(parts)


def redact_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header pairs with credential-bearing values masked."""
    return [
        (k, MASK if k.lower() in _SENSITIVE_HEADERS or is_sensitive_name(k) else redact_text(v)) for k, v in pairs
    ]


# Fields an auditor correlates and searches by, made by the gateway or checked against an
# identifier pattern before they get here: they are kept exactly, never masked.
IDENTIFIER_FIELDS = frozenset({"request_id", "consumer_id", "key_id", "client_ip", "method", "route", "record_class",
                               "trace_id"})  # trace_id: 32 hex, only ever a parsed or generated W3C id


def redact_nested(value: Any) -> Any:
    """Every string in ``value`` through ``redact_text``, nested dicts and lists included.

    One prefilter over all the strings first (joined by newlines, as ``might_hold_a_secret`` allows):
    an egress call's record holds a dozen short strings and nearly always nothing to mask, and is
    then returned as it is, not copied.
    """
    if not might_hold_a_secret(nested_text(value)):
        return value
    return _redact_each(value)


def nested_text(value: Any) -> str:
    """Every string in ``value`` (nested dicts and lists included), joined by newlines: what the
    prefilter looks at once for them all."""
    strings: list[str] = []
    _strings_in(value, strings)
    return "\n".join(strings)


def _strings_in(value: Any, out: list[str]) -> None:
    # Leaves are handled in their container's loop: a record has a dozen strings and numbers for
    # each nested container, and a call per leaf was most of the cost.
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, _SEQUENCES):
        if isinstance(value, str):
            out.append(value)
        return
    for v in value:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, _CONTAINERS):
            _strings_in(v, out)


_SEQUENCES = (list, tuple)
_CONTAINERS = (dict, list, tuple)  # tuples of types: ``isinstance`` with an ``X | Y`` union is slower


def _redact_each(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_each(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_each(v) for v in value]
    return value
