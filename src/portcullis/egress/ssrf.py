"""The SSRF guard: may the gateway call this URL on a caller's behalf, and at which address?

Why our own code: the checks are few, but each has a known bypass when done loosely (OWASP SSRF
Prevention Cheat Sheet; PortSwigger's URL validation bypass list; Smokescreen's design). The guard
is strict where the bypasses live:

- **Parsing**: http and https only; no userinfo (``http://public@169.254.169.254``), no backslash
  (parsers disagree on it), no control characters or spaces, no empty host. A host that looks
  numeric must be a canonical dotted quad: decimal (``2130706433``), octal (``0177.0.0.1``), hex
  (``0x7f.1``), short (``127.1``) and zero-padded forms are refused, because the resolver or the
  socket library may read them as another address than we did. IPv6 literals must be bracketed
  and carry no zone id.
- **Addresses**: every address the name resolves to must be public. Not public: anything Python's
  ``ipaddress`` does not call global (loopback, RFC 1918, link-local, CGNAT 100.64/10, unique-local
  fc00::/7, documentation, benchmarking, reserved, unspecified, broadcast), multicast, and any
  IPv6 address that embeds an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo)
  when the embedded one is not public. Cloud metadata endpoints fall in those ranges
  (169.254.169.254, fd00:ec2::254, 100.100.100.200); their well-known names are refused by name.
- **Pinning**: the verdict carries the addresses that were checked; the egress client connects to
  those and never resolves again (DNS rebinding), while TLS still verifies the original name.

The resolver is injected (``Resolver``), so tests and ``portcullis egress check --resolve`` can
answer with any address without DNS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Protocol
from urllib.parse import urlsplit

from portcullis.config.types import host_allowed
from portcullis.http.ip_embedding import embedded_ipv4 as _embedded_ipv4

__all__ = [
    "METADATA_HOSTS",
    "EgressTarget",
    "GuardPolicy",
    "Resolver",
    "SsrfGuard",
    "UnsafeUrl",
    "Verdict",
    "address_block_reason",
    "host_allowed",
    "parse_egress_url",
    "path_refusal",
]

IpAddress = IPv4Address | IPv6Address
IpNetwork = IPv4Network | IPv6Network

METADATA_HOSTS = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.internal", "kubernetes.default.svc", "kubernetes.default",
})
_SIXTOFOUR = ip_network("2002::/16")
_CGNAT = ip_network("100.64.0.0/10")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_LOOKING = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"  # decimal, no leading zero (that reads as octal)
_CANONICAL_QUAD = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class Resolver(Protocol):
    """Name -> every address it resolves to (A and AAAA). Raises ``OSError`` when it cannot."""

    async def resolve(self, host: str) -> Sequence[IpAddress]: ...


@dataclass(frozen=True, slots=True)
class EgressTarget:
    """A parsed, canonical egress URL."""

    scheme: str
    host: str  # lower-case name without a trailing dot, or the canonical text of an IP literal
    port: int
    path_and_query: str
    literal: IpAddress | None  # set when the URL named an address instead of a host name


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Verdict:
    """``allowed`` with the addresses to connect to (pinned), or refused with a reason."""

    allowed: bool
    reason: str
    target: EgressTarget | None = None
    addresses: tuple[IpAddress, ...] = ()


class UnsafeUrl(ValueError):
    """The URL is refused before any lookup; ``reason`` says why (for the audit and the CLI)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """What a route (or the gateway) permits beyond public addresses.

    ``allowed_hosts``: exact names or ``*.suffix`` patterns; empty means any public host.
    ``global_hosts``: the gateway-wide list, checked as well (a route cannot widen it).
    ``allowed_networks``: explicit exceptions (an on-premises API); checked before the public rule.
    ``allow_http``: plain http is refused unless a route says so.
    """

    allowed_hosts: tuple[str, ...] = ()
    global_hosts: tuple[str, ...] = ()  # the gateway-wide allow-list: when set, a host must match it too
    allowed_networks: tuple[IpNetwork, ...] = ()
    allow_http: bool = False
    allowed_ports: frozenset[int] = field(default_factory=lambda: frozenset({80, 443}))


