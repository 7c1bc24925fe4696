"""TLS settings of the listeners, client-certificate authentication and the trusted mesh header.

Why a module of its own: the listeners' TLS policy (versions, ciphers, client certificates), the
per-route ``auth.mtls`` rules and the ``xfcc`` trust list are one subject, and ``model.py`` is
already the largest module in the tree. ``model.py`` imports these and lists them in its ``__all__``.

Secure by default, refused at load when weaker:
- ``min_version`` is TLS 1.2 (1.3 negotiated whenever the client offers it); TLS 1.0 and 1.1 are
  refused at load, as RFC 8996 deprecates them;
- ``ciphers`` (the TLS 1.2 list; TLS 1.3 suites are all AEAD and fixed by OpenSSL) defaults to
  ECDHE with AES-GCM or ChaCha20-Poly1305, and a list that lets in any TLS 1.2 suite without an AEAD
  cipher or without ECDHE key exchange (no forward secrecy) is refused at load;
- a certificate rule matches one exact value; DNS names are compared case-insensitively (RFC 4343)
  and never with a trailing dot or a wildcard (see ``identity/client_certs.py``).
"""

from __future__ import annotations

import re
import ssl
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.config.types import ByteSize, Cidr

__all__ = [
    "DEFAULT_CIPHERS",
    "CertRuleConfig",
    "MtlsAuthConfig",
    "TlsConfig",
    "TlsPolicyConfig",
    "XfccConfig",
    "refused_ciphers",
]

