"""Signatures on audit checkpoints: HMAC-SHA256 with a shared secret, or Ed25519.

Why sign checkpoints and not records: a signature per record would cost far more than the hash
that chains them (the writer handles 5,000+ records/s), while one signed checkpoint every N
records or T seconds fixes everything before it, because each record's hash covers the one
before it. Why two schemes: HMAC needs only a secret in the environment, but whoever can verify
can also forge; Ed25519 lets an auditor verify with the public key alone, so the gateway host is
the only place that can sign.

Key material comes from configuration (``audit.signing_key``, a ``SecretStr`` set from ``${ENV}``):
for ``hmac-sha256`` the secret itself (at least 32 characters); for ``ed25519`` the 32-byte
private seed in base64, or a PEM private key. ``key_id`` (the first 16 hex digits of SHA-256 over
the verifying key) is written into every checkpoint, so ``verify`` can say a checkpoint was
signed with another key rather than merely "bad signature".

What this module refuses to do: read keys from files or argv, or return a signer without a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portcullis.errors import SigningKeyInvalid

__all__ = ["CheckpointSigner", "Ed25519Signer", "HmacSigner", "SigningAlgorithm", "SigningKeyInvalid", "make_signer"]

SigningAlgorithm = Literal["hmac-sha256", "ed25519"]


class CheckpointSigner(Protocol):
    """Signs and checks checkpoint payloads (canonical JSON bytes)."""

    alg: str
    key_id: str

    def sign(self, payload: bytes) -> str:
        """The signature, base64url without padding."""
        ...

    def verify(self, payload: bytes, signature: str) -> bool:
        """True if ``signature`` is this key's signature over ``payload``."""
        ...


class HmacSigner:
    """HMAC-SHA256 with a shared secret: cheap, but a verifier holds the power to sign."""

    alg = "hmac-sha256"

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise SigningKeyInvalid("an hmac-sha256 signing key needs at least 32 bytes")
        self._secret = secret
        self.key_id = hashlib.sha256(b"portcullis-audit-hmac\n" + secret).hexdigest()[:16]

    def sign(self, payload: bytes) -> str:
        return _b64(hmac.digest(self._secret, payload, "sha256"))

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature)


class Ed25519Signer:
    """Ed25519: the gateway signs with the private key; ``verifier_only`` checks with the public one."""

    alg = "ed25519"

    def __init__(self, private: Ed25519PrivateKey | None, public: Ed25519PublicKey) -> None:
        self._private = private
        self._public = public
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def from_secret(cls, secret: str) -> Ed25519Signer:
        """From a base64 32-byte seed or a PEM private key."""
        text = secret.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(text.encode(), password=None)
                if not isinstance(key, Ed25519PrivateKey):
                    raise SigningKeyInvalid("the PEM key is not an Ed25519 private key")
            else:
                seed = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text
                                        else None, validate=True)
                if len(seed) != 32:
                    raise SigningKeyInvalid("an ed25519 signing key is a 32-byte seed in base64")
                key = Ed25519PrivateKey.from_private_bytes(seed)
        except (ValueError, TypeError, binascii.Error) as exc:
            if isinstance(exc, SigningKeyInvalid):
                raise
            raise SigningKeyInvalid("the ed25519 signing key is neither a base64 seed nor a PEM private key") from None
        return cls(key, key.public_key())

    @classmethod
    def verifier_only(cls, public_pem: bytes) -> Ed25519Signer:
        """A verifier from a PEM public key (``portcullis audit verify --public-key``); it cannot sign."""
        try:
            key = serialization.load_pem_public_key(public_pem)
        except ValueError:
            raise SigningKeyInvalid("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyInvalid("the PEM key is not an Ed25519 public key")
        return cls(None, key)

    def public_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, payload: bytes) -> str:
        if self._private is None:
            raise SigningKeyInvalid("this ed25519 key can only verify")
        return _b64(self._private.sign(payload))

    def verify(self, payload: bytes, signature: str) -> bool:
        try:
            self._public.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), payload)
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True


def make_signer(algorithm: SigningAlgorithm, secret: str) -> CheckpointSigner:
    """The signer for a configured key. Raises ``SigningKeyInvalid``."""
    if algorithm == "hmac-sha256":
        return HmacSigner(secret.encode())
    return Ed25519Signer.from_secret(secret)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