def parse_egress_url(url: str) -> EgressTarget:
    """Parse strictly, or raise ``UnsafeUrl``. Nothing is resolved here."""
    if _FORBIDDEN_CHARS.search(url):
        raise UnsafeUrl("forbidden_character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("malformed_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("scheme_not_allowed")
    if "@" in parts.netloc:
        raise UnsafeUrl("userinfo_not_allowed")
    raw_host = parts.hostname
    if not raw_host:
        raise UnsafeUrl("missing_host")
    if parts.fragment:
        raise UnsafeUrl("fragment_not_allowed")
    literal: IpAddress | None = None
    if parts.netloc.startswith("["):
        if "%" in raw_host:
            raise UnsafeUrl("ipv6_zone_id")
        try:
            literal = IPv6Address(raw_host)
        except ValueError:
            raise UnsafeUrl("malformed_ipv6") from None
        host = str(literal)
    else:
        host = raw_host.lower()
        if host.endswith("."):  # the absolute form of a name is the same name
            host = host[:-1]
        if not host:
            raise UnsafeUrl("malformed_host")
        if _NUMERIC_LOOKING.match(host):
            if not _CANONICAL_QUAD.match(host):
                raise UnsafeUrl("non_canonical_ip")
            literal = IPv4Address(host)
        elif ":" in host:
            raise UnsafeUrl("unbracketed_ipv6")
        else:
            labels = host.split(".")
            if not all(_LABEL.match(label) for label in labels):
                try:  # internationalised names: checked in their ASCII (punycode) form
                    ascii_host = host.encode("idna").decode("ascii")
                except UnicodeError:
                    raise UnsafeUrl("malformed_host") from None
                if not all(_LABEL.match(label) for label in ascii_host.split(".")):
                    raise UnsafeUrl("malformed_host")
                if _NUMERIC_LOOKING.match(ascii_host):
                    # IDNA folds look-alike digits ("①②⑦.⓪.⓪.①") into an address: never a name.
                    raise UnsafeUrl("non_canonical_ip")
                host = ascii_host
    path = parts.path or "/"
    return EgressTarget(
        scheme=scheme, host=host, port=port if port is not None else (443 if scheme == "https" else 80),
        path_and_query=path + (f"?{parts.query}" if parts.query else ""), literal=literal,
    )


def path_refusal(path_and_query: str) -> str | None:
    """Why the path and query of a URL (starting with ``/``) make it unsafe, or ``None``: what
    ``parse_egress_url`` refuses in that part of a URL."""
    if _FORBIDDEN_CHARS.search(path_and_query):
        return "forbidden_character"
    if "#" in path_and_query and path_and_query.partition("#")[2]:  # as urlsplit: an empty one is none
        return "fragment_not_allowed"
    return None


def address_block_reason(address: IpAddress) -> str | None:
    """Why ``address`` is not a public destination, or ``None`` when it is."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_block_reason(embedded)
            if inner is not None:
                return f"embedded_{inner}"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"  # includes 169.254.169.254, the metadata service
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if isinstance(address, IPv4Address) and address in _CGNAT:
        return "shared_address_space"  # 100.64/10, includes 100.100.100.200 (Alibaba metadata)
    if address.is_private:
        return "private"  # RFC 1918, ULA (fd00:ec2::254), documentation, benchmarking, reserved
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not_global"
    return None


class SsrfGuard:
    """Checks one URL under a ``GuardPolicy``; the resolver is the only I/O."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    async def check(self, url: str, policy: GuardPolicy) -> Verdict:
        try:
            target = parse_egress_url(url)
        except UnsafeUrl as exc:
            return Verdict(False, exc.reason)
        return await self.check_target(target, policy)

    async def check_on(self, origin: EgressTarget | UnsafeUrl, path_and_query: str, policy: GuardPolicy) -> Verdict:
        """``check`` of ``base + path_and_query`` where ``origin`` is ``base`` parsed once (or why it
        could not be): a route's calls all go to its own base URL, so only the path, which must
        start with ``/``, is looked at per call. The same verdict as ``check`` of the whole URL
        (``tests/property/test_guard_route_origin.py``)."""
        if isinstance(origin, UnsafeUrl):
            return Verdict(False, origin.reason)
        refused = path_refusal(path_and_query)
        if refused is not None:
            return Verdict(False, refused)
        return await self.check_target(origin, policy)

    async def check_target(self, target: EgressTarget, policy: GuardPolicy) -> Verdict:
        """The scheme, port, name and address rules for an already parsed target (one lookup)."""
        if target.scheme == "http" and not policy.allow_http:
            return Verdict(False, "https_required", target)
        if target.port not in policy.allowed_ports:
            return Verdict(False, "port_not_allowed", target)
        if target.literal is None and target.host in METADATA_HOSTS:
            return Verdict(False, "metadata_host", target)
        if policy.allowed_hosts and not host_allowed(target.host, policy.allowed_hosts):
            return Verdict(False, "host_not_allowed", target)
        if policy.global_hosts and not host_allowed(target.host, policy.global_hosts):
            return Verdict(False, "host_not_allowed_globally", target)
        if target.literal is not None:
            addresses: tuple[IpAddress, ...] = (target.literal,)
        else:
            try:
                addresses = tuple(await self._resolver.resolve(target.host))
            except OSError:
                return Verdict(False, "resolution_failed", target)
            if not addresses:
                return Verdict(False, "resolution_failed", target)
        for address in addresses:
            if any(address in net for net in policy.allowed_networks if net.version == address.version):
                continue
            reason = address_block_reason(address)
            if reason is not None:
                # ANY bad answer refuses the whole name: a mixed answer is how rebinding starts.
                return Verdict(False, f"address_{reason}", target, addresses)
        return Verdict(True, "allowed", target, addresses)
