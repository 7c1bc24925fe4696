"""The two signature algorithms a signed request may use (RFC 9421 section 3.3): hmac-sha256 and ed25519.

Why only these two: HMAC with a shared secret is what most API consumers can adopt in a day, and
Ed25519 lets a consumer keep its private key while the gateway holds only the public half; both
are deterministic, fixed-size and fast. RSA and ECDSA are left out on purpose: fewer algorithms,
fewer confusion attacks (a key carries its one algorithm, and nothing the client sends can make
the gateway use a key with another).

What this module refuses to do: write any cryptography of its own (``hmac``, ``hashlib`` and
``cryptography``'s Ed25519 do the work), or compare MACs in variable time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["ALGORITHMS", "Algorithm", "SigningSecret", "VerificationKey"]

Algorithm = Literal["hmac-sha256", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("hmac-sha256", "ed25519")


@dataclass(frozen=True, slots=True, repr=False)
class SigningSecret:
    """What a signer holds: an HMAC secret, or an Ed25519 private key."""

    algorithm: Algorithm
    hmac_secret: bytes | None = None
    private_key: Ed25519PrivateKey | None = None

    def __repr__(self) -> str:  # never the secret
        return f"SigningSecret({self.algorithm})"

    def sign(self, base: bytes) -> bytes:
        if self.algorithm == "hmac-sha256" and self.hmac_secret is not None:
            return hmac.new(self.hmac_secret, base, hashlib.sha256).digest()
        if self.algorithm == "ed25519" and self.private_key is not None:
            return self.private_key.sign(base)
        raise ValueError(f"no {self.algorithm} key material")


@dataclass(frozen=True, slots=True, repr=False)
class VerificationKey:
    """What the gateway holds for a key id: the HMAC secret, or the consumer's Ed25519 public key."""

    algorithm: Algorithm
    hmac_secret: bytes | None = None
    public_key: Ed25519PublicKey | None = None

    def __repr__(self) -> str:
        return f"VerificationKey({self.algorithm})"

    def verify(self, base: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's over ``base``; every failure is just False."""
        if self.algorithm == "hmac-sha256" and self.hmac_secret is not None:
            expected = hmac.new(self.hmac_secret, base, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        if self.algorithm == "ed25519" and self.public_key is not None:
            if len(signature) != 64:
                return False
            try:
                self.public_key.verify(signature, base)
            except InvalidSignature:
                return False
            return True
        return False
