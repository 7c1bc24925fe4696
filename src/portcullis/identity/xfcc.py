r"""``X-Forwarded-Client-Cert`` (Envoy's format), parsed strictly, to the ``CertIdentity`` of the last hop.

Why: where a service mesh terminates mutual TLS in front of the gateway, the client's certificate
reaches us only as this header. It is believed only from a socket peer in ``xfcc.trusted_peers``
(the policy checks that before calling here); from anyone else it is a forgery and is ignored (and
removed before forwarding, as every other gateway's identity header is).

The format (Envoy's "x-forwarded-client-cert" docs): elements separated by ``,``, one per proxy
hop; in each, ``key=value`` pairs separated by ``;``; keys ``By``, ``Hash``, ``Cert``, ``Chain``,
``Subject``, ``URI``, ``DNS``. A value holding ``,``, ``;``, ``=`` or ``"`` is double-quoted, with
``"`` escaped by a backslash; any other backslash pair is part of the value (a ``Subject``'s
RFC 4514 escapes such as ``\,``). Strictness: an unknown key, a repeated key (``DNS`` and ``URI``
may repeat: one per SAN), an unterminated quote, a control character, an empty element or pair,
a missing or malformed ``Hash`` (64 hex digits: the SHA-256 of the DER certificate) or a
``Subject`` that is not an RFC 4514 name refuses the whole header; so do one over ``max_bytes``
or ``max_elements``, non-ASCII bytes, and the header sent twice. A lenient parser here would
let a forged fragment inside a quoted value pass as a pair of its own.

Which element: the last. Each proxy appends (Envoy's ``APPEND_FORWARD``) one element describing
the client of the connection it terminated, so the last element was written by the hop we trust,
our immediate peer, about the certificate it verified itself. Earlier elements describe hops further
out, which we cannot vouch for, and a client can write any of them itself.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from portcullis.errors import Unauthenticated
from portcullis.identity.client_certs import CertIdentity

__all__ = ["XfccElement", "identity_from_xfcc", "parse_xfcc"]

XfccElement = dict[str, list[str]]

_KEYS = frozenset({"By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS"})
_REPEATABLE = frozenset({"URI", "DNS"})
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_xfcc(value: bytes, *, max_bytes: int, max_elements: int) -> list[XfccElement]:
    """Every element of one header value, in order; ``Unauthenticated`` for anything malformed."""
    if len(value) > max_bytes:
        raise Unauthenticated("xfcc_too_large")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise Unauthenticated("xfcc_malformed") from None
    elements: list[XfccElement] = []
    element: XfccElement = {}
    i, n = 0, len(text)
    while True:
        key_end = text.find("=", i)
        if key_end < 0:
            raise Unauthenticated("xfcc_malformed")
        key = text[i:key_end]
        if key not in _KEYS or (key in element and key not in _REPEATABLE):
            raise Unauthenticated("xfcc_malformed")
        i = key_end + 1
        if i < n and text[i] == '"':
            val, i = _quoted(text, i + 1)
        else:
            start = i
            while i < n and text[i] not in ",;":
                if text[i] in '"\\=' or not text[i].isprintable():
                    raise Unauthenticated("xfcc_malformed")
                i += 1
            val = text[start:i]
        element.setdefault(key, []).append(val)
        if i == n:
            elements.append(element)
            break
        if text[i] == ",":
            elements.append(element)
            element = {}
            if len(elements) >= max_elements:
                raise Unauthenticated("xfcc_too_many_elements")
        elif text[i] != ";":
            raise Unauthenticated("xfcc_malformed")  # text after a closing quote
        i += 1
        if i == n:
            raise Unauthenticated("xfcc_malformed")  # a trailing separator
    return elements


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The value of a quoted string starting after its opening quote, and the index after its closing one."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n or not text[i + 1].isprintable():
                raise Unauthenticated("xfcc_malformed")
            # Envoy escapes only the quote; any other escape belongs to the value (a DN's "\,").
            out.append(text[i + 1] if text[i + 1] == '"' else text[i:i + 2])
            i += 2
            continue
        if not c.isprintable():
            raise Unauthenticated("xfcc_malformed")
        out.append(c)
        i += 1
    raise Unauthenticated("xfcc_malformed")  # unterminated


def identity_from_xfcc(element: XfccElement) -> CertIdentity:
    """The certificate one element describes; it must name its ``Hash``."""
    hashes = element.get("Hash", [])
    if len(hashes) != 1 or not _HEX64.match(hashes[0]):
        raise Unauthenticated("xfcc_no_hash")
    subject_text = element.get("Subject", [""])[0]
    try:
        name = x509.Name.from_rfc4514_string(subject_text) if subject_text else x509.Name([])
    except ValueError:
        raise Unauthenticated("xfcc_malformed") from None
    cns = tuple(str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertIdentity(
        fingerprint_sha256=hashes[0].lower(), subject=name.rfc4514_string(), subject_cn=cns,
        san_dns=tuple(element.get("DNS", ())), san_uri=tuple(element.get("URI", ())), san_email=(), source="xfcc",
    )
