"""Proxy request targets: ``CONNECT`` authorities and absolute-form URLs, parsed strictly.

Why strict: a proxy is where authority confusion lives. ``CONNECT evil@good:443``,
``GET http://good@evil/``, ``GET http://good\\@evil/``, a ``Host`` that names another server than
the target, an octal or decimal address (``0177.1``, ``2130706433``): different parsers read each
of these as different hosts (PortSwigger's URL validation bypass list; Orange Tsai, "A New Era of
SSRF", 2017). The URL rules are the SSRF guard's own (``egress.ssrf.parse_egress_url``), so the
proxy cannot accept a URL the guard would read otherwise.

- ``CONNECT``: the target is exactly ``host:port`` (RFC 9110 section 9.3.6): a name, a canonical
  dotted quad or a bracketed IPv6 literal, and a port 1-65535; no user info, path or anything else.
- absolute-form: ``http://`` or ``https://`` URL (RFC 9112 section 3.2.2); the ``Host`` field, when
  sent, must name the same authority (the RFC lets a proxy ignore it; refusing a mismatch leaves
  no room for a later hop to read the other one).
- inside a tunnel the door reads: origin-form only, with ``Host`` naming the tunnel's host and port.

What it refuses to do: decode, repair or guess. Everything else is ``request.target_invalid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portcullis.egress.ssrf import EgressTarget, UnsafeUrl, parse_egress_url
from portcullis.errors import ClientError, ErrorCode

__all__ = ["Authority", "TargetRefused", "absolute_target", "connect_target", "origin_target"]

_AUTHORITY = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")
_ORIGIN = re.compile(rb"^/[\x21-\x7e]*$")


class TargetRefused(ClientError):
    """The target cannot be read one way only."""

    code = ErrorCode.REQUEST_TARGET_INVALID


@dataclass(frozen=True, slots=True)
class Authority:
    """A checked ``host:port``; ``host`` canonical (lower-case name, or an address's text)."""

    host: str
    port: int

    @property
    def shown(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def connect_target(target: bytes) -> Authority:
    match = _AUTHORITY.match(target)
    if match is None:
        raise TargetRefused("connect_target_malformed")
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise TargetRefused("connect_port_invalid")
    parsed = _parse(f"https://{match.group(1).decode('ascii')}:{port}/")
    return Authority(parsed.host, port)


def absolute_target(target: bytes, host_header: bytes | None) -> EgressTarget:
    if not (target[:7].lower() == b"http://" or target[:8].lower() == b"https://"):
        raise TargetRefused("not_absolute_form")
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise TargetRefused("target_not_ascii") from None
    parsed = _parse(text)
    if host_header is not None and not _same_authority(host_header, parsed):
        raise TargetRefused("host_mismatch")
    return parsed


def origin_target(target: bytes, host_header: bytes | None, tunnel: Authority, scheme: str = "https") -> str:
    """The path and query of a request read inside a tunnel to ``tunnel`` (``scheme``: what the
    tunnel carries, for the ``Host`` field's default port)."""
    if not _ORIGIN.match(target) or b"\\" in target or b"#" in target:
        raise TargetRefused("not_origin_form")
    if host_header is None:
        raise TargetRefused("missing_host")
    try:
        parsed = parse_egress_url(f"{scheme}://" + host_header.decode("ascii") + "/")
    except (UnsafeUrl, UnicodeDecodeError):
        raise TargetRefused("host_invalid") from None
    if (parsed.host, parsed.port) != (tunnel.host, tunnel.port) or parsed.path_and_query != "/":
        raise TargetRefused("host_not_tunnel")  # a request inside the tunnel for another origin
    return target.decode("ascii")


def _parse(url: str) -> EgressTarget:
    try:
        return parse_egress_url(url)
    except UnsafeUrl as exc:
        raise TargetRefused(f"target_{exc.reason}") from None


def _same_authority(host_header: bytes, target: EgressTarget) -> bool:
    try:
        parsed = parse_egress_url(f"{target.scheme}://{host_header.decode('ascii')}/")
    except (UnsafeUrl, UnicodeDecodeError):
        return False
    return (parsed.host, parsed.port) == (target.host, target.port) and parsed.path_and_query == "/"
