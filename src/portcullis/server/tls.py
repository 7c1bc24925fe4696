"""TLS for a listener: the server context from a policy, contexts swapped on reload, the peer's certificate.

Why here: both listeners take their ``ssl.SSLContext`` from ``server_context``, so the API listener
(our server) and the admin listener (uvicorn) apply one TLS policy: TLS 1.2 at least (1.0 and 1.1
are never offered, RFC 8996), the configured TLS 1.2 cipher list, no renegotiation (client-initiated
renegotiation is a CPU-exhaustion lever and was the vector of CVE-2009-3555), no TLS compression
(CRIME), and, with a client CA, client certificates verified by OpenSSL: chain to one of the client
CAs only (never the system's), validity dates, key usage and the clientAuth purpose
(OpenSSL's ``ssl_client`` check), and revocation when CRLs are given.

Reload without a restart (``follow``): ``loop.create_server`` binds one context for the life of the
socket, so the listening context gets an SNI callback (OpenSSL calls it for every ClientHello, with
or without a server name) that moves the new connection onto the current context
(``SSLObject.context``: OpenSSL's ``SSL_set_SSL_CTX``). That swaps the certificate, its key and
the trust store (client CAs and CRLs); what OpenSSL copied into the connection before the callback
(versions, ciphers, whether a client certificate is asked for) stays the listening context's, so
those need a restart, as the reload reports for any ``listen`` change.

``TlsPeer``: what one connection's handshake established, read once when the connection is made
(the peer's certificate as DER, the version, the cipher) and handed to every request on it in the
scope's ``extensions`` (``TLS_PEER_KEY``, plus the ASGI TLS extension ``tls``). Parsing the
certificate is left to whoever needs it, once per connection (``TlsPeer.memo``): a route that does
not look at it pays nothing per request.

What it refuses to do: decide who a certificate belongs to (``identity/client_certs.py`` does).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TLS_EXTENSION_KEY", "TLS_PEER_KEY", "TlsFilesInvalid", "TlsPeer", "TlsSettings", "follow",
           "server_context"]

# ``scope["extensions"][TLS_PEER_KEY]``: the connection's ``TlsPeer`` (our server only).
TLS_PEER_KEY = "portcullis.tls_peer"
# ``scope["extensions"]["tls"]``: the ASGI TLS extension (https://asgi.readthedocs.io/en/latest/specs/tls.html).
TLS_EXTENSION_KEY = "tls"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# The ASGI TLS extension gives the version as the protocol's number.
_VERSION_NUMBERS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class TlsFilesInvalid(Exception):
    """A certificate, key, CA or CRL file could not be loaded; ``what`` names the setting."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What ``server_context`` needs: the files and the policy (the server does not read the config)."""

    cert_file: str
    key_file: str
    min_version: str = "1.2"
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    client_ca_file: str | None = None
    client_crl_file: str | None = None
    client_auth: str = "optional"  # or "required"


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context for ``settings``; raises ``TlsFilesInvalid`` naming the file setting that failed.

    Reads files: call it off the event loop where that matters (a reload builds it in its worker).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.min_version]
    context.set_ciphers(settings.ciphers)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load(context.load_cert_chain, "cert_file/key_file", settings.cert_file, settings.key_file)
    if settings.client_ca_file is not None:
        _load(context.load_verify_locations, "client_ca_file", settings.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if settings.client_auth == "required" else ssl.CERT_OPTIONAL
        if settings.client_crl_file is not None:
            _load(context.load_verify_locations, "client_crl_file", settings.client_crl_file)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def _load(method: Callable[..., Any], what: str, *paths: str) -> None:
    try:
        method(*paths)
    except (OSError, ssl.SSLError, ValueError) as exc:  # file missing or unreadable, or not PEM
        raise TlsFilesInvalid(what, type(exc).__name__ if not str(exc) else str(exc)) from exc


def follow(listening: ssl.SSLContext, current: Callable[[], ssl.SSLContext | None]) -> ssl.SSLContext:
    """Make ``listening`` move each new connection onto ``current()`` (when it returns a context).

    ``current`` is called in OpenSSL's ClientHello callback: it must be quick and must not raise.
    """

    def switch(ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        target = current()
        if target is not None and target is not ssl_object.context:
            ssl_object.context = target

    listening.sni_callback = switch
    return listening


@dataclass(slots=True, eq=False)
class TlsPeer:
    """One TLS connection's facts: the client's certificate (DER, verified by the handshake) or ``None``.

    ``memo`` is for readers that derive something from the certificate (the parsed identity), so it
    is derived once per connection, however many requests the connection carries.
    """

    der: bytes | None
    version: str | None
    cipher: str | None
    memo: dict[str, Any] = field(default_factory=dict)
    _asgi: dict[str, Any] | None = None

    @classmethod
    def from_ssl_object(cls, ssl_object: ssl.SSLObject) -> TlsPeer:
        cipher = ssl_object.cipher()
        return cls(ssl_object.getpeercert(binary_form=True), ssl_object.version(), cipher[0] if cipher else None)

    def asgi_extension(self) -> dict[str, Any]:
        """The ASGI TLS extension's dict, built once per connection.

        ``client_cert_chain`` holds the leaf only (Python 3.11 does not expose the verified chain);
        ``client_cert_name`` and ``cipher_suite`` are ``None`` (the spec allows it): the name would cost a
        parse per connection that most routes never use, and Python names ciphers rather than numbering them.
        """
        if self._asgi is None:
            self._asgi = {
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(self.der)] if self.der else [],
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": _VERSION_NUMBERS.get(self.version or ""),
                "cipher_suite": None,
            }
        return self._asgi
