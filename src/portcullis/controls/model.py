"""Incident controls as values: blocks and emergency limits, what they cover, and their checks.

Why one model for both: an operator reacting to an attack (seed 000 section 6.3, "suspected DDoS")
blocks the attacking workflow or address and cuts the rate limits, and both must be persisted the
same way, reach every instance within a second, expire on their own and leave the same trail. One
``ControlRecord`` row (``stores/base.py``) holds either; this module gives it types and refuses what
cannot be enforced (an address that is not one, a factor outside ``(0, 1]``).

Subjects are normalised here, once, so that the enforcement points compare exact values: an
address block is stored as its network in canonical text (``::ffff:192.0.2.0/120`` becomes
``192.0.2.0/24``; host bits are cleared), other subjects as given (ids are case-sensitive).
What it refuses to do: hold a reason that could reach a client (refusals never carry it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from portcullis.errors import InvalidControl
from portcullis.limiting.emergency import MIN_FACTOR, ramp
from portcullis.stores.base import ControlRecord

__all__ = [
    "BLOCK", "EMERGENCY", "MAX_REASON_CHARS", "MAX_SUBJECT_CHARS", "Block", "BlockKind", "EmergencyLimit",
    "EmergencyScope", "normalise_subject",
]

BLOCK = "block"
EMERGENCY = "emergency"
MAX_SUBJECT_CHARS = 256
MAX_REASON_CHARS = 1000


class BlockKind(StrEnum):
    """What a block covers, and so where it is enforced."""

    ADDRESS = "address"  # a client address or CIDR: the shield, before authentication
    CONSUMER = "consumer"  # right after authentication
    KEY = "key"  # an API key id: right after authentication
    WORKFLOW = "workflow"  # egress: both doors (X-Workflow-Id, the transport's context)
    USER = "user"  # egress: the authenticated caller the call is made for
    EXECUTION = "execution"  # egress: one run of a workflow


class EmergencyScope(StrEnum):
    """Which rate limits an emergency scales."""

    GATEWAY = "gateway"  # every limit of every request (subject "")
    ROUTE = "route"  # every limit a request on this route meets (an ingress or egress route's name)
    CONSUMER = "consumer"  # every limit a request by this consumer meets


def normalise_subject(kind: BlockKind, subject: str) -> str:
    """The subject as it is stored and compared; raises ``InvalidControl``."""
    if kind is BlockKind.ADDRESS:
        return str(_network(subject))
    _check_text("subject", subject, MAX_SUBJECT_CHARS)
    return subject


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if "%" in text:
        raise InvalidControl("subject: an address or CIDR without a zone id")
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidControl("subject: expected an IPv4 or IPv6 address or CIDR") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:a.b.c.d/120 is a.b.c.d/24: one spelling, matched either way
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


def _check_text(field: str, value: str, limit: int, *, empty: bool = False) -> None:
    if (not value and not empty) or len(value) > limit or not value.isprintable():
        raise InvalidControl(f"{field}: 1 to {limit} printable characters")


@dataclass(frozen=True, slots=True)
class Block:
    """Refuse every request or call of one subject. ``expires_at`` (wall seconds): None until lifted."""

    block_id: str
    kind: BlockKind
    subject: str
    reason: str
    created_at: float
    created_by: str
    expires_at: float | None = None
    lifted_at: float | None = None
    lifted_by: str | None = None

    def applies(self, now: float) -> bool:
        """In force at wall time ``now`` (lifted blocks never reach a snapshot)."""
        return self.lifted_at is None and (self.expires_at is None or now < self.expires_at)

    @classmethod
    def of(cls, record: ControlRecord) -> Block:
        return cls(record.control_id, BlockKind(record.subject_kind), record.subject, record.reason, record.created_at,
                   record.created_by, record.expires_at, record.lifted_at, record.lifted_by)

    def record(self) -> ControlRecord:
        return ControlRecord(
            control_id=self.block_id, kind=BLOCK, subject_kind=self.kind.value, subject=self.subject,
            reason=self.reason, created_at=self.created_at, created_by=self.created_by, expires_at=self.expires_at,
            lifted_at=self.lifted_at, lifted_by=self.lifted_by,
        )


@dataclass(frozen=True, slots=True)
class EmergencyLimit:
    """Scale the rate limits of ``scope``/``subject`` by ``factor`` until ``until``, then ramp back to
    1 over ``restore_s`` seconds (wall times)."""

    emergency_id: str
    scope: EmergencyScope
    subject: str
    factor: float
    until: float
    restore_s: float
    reason: str
    created_at: float
    created_by: str
    lifted_at: float | None = None
    lifted_by: str | None = None

    def __post_init__(self) -> None:
        if not MIN_FACTOR <= self.factor <= 1.0:
            raise InvalidControl(f"factor: between {MIN_FACTOR} and 1")
        if self.restore_s < 0:
            raise InvalidControl("restore_s: not negative")
        if (self.scope is EmergencyScope.GATEWAY) != (self.subject == ""):
            raise InvalidControl("subject: empty for the whole gateway, a name for a route or consumer")

    def factor_at(self, now: float) -> float:
        """The factor in force at wall time ``now`` (1.0 once restored)."""
        return ramp(self.factor, self.until, self.restore_s, now)

    @classmethod
    def of(cls, record: ControlRecord) -> EmergencyLimit:
        return cls(record.control_id, EmergencyScope(record.subject_kind), record.subject, float(record.factor or 1.0),
                   float(record.expires_at or record.created_at), record.restore_s, record.reason, record.created_at,
                   record.created_by, record.lifted_at, record.lifted_by)

    def record(self) -> ControlRecord:
        return ControlRecord(
            control_id=self.emergency_id, kind=EMERGENCY, subject_kind=self.scope.value, subject=self.subject,
            reason=self.reason, created_at=self.created_at, created_by=self.created_by, expires_at=self.until,
            factor=self.factor, restore_s=self.restore_s, lifted_at=self.lifted_at, lifted_by=self.lifted_by,
        )
