"""The gateway's check of a signed request (RFC 9421 with RFC 9530 Content-Digest) → ``Principal``.

Order of checks, cheapest and most telling first, each failure an ``Unauthenticated`` whose reason
goes to the audit (the client always sees the one ``auth.invalid_credentials``: no oracle):

1. size: ``Signature-Input`` plus ``Signature`` within ``max_header_bytes`` (``oversize_signature``);
2. parse: exactly one signature label, in both fields (``message.parse_signature``);
3. parameters: ``keyid``, ``created`` and ``nonce`` present; ``created`` within ``skew_s`` of now on
   both sides; ``expires``, when present, not passed;
4. coverage: every required component covered (``missing_component``), and ``content-digest``
   whenever the request has a body;
5. the key: known, active at now (not revoked, expired or before ``not_before``), of an algorithm
   the route allows, and equal to ``alg`` when the client names one (a key has exactly one
   algorithm, so an HMAC key can never be used as an Ed25519 one or the reverse);
6. the signature over the base rebuilt from this request;
7. the body's digest against ``Content-Digest``;
8. the nonce, claimed once in the nonce store for as long as the signature could be accepted
   (``replayed_nonce``). Last, so that only a valid signature can spend a nonce.

A store or vault outage is ``StoreUnavailable``; the caller denies (503), never admits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable, Unauthenticated, VaultError
from portcullis.identity.principal import Principal
from portcullis.identity.signing_keys import SigningKeyring
from portcullis.signing.digest import check_content_digest
from portcullis.signing.message import ParsedSignature, RequestFacts, parse_signature, signature_base
from portcullis.stores.base import NonceStore

__all__ = ["SignatureRules", "SignatureVerifier", "required_components"]

_MAX_NONCE = 128
# A requirement is met by any component that covers it: @target-uri covers the path, the query and
# the authority; @request-target the path and the query.
_COVERED_BY = {
    "@path": frozenset({"@path", "@target-uri", "@request-target"}),
    "@query": frozenset({"@query", "@target-uri", "@request-target"}),
    "@authority": frozenset({"@authority", "@target-uri"}),
}


@dataclass(frozen=True, slots=True)
class SignatureRules:
    """What one route demands of a signature (from its ``auth.signature`` config)."""

    algorithms: frozenset[str]
    components: tuple[str, ...] | None  # None: the defaults of ``required_components``
    skew_s: float
    max_header_bytes: int


def required_components(rules: SignatureRules, facts: RequestFacts, has_body: bool) -> list[str]:
    """The components this request's signature must cover."""
    if rules.components is not None:
        names = list(rules.components)
    else:
        names = ["@method", "@authority", "@path"]
        if facts.query:
            names.append("@query")
    if has_body and "content-digest" not in names:
        names.append("content-digest")
    return names


class SignatureVerifier:
    """Verifies signed requests against the keyring, and spends their nonces."""

    def __init__(self, keyring: SigningKeyring, nonces: NonceStore, *, clock: Clock) -> None:
        self.keyring = keyring
        self._nonces = nonces
        self._clock = clock

    async def verify(self, facts: RequestFacts, body: bytes, rules: SignatureRules) -> Principal:
        """The principal of a validly signed request; raises ``Unauthenticated`` or ``StoreUnavailable``."""
        inputs = facts.header_values("signature-input")
        signatures = facts.header_values("signature")
        if sum(map(len, inputs)) + sum(map(len, signatures)) > rules.max_header_bytes:
            raise Unauthenticated("oversize_signature")
        if not inputs or not signatures:
            raise Unauthenticated("malformed_signature")
        parsed = parse_signature(inputs, signatures)
        keyid, created, nonce = parsed.keyid, parsed.created, parsed.nonce
        if keyid is None or created is None or nonce is None:
            raise Unauthenticated("missing_parameter")
        if not nonce or len(nonce) > _MAX_NONCE:
            raise Unauthenticated("malformed_nonce")
        now = self._clock.wall()
        if created > now + rules.skew_s:
            raise Unauthenticated("created_in_future")
        if created < now - rules.skew_s:
            raise Unauthenticated("created_too_old")
        if parsed.expires is not None and now >= parsed.expires:
            raise Unauthenticated("signature_expired")
        has_body = bool(body)
        _check_coverage(parsed, required_components(rules, facts, has_body))
        try:
            loaded = await self.keyring.get(keyid)
        except VaultError as exc:  # the secret cannot be read: our fault, not the client's
            raise StoreUnavailable(f"vault: {type(exc).__name__}") from exc
        if loaded is None:
            raise Unauthenticated("unknown_key")
        state = loaded.record.state(now)
        if state != "active":
            raise Unauthenticated(f"key_{state}")
        algorithm = loaded.key.algorithm
        if algorithm not in rules.algorithms:
            raise Unauthenticated("algorithm_not_allowed")
        if parsed.alg is not None and parsed.alg != algorithm:
            raise Unauthenticated("alg_mismatch")
        if not loaded.key.verify(signature_base(facts, parsed.components, parsed.inner_list), parsed.signature):
            raise Unauthenticated("bad_signature")
        if has_body or facts.header_values("content-digest"):
            check_content_digest(facts.header_values("content-digest"), body)
        ttl = created + rules.skew_s - now + 1.0
        if parsed.expires is not None:
            ttl = min(ttl, parsed.expires - now + 1.0)
        if not await self._nonces.claim(f"{keyid}:{nonce}", max(ttl, 1.0)):
            raise Unauthenticated("replayed_nonce")
        record = loaded.record
        return Principal(consumer_id=record.consumer_id, method="signature", key_id=record.key_id,
                         scopes=record.scopes)


def _check_coverage(parsed: ParsedSignature, required: Sequence[str]) -> None:
    covered = set(parsed.components)
    for name in required:
        if not covered & _COVERED_BY.get(name, frozenset({name})):
            raise Unauthenticated(f"missing_component:{name}")
