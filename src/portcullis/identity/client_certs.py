"""Client certificates to consumers: the names a verified certificate carries, and the rules that map them.

Why apart from the TLS stack: OpenSSL decides whether a certificate is valid (chain to a client CA,
dates, key usage, revocation; ``server/tls.py``); this module decides *whom* a valid certificate
names, which is policy. The same rules map a certificate seen on our own TLS connection and one a
trusted mesh describes in ``X-Forwarded-Client-Cert`` (``identity/xfcc.py``), so both read a
``CertIdentity``.

Matching is exact, on purpose (names are identities, not patterns):
- DNS names compare case-insensitively (DNS is, RFC 4343; RFC 6125 section 6.4.1), and nothing
  else is folded: a trailing dot, a wildcard SAN (``*.internal``), a Unicode or punycode look-alike
  (an IDN homograph) never equals the configured ASCII name;
- ``subject_cn`` applies only to a certificate without DNS, URI or email SANs: where SANs exist
  they are the certificate's names and a CN that matches while the SANs do not is ignored (RFC 6125
  section 6.4.4: the CN is a fallback only);
- a SPIFFE ID counts only when the certificate carries exactly one URI SAN and it is a well-formed
  ``spiffe://`` ID (X.509-SVID spec section 2); the trust domain is compared exactly;
- fingerprints are SHA-256 over the DER certificate.

A certificate read from the TLS connection must also carry the clientAuth extended key usage.
OpenSSL refuses one whose EKU lacks clientAuth, but accepts one with no EKU at all (any purpose,
RFC 5280 section 4.2.1.12); a certificate meant for a client says so here, or it maps to no one.

What it refuses to do: load files or talk to the network; no OCSP (CRLs are the TLS stack's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from portcullis.config.tls import CertRuleConfig
from portcullis.errors import Unauthenticated
from portcullis.identity.principal import Principal

__all__ = ["CertIdentity", "CertMapper", "identity_from_der"]


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """The names of one verified client certificate (from TLS or from a trusted mesh's header)."""

    fingerprint_sha256: str  # hex, lowercase
    subject: str  # RFC 4514, for the audit
    subject_cn: tuple[str, ...]
    san_dns: tuple[str, ...]
    san_uri: tuple[str, ...]
    san_email: tuple[str, ...]
    source: Literal["tls", "xfcc"]
    client_auth: bool = True  # the clientAuth EKU (a mesh's header does not say; the mesh checked it)

    @property
    def has_sans(self) -> bool:
        return bool(self.san_dns or self.san_uri or self.san_email)

    @property
    def spiffe_id(self) -> str | None:
        """The SPIFFE ID when the certificate is an X.509-SVID: exactly one URI SAN, ``spiffe://domain/path``."""
        if len(self.san_uri) != 1:
            return None
        uri = self.san_uri[0]
        domain, _, path = uri.removeprefix("spiffe://").partition("/")
        if not uri.startswith("spiffe://") or not domain or domain != domain.lower() or not path:
            return None
        if any(c in uri for c in "?#%") or "//" in path or path.endswith("/"):
            return None
        return uri


def identity_from_der(der: bytes) -> CertIdentity:
    """The names in a DER certificate the TLS handshake verified; ``Unauthenticated`` if unreadable."""
    try:
        cert = x509.load_der_x509_certificate(der)
        cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
        subject = cert.subject.rfc4514_string()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(san.get_values_for_type(x509.DNSName))
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
            emails = tuple(san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            dns, uris, emails = (), (), ()
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in eku
        except x509.ExtensionNotFound:
            client_auth = False
    except ValueError as exc:  # cryptography's parse errors are ValueErrors
        raise Unauthenticated("client_cert_unreadable") from exc
    return CertIdentity(hashlib.sha256(der).hexdigest(), subject, cns, dns, uris, emails, "tls", client_auth)


@dataclass(frozen=True, slots=True)
class _Rule:
    config: CertRuleConfig

    def match(self, ident: CertIdentity) -> str | None:
        """The matched value (the default consumer id), or ``None``."""
        c = self.config
        if c.fingerprints_sha256:
            return ident.fingerprint_sha256 if ident.fingerprint_sha256 in c.fingerprints_sha256 else None
        if c.san_dns is not None:
            # RFC 4343: ASCII case-insensitive; anything non-ASCII or dotted differently stays unequal.
            return c.san_dns if any(n.isascii() and n.lower() == c.san_dns for n in ident.san_dns) else None
        if c.san_uri is not None:
            return c.san_uri if c.san_uri in ident.san_uri else None
        if c.san_email is not None:
            return c.san_email if c.san_email in ident.san_email else None
        if c.spiffe_id is not None:
            return c.spiffe_id if ident.spiffe_id == c.spiffe_id else None
        if c.spiffe_trust_domain is not None:
            spiffe = ident.spiffe_id
            if spiffe is not None and spiffe.removeprefix("spiffe://").partition("/")[0] == c.spiffe_trust_domain:
                return spiffe
            return None
        if c.subject_cn is not None and not ident.has_sans:  # RFC 6125 section 6.4.4
            return c.subject_cn if c.subject_cn in ident.subject_cn else None
        return None


class CertMapper:
    """A route's ``auth.mtls.rules``, compiled once: a certificate's identity → a ``Principal``."""

    def __init__(self, rules: list[CertRuleConfig]) -> None:
        self._rules = [_Rule(r) for r in rules]

    def principal(self, ident: CertIdentity) -> Principal:
        """The first matching rule's consumer; ``Unauthenticated`` when none matches."""
        if not ident.client_auth:
            raise Unauthenticated("client_cert_not_for_client_auth")
        for rule in self._rules:
            value = rule.match(ident)
            if value is not None:
                cfg = rule.config
                return Principal(
                    consumer_id=cfg.consumer or value, method="mtls", key_id=f"sha256:{ident.fingerprint_sha256}",
                    scopes=frozenset(cfg.scopes), roles=frozenset(cfg.roles),
                    claims={"cert_subject": ident.subject, "cert_sha256": ident.fingerprint_sha256,
                            "cert_source": ident.source},
                )
        raise Unauthenticated("client_cert_no_rule")
