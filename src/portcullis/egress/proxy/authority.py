"""The interception CA: made once by ``portcullis ca init``, then used to mint a leaf certificate per host.

Why the gateway has a CA at all: a route with ``intercept: true`` wants path rules, credential
injection and per-request budgets inside an HTTPS tunnel, and the only way to read a tunnel is to
end its TLS at the gateway with a certificate the client accepts for the host it asked for. The
client must trust this CA for that; the proxy door section of ``docs/egress.md`` says what that trust gives away.

What is made, and why:

- the CA: an ECDSA P-256 key and a self-signed certificate, ``CA:TRUE, pathlen:0`` (it can sign
  leaves, never another CA), key usage ``keyCertSign, cRLSign`` only, optional name constraints
  (``permitted`` DNS names: a client that honours them, OpenSSL and Node's among them, refuses a
  leaf this CA mints for any other name, so a stolen key cannot impersonate the whole web);
- the key file is created with mode 0600 and ``O_EXCL`` (never world-readable, not even for a
  moment; an existing file is never overwritten unless the operator says ``--force``);
- a leaf per host: a fresh P-256 key, the host as its only subject alternative name (DNS name or
  IP address), ``serverAuth`` only, valid from an hour ago (clock skew) for ``leaf_days`` and never
  past the CA's own end. Leaves live in a bounded LRU cache and are minted again at half their life.

Python's ``ssl`` loads a certificate only from a file, so a minted leaf is written to a private
directory (0700, files 0600), loaded into its ``SSLContext`` and unlinked at once; that work runs
in a thread (``asyncio.to_thread``), off the event loop. Concurrent requests for one host share
one minting.

What it refuses to do: sign a CA, sign for a wildcard, or keep a leaf's private key anywhere but
in the context that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from portcullis.clock import Clock

__all__ = ["CaFiles", "CaUnusable", "CertificateAuthority", "create_ca"]

_SKEW = dt.timedelta(hours=1)


class CaUnusable(Exception):
    """The CA files cannot be used (missing, unreadable, not a CA, key does not match, expired).
    ``reason`` is a fixed token; never a key's content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CaFiles:
    cert_file: Path
    key_file: Path
    fingerprint_sha256: str
    not_after: dt.datetime


def create_ca(cert_file: Path, key_file: Path, *, common_name: str, days: int, clock: Clock,
              permitted: tuple[str, ...] = (), force: bool = False) -> CaFiles:
    """Make a CA key and certificate and write them (key 0600, created exclusively). Blocking I/O."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = dt.datetime.fromtimestamp(clock.wall(), dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Portcullis egress interception")])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if permitted:
        builder = builder.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d.lower().removeprefix("*.")) for d in permitted],
            excluded_subtrees=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_private(key_file, key_pem, force=force)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CaFiles(cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex(":"), cert.not_valid_after_utc)


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if force:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(slots=True)
class _Leaf:
    context: ssl.SSLContext
    renew_at: float  # wall time


class CertificateAuthority:
    """Leaf TLS contexts for intercepted hosts, minted by this CA, cached (LRU, ``max_leaves``)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, clock: Clock,
                 leaf_days: int = 7, max_leaves: int = 1024) -> None:
        self._cert = cert
        self._key = key
        self._clock = clock
        self._leaf_days = leaf_days
        self._max = max_leaves
        self._leaves: OrderedDict[str, _Leaf] = OrderedDict()
        self._minting: dict[str, asyncio.Future[_Leaf]] = {}
        self._dir = tempfile.mkdtemp(prefix="portcullis-leaves-")  # 0700

    @classmethod
    def load(cls, cert_file: Path, key_file: Path, *, clock: Clock, leaf_days: int = 7,
             max_leaves: int = 1024) -> CertificateAuthority:
        """Read and check the CA files (blocking I/O: at start-up or in a thread)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError):
            raise CaUnusable("ca_files_unreadable") from None
        if key_file.stat().st_mode & 0o077:
            raise CaUnusable("ca_key_readable_by_others")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaUnusable("ca_key_not_ec")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise CaUnusable("not_a_ca") from None
        if not constraints.ca:
            raise CaUnusable("not_a_ca")
        public = cert.public_key()
        matches = isinstance(public, ec.EllipticCurvePublicKey) and public.public_numbers() == \
            key.public_key().public_numbers()
        if not matches:
            raise CaUnusable("ca_key_mismatch")
        if cert.not_valid_after_utc.timestamp() <= clock.wall():
            raise CaUnusable("ca_expired")
        return cls(cert, key, clock=clock, leaf_days=leaf_days, max_leaves=max_leaves)

    @property
    def certificate_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cached(self) -> int:
        return len(self._leaves)

    async def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``host`` (minted now, or from the cache)."""
        leaf = self._leaves.get(host)
        if leaf is not None and leaf.renew_at > self._clock.wall():
            self._leaves.move_to_end(host)
            return leaf.context
        pending = self._minting.get(host)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self._mint, host))
            self._minting[host] = pending
            pending.add_done_callback(lambda _: self._minting.pop(host, None))
        leaf = await asyncio.shield(pending)
        self._leaves[host] = leaf
        self._leaves.move_to_end(host)
        while len(self._leaves) > self._max:
            self._leaves.popitem(last=False)
        return leaf.context

    def mint_pem(self, host: str) -> tuple[bytes, bytes]:
        """A leaf certificate and its key for ``host``, as PEM (for ``portcullis ca`` checks and tests)."""
        cert, key = self._leaf(host)
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    def _leaf(self, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        now = dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC)
        not_after = min(now + dt.timedelta(days=self._leaf_days), self._cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert, key

    def _mint(self, host: str) -> _Leaf:
        cert_pem, key_pem = self.mint_pem(host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
        context.set_alpn_protocols(["http/1.1"])  # requests inside are read as HTTP/1.1, never h2
        fd, path = tempfile.mkstemp(dir=self._dir, suffix=".pem")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(cert_pem + self.certificate_pem + key_pem)
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
        return _Leaf(context, self._clock.wall() + self._leaf_days * 86400 / 2)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)
