"""The authenticated caller, as every later step sees it.

Why a separate value type: authorization, rate limiting, audit and the identity headers sent
upstream must all read the same facts, whichever credential produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``method`` is the credential kind: ``api_key``, ``jwt``, ``signature``, ``mtls`` (a client
    certificate; ``api_key+mtls`` / ``jwt+mtls`` when a route requires both)."""

    consumer_id: str
    method: str
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    issuer: str | None = None
    # API keys only: answered from a record kept past its cache TTL because the key store was
    # unreachable (stale-if-error). For the audit and metrics; never sent upstream.
    served_stale: bool = False
