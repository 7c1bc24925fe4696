"""W3C Trace Context: read an incoming ``traceparent`` / ``tracestate`` strictly, or not at all.

Why our own parser and not OpenTelemetry's propagator: the gateway must judge these headers whether
tracing is on or off, and with tracing off nothing may import OpenTelemetry. The rules are the
spec's (https://www.w3.org/TR/trace-context/, sections 3.2 and 3.3, and the processing model in
section 4.3):

- ``traceparent`` is ``version-traceid-parentid-flags`` in lowercase hex (2-32-16-2); version
  ``ff`` is invalid; an all-zero trace id or parent id is invalid; version ``00`` has exactly those
  four fields (55 characters); a higher version may carry more after a ``-``, and is read as far as
  version ``00`` goes. More than one ``traceparent`` field is invalid (which one would be meant?).
- ``tracestate`` is read only beside a valid ``traceparent``. Its fields are joined with commas;
  empty members are skipped; each member is ``key=value`` by the spec's grammar; duplicate keys,
  more than 32 members or more than 512 characters make the whole ``tracestate`` invalid. An
  invalid ``tracestate`` is dropped and the ``traceparent`` still stands ("MUST NOT affect the
  parsing of traceparent").

What it refuses to do: repair anything. A value is either valid as written or it is not used, and
what the gateway forwards is always rebuilt from the parsed parts (version ``00``), never the bytes
the client sent. It also decides nothing about trust: ``tracing.py`` decides whose context counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_TRACESTATE_CHARS", "MAX_TRACESTATE_MEMBERS", "InboundTrace", "TraceParent", "read_inbound"]

MAX_TRACESTATE_MEMBERS = 32  # section 3.3.1.1
MAX_TRACESTATE_CHARS = 512  # section 3.3.1.5: the combined header, commas included, OWS not

# Section 3.2.2: a fixed prefix for every version; what follows version 00's four fields only in later versions.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
# Section 3.3.1.3: simple-key / multi-tenant-key, and a value of printable ASCII without ',' or '=',
# not ending in a space.
_MEMBER = re.compile(
    rb"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    rb"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_OWS = b" \t"


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid ``traceparent``: ids as lowercase hex, flags as a number."""

    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def header(self) -> bytes:
        """The version-00 form the gateway forwards."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}".encode()


@dataclass(frozen=True, slots=True)
class InboundTrace:
    """What a request brought: a valid ``traceparent`` and, if it was valid too, its ``tracestate``
    (normalised: members joined by ``,`` without the optional white space)."""

    parent: TraceParent
    tracestate: bytes | None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The two headers as the gateway would pass them on."""
        out = [(b"traceparent", self.parent.header())]
        if self.tracestate:
            out.append((b"tracestate", self.tracestate))
        return out


def parse_traceparent(value: bytes) -> TraceParent | None:
    """One ``traceparent`` value, or None when it is not valid."""
    match = _TRACEPARENT.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id.decode(), parent_id.decode(), int(flags, 16))


def parse_tracestate(values: Sequence[bytes]) -> bytes | None:
    """Every ``tracestate`` value of a request, as one normalised value, or None (none, empty or invalid)."""
    members: list[bytes] = []
    keys: set[bytes] = set()
    for value in values:
        for raw in value.split(b","):
            member = raw.strip(_OWS)
            if not member:
                continue
            if _MEMBER.fullmatch(member) is None:
                return None
            key = member.split(b"=", 1)[0]
            if key in keys:
                return None
            keys.add(key)
            members.append(member)
            if len(members) > MAX_TRACESTATE_MEMBERS:
                return None
    if not members:
        return None
    joined = b",".join(members)
    return joined if len(joined) <= MAX_TRACESTATE_CHARS else None


def read_inbound(headers: Sequence[tuple[bytes, bytes]]) -> InboundTrace | None:
    """The request's trace context, or None when it has no valid ``traceparent`` (one pass over the headers)."""
    parents: list[bytes] = []
    states: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            parents.append(value)
        elif name == b"tracestate":
            states.append(value)
    if len(parents) != 1:
        return None
    parent = parse_traceparent(parents[0])
    if parent is None:
        return None
    return InboundTrace(parent, parse_tracestate(states) if states else None)
