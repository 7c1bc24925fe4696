"""Certificates for the mutual-TLS tests, made with ``cryptography``: CAs, server and client certificates, CRLs.

Every test gets its own throwaway CA; nothing is checked in. ``Pki.client`` takes what the attack
tests vary (names, dates, extended key usage, issuer) so each case states only its difference.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
_KEY_USAGE = {k: False for k in ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                                 "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")}


def _usage(**on: bool) -> x509.KeyUsage:
    return x509.KeyUsage(**{**_KEY_USAGE, **on})


@dataclass
class Ca:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path
    serial: int
    der: bytes

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.der).hexdigest()


def new_ca(name: str) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(name, key, cert)


class Pki:
    """A client CA, a server CA and certificate, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.client_ca = new_ca("Portcullis client CA")
        self.server_ca = new_ca("Portcullis server CA")
        self.other_ca = new_ca("Some other CA")
        self.ca_file = self._write_pem("client-ca.pem", self.client_ca.cert)
        self.server_ca_file = self._write_pem("server-ca.pem", self.server_ca.cert)
        self.server = self.issue("server", issuer=self.server_ca, cn="127.0.0.1", ips=("127.0.0.1",),
                                 eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
        self._count = 0

    def _write_pem(self, name: str, cert: x509.Certificate) -> Path:
        path = self.dir / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(
        self, stem: str, *, issuer: Ca | None = None, cn: str | None = "client", dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (), emails: tuple[str, ...] = (), ips: tuple[str, ...] = (),
        eku: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
    ) -> ClientCert:
        """A leaf certificate (client by default) signed by ``issuer`` (the client CA by default)."""
        ca = issuer or self.client_ca
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before or NOW - datetime.timedelta(hours=1))
            .not_valid_after(not_after or NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.RFC822Name(e) for e in emails]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        cert = builder.sign(ca.key, hashes.SHA256())
        cert_path = self._write_pem(f"{stem}.pem", cert)
        key_path = self.dir / f"{stem}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return ClientCert(cert_path, key_path, serial, cert.public_bytes(serialization.Encoding.DER))

    def crl(self, revoked: tuple[int, ...] = (), *, name: str = "client.crl.pem") -> Path:
        """A current CRL from the client CA listing ``revoked`` serials."""
        ca = self.client_ca
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
                   .last_update(NOW - datetime.timedelta(minutes=5)).next_update(NOW + datetime.timedelta(days=1)))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - datetime.timedelta(
                    minutes=1)).build())
        path = self.dir / name
        path.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path

    def client_context(self, client: ClientCert | None = None) -> ssl.SSLContext:
        """A client context trusting the server CA, presenting ``client`` (reads files: off the loop)."""
        context = ssl.create_default_context(cafile=str(self.server_ca_file))
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context

    def tls_yaml(self, **extra: str) -> str:
        fields = {"cert_file": f'"{self.server.cert}"', "key_file": f'"{self.server.key}"',
                  "client_ca_file": f'"{self.ca_file}"', **extra}
        return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


def mtls_yaml(upstream_url: str, pki: Pki, routes: str, *, tls: dict[str, str] | None = None, top: str = "") -> str:
    """A gateway on our server with ``listen.tls`` from ``pki`` (client CA included), ``routes`` and ``top``."""
    from tests.conftest import gateway_yaml

    listen = f"listen: {{host: 127.0.0.1, port: 0, server: portcullis, tls: {pki.tls_yaml(**(tls or {}))}}}"
    text = gateway_yaml(upstream_url, top + routes)
    return text.replace("listen: {host: 127.0.0.1, port: 0}", listen, 1)
