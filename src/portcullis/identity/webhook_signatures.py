"""The gateway's check of a webhook signed in the common ``t=…,v1=…`` scheme → ``Principal``.

Why at the gateway: a webhook endpoint is public by nature (the sender has no API key of ours),
and every backend re-implementing the check gets the window or the comparison wrong. The route
names the sender (``consumer``), the vault secrets it signs with (two during a rotation), the
header, and the window.

Checks, in order: one header line; it parses (``signing/webhook.py``); ``t`` within ``tolerance_s``
of the gateway's clock on both sides; some ``v1`` matches a configured secret over ``"t.body"``;
then the signature is claimed once in the nonce store (the same store and window rule as RFC 9421
nonces), so the same delivery sent twice is refused (``replayed_nonce``). Secrets are read from
the vault and kept in memory for ``cache_ttl_s``; a vault or store outage is ``StoreUnavailable``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.clock import Clock
from portcullis.errors import StoreUnavailable, Unauthenticated, VaultError
from portcullis.identity.principal import Principal
from portcullis.signing.webhook import parse_webhook_signature, webhook_signatures_match
from portcullis.stores.base import NonceStore
from portcullis.vault import Vault

__all__ = ["WebhookRules", "WebhookVerifier"]


@dataclass(frozen=True, slots=True)
class WebhookRules:
    """What one route demands (from its ``auth.webhook_signature`` config)."""

    route: str
    consumer: str
    secrets: tuple[str, ...]
    tolerance_s: float


class WebhookVerifier:
    """Verifies webhook signatures against vault secrets, and spends each signature once."""

    def __init__(self, vault: Vault, nonces: NonceStore, *, clock: Clock, cache_ttl_s: float) -> None:
        self._vault = vault
        self._nonces = nonces
        self._clock = clock
        self._ttl = cache_ttl_s
        self._secrets: dict[str, tuple[float, bytes]] = {}

    async def verify(self, values: Sequence[bytes], body: bytes, rules: WebhookRules) -> Principal:
        if len(values) != 1:
            raise Unauthenticated("ambiguous_signature")
        signature = parse_webhook_signature(values[0])
        now = self._clock.wall()
        if signature.timestamp > now + rules.tolerance_s:
            raise Unauthenticated("created_in_future")
        if signature.timestamp < now - rules.tolerance_s:
            raise Unauthenticated("created_too_old")
        matched = None
        for name in rules.secrets:
            if webhook_signatures_match(signature, await self._secret(name), body):
                matched = name
                break
        if matched is None:
            raise Unauthenticated("bad_signature")
        # The MACs identify the delivery; hashed so the key stays short whatever the header held.
        delivery = hashlib.sha256(b"".join(signature.macs)).hexdigest()
        ttl = signature.timestamp + rules.tolerance_s - now + 1.0
        if not await self._nonces.claim(f"webhook:{rules.route}:{delivery}", max(ttl, 1.0)):
            raise Unauthenticated("replayed_nonce")
        return Principal(consumer_id=rules.consumer, method="webhook_signature", key_id=matched)

    async def _secret(self, name: str) -> bytes:
        now = self._clock.monotonic()
        cached = self._secrets.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            value = (await self._vault.reveal(name)).encode()
        except VaultError as exc:  # a missing or undecryptable secret is our fault, never the sender's
            raise StoreUnavailable(f"vault: {type(exc).__name__}") from exc
        self._secrets[name] = (now + self._ttl, value)
        return value
