"""Claim checks shared by every bearer-token source: a verified JWT, an introspection answer, an
asserted identity from a trusted proxy.

Why one module: a token's claims mean the same whichever way they were proven, so ``exp``/``nbf``/
``iat`` against the injected clock, the shape of ``scope`` and roles, and which claim names the
consumer are read once, here. The JWT verifier and the introspection client both call these; a
difference between them would be a way to pass one check by choosing the other path.

What it refuses: non-numeric or absurd dates (``true`` is not a date), scopes or roles that are not
a string or a list of strings, and claim values that could smuggle control characters into the
upstream identity headers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from portcullis.errors import Unauthenticated
from portcullis.identity.principal import Principal

__all__ = ["ClaimNames", "audience_matches", "check_times", "principal_from_claims", "string_set"]

# Claims that become upstream header values (X-Consumer-Id, -Scopes, -Roles): no control characters,
# so a token cannot smuggle a CR/LF into the forwarded request, and a bounded length.
_HEADER_SAFE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}\Z")
_LATEST_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z; larger values are nonsense, not "never"


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Which claims name the consumer, its scopes and its roles (per issuer)."""

    consumer: str = "sub"
    scopes: str = "scope"
    roles: str = "roles"


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated("malformed_token")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unauthenticated("malformed_token")
    if abs(value) > _LATEST_NUMERIC_DATE:
        raise Unauthenticated("malformed_token")
    return float(value)


def check_times(claims: Mapping[str, Any], now: float, leeway_s: float) -> float | None:
    """exp / nbf / iat against the injected clock, with PyJWT's comparison semantics; returns ``exp``."""
    exp, nbf, iat = (_numeric_date(claims, n) for n in ("exp", "nbf", "iat"))
    if exp is not None and exp <= now - leeway_s:
        raise Unauthenticated("expired")
    if nbf is not None and nbf > now + leeway_s:
        raise Unauthenticated("not_yet_valid")
    if iat is not None and iat > now + leeway_s:
        raise Unauthenticated("issued_in_future")
    return exp


def audience_matches(aud: Any, accepted: tuple[str, ...]) -> bool:
    """RFC 7519 section 4.1.3: ``aud`` is a string or a list of strings; one must be accepted."""
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return any(a in accepted for a in aud)
    return False


def string_set(value: Any) -> frozenset[str]:
    """A space-separated string or a list of strings (RFC 8693 section 4.2 ``scope``, Azure ``scp``)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise Unauthenticated("malformed_token")
    if not all(_HEADER_SAFE.match(v) for v in items):
        raise Unauthenticated("malformed_token")
    return frozenset(items)


def principal_from_claims(claims: dict[str, Any], names: ClaimNames, *, method: str, issuer: str) -> Principal:
    """The ``Principal`` verified ``claims`` describe. ``issuer`` is the configured issuer's *name*."""
    consumer = claims.get(names.consumer)
    if not isinstance(consumer, str) or not consumer:
        raise Unauthenticated("missing_claim")
    if not _HEADER_SAFE.match(consumer):
        raise Unauthenticated("malformed_token")
    scopes = claims.get(names.scopes)
    if scopes is None:
        scopes = claims.get("scp")
    return Principal(
        consumer_id=consumer, method=method, scopes=string_set(scopes), roles=string_set(claims.get(names.roles)),
        claims=MappingProxyType(claims), issuer=issuer,
    )