# ECDHE key exchange, AEAD ciphers only (Mozilla's "intermediate" TLS 1.2 list, written as rules).
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")  # SPIFFE ID spec section 2.1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def refused_ciphers(ciphers: str) -> list[str]:
    """The TLS 1.2 suites ``ciphers`` lets in that are not AEAD with ECDHE; raises ValueError if none match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise ValueError("no cipher matches this list") from exc
    tls12 = [c for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"]  # older suites say SSLv3 or TLSv1
    if not tls12:
        raise ValueError("no TLS 1.2 cipher matches this list")
    return [c["name"] for c in tls12 if not c["aead"] or c["kea"] != "kx-ecdhe" or c["auth"] == "auth-null"]


class TlsPolicyConfig(_Model):
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted: `1.2` (default; 1.3 is negotiated whenever the client "
        "offers it) or `1.3`. TLS 1.0 and 1.1 are refused (RFC 8996).",
    )
    ciphers: str = Field(
        DEFAULT_CIPHERS, description="OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are fixed and all AEAD). A "
        "list admitting any suite without AEAD or without ECDHE key exchange is refused at load.",
    )

    @field_validator("min_version", mode="before")
    @classmethod
    def _modern_only(cls, value: Any) -> Any:
        text = str(value)
        if text in ("1", "1.0", "1.1", "TLSv1", "TLSv1.1"):
            raise ValueError("TLS 1.0 and 1.1 are refused (RFC 8996); use 1.2 or 1.3")
        return text

    @field_validator("ciphers")
    @classmethod
    def _aead_with_forward_secrecy(cls, value: str) -> str:
        weak = refused_ciphers(value)
        if weak:
            raise ValueError(f"suites without AEAD or ECDHE are refused: {', '.join(weak[:5])}")
        return value


class TlsConfig(TlsPolicyConfig):
    cert_file: str = Field(description="PEM certificate chain served to clients.")
    key_file: str = Field(description="PEM private key for the certificate.")
    client_ca_file: str | None = Field(
        None, description="PEM bundle of the CAs whose client certificates are accepted (mutual TLS). Only these "
        "are trusted for clients, never the system's CAs. API listener on `listen.server: portcullis` only.",
    )
    client_crl_file: str | None = Field(
        None, description="PEM file of certificate revocation lists for `client_ca_file`. When set, a client "
        "certificate is refused if revoked, and also when no current CRL from its issuer is in the file "
        "(fail closed).",
    )
    client_auth: Literal["optional", "required"] = Field(
        "optional", description="With `client_ca_file`: `required` refuses a handshake without a valid client "
        "certificate; `optional` accepts one without (routes decide with `auth.mtls`). A certificate that is "
        "presented is always verified: chain, dates, revocation, and the clientAuth extended key usage.",
    )

    @model_validator(mode="after")
    def _crl_needs_ca(self) -> TlsConfig:
        if self.client_crl_file is not None and self.client_ca_file is None:
            raise ValueError("client_crl_file needs client_ca_file")
        return self


class CertRuleConfig(_Model):
    subject_cn: str | None = Field(
        None, description="The subject's common name, exactly. Only for certificates with no DNS, URI or email "
        "subject alternative name: when a certificate has SANs, they name it (RFC 6125 section 6.4.4).",
    )
    san_dns: str | None = Field(
        None, description="A DNS subject alternative name, exactly (ASCII, compared case-insensitively; a "
        "trailing dot or a wildcard in the certificate never matches).",
    )
    san_uri: str | None = Field(None, description="A URI subject alternative name, exactly.")
    san_email: str | None = Field(None, description="An email (rfc822Name) subject alternative name, exactly.")
    spiffe_id: str | None = Field(
        None, description="A SPIFFE ID (`spiffe://trust-domain/path`), exactly. The certificate must carry exactly "
        "one URI SAN (an X.509-SVID).",
    )
    spiffe_trust_domain: str | None = Field(
        None, description="Any SPIFFE ID in this trust domain; without `consumer`, the SPIFFE ID is the consumer id.",
    )
    fingerprints_sha256: list[str] = Field(
        default_factory=list, description="SHA-256 fingerprints of the certificates (DER), hex with or without "
        "colons: a pinned allow-list.",
    )
    consumer: str | None = Field(
        None, description="Consumer id for a certificate this rule matches. Default: the matched value (the CN, "
        "SAN or SPIFFE ID); required for `fingerprints_sha256`.",
    )
    scopes: list[str] = Field(default_factory=list, description="Scopes the matched consumer gets.")
    roles: list[str] = Field(default_factory=list, description="Roles the matched consumer gets.")

    @field_validator("fingerprints_sha256")
    @classmethod
    def _hex_fingerprints(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            hexed = item.replace(":", "").lower()
            if not _HEX64.match(hexed):
                raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
            out.append(hexed)
        return out

    @field_validator("san_dns")
    @classmethod
    def _ascii_dns_name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_NAME.match(value.lower()):
            raise ValueError("an ASCII DNS name without a trailing dot or wildcard (IDNs in their xn-- form)")
        return value.lower() if value is not None else None

    @field_validator("spiffe_id")
    @classmethod
    def _spiffe(cls, value: str | None) -> str | None:
        if value is not None:
            domain, _, path = value.removeprefix("spiffe://").partition("/")
            if not value.startswith("spiffe://") or not _TRUST_DOMAIN.match(domain) or not path or path.endswith("/"):
                raise ValueError("expected spiffe://<lowercase trust domain>/<path>")
        return value

    @field_validator("spiffe_trust_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not _TRUST_DOMAIN.match(value):
            raise ValueError("a trust domain is lowercase letters, digits, '.', '-' or '_'")
        return value

    @model_validator(mode="after")
    def _exactly_one_match(self) -> CertRuleConfig:
        given = [k for k in ("subject_cn", "san_dns", "san_uri", "san_email", "spiffe_id", "spiffe_trust_domain")
                 if getattr(self, k) is not None]
        if self.fingerprints_sha256:
            given.append("fingerprints_sha256")
        if len(given) != 1:
            raise ValueError("a rule matches on exactly one of subject_cn, san_dns, san_uri, san_email, spiffe_id, "
                             "spiffe_trust_domain, fingerprints_sha256")
        if given == ["fingerprints_sha256"] and self.consumer is None:
            raise ValueError("a fingerprints_sha256 rule needs `consumer`")
        return self


class MtlsAuthConfig(_Model):
    rules: list[CertRuleConfig] = Field(
        min_length=1, description="How a verified client certificate maps to a consumer: the first rule that "
        "matches wins; a certificate no rule matches is refused (401).",
    )
    accept_xfcc: bool = Field(
        False, description="Also accept the client identity in `X-Forwarded-Client-Cert` (Envoy's format), only "
        "from a peer in `xfcc.trusted_peers`, mapped by the same rules. From any other peer the header is ignored.",
    )


class XfccConfig(_Model):
    trusted_peers: list[Cidr] = Field(
        min_length=1, description="Socket peers (CIDRs: the mesh's sidecars or front proxies) whose "
        "`X-Forwarded-Client-Cert` is believed. A dedicated list: a proxy trusted for X-Forwarded-For is not "
        "thereby trusted to vouch for certificates.",
    )
    max_bytes: ByteSize = Field(8192, description="Longest header accepted; a longer one is refused (401).")
    max_elements: int = Field(16, ge=1, le=256, description="Most comma-separated elements (hops) accepted.")
